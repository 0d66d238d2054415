"""Reading and writing files: rasters window by window, atomic outputs, run locks and JSON."""
