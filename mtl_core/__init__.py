"""MTL Explain core: multitask remote-sensing models with auxiliary reconstruction tasks.

This package never imports Qt or QGIS; the QGIS plugin in ``plugin/`` is a thin layer over it.
"""

__version__ = "0.1.0"
