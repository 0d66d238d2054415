"""Exceptions raised by mtl_core, each naming what was wrong and how to fix it."""


class MtlError(Exception):
    """Base class of every error mtl_core raises on purpose."""


class ConfigError(MtlError, ValueError):
    """A dataset or training configuration is invalid."""


class RasterError(MtlError, ValueError):
    """A raster cannot be used as given (CRS, grid, band count, nodata, extent)."""


class RasterNotFoundError(MtlError, FileNotFoundError):
    """A raster named in a configuration or on the command line does not exist."""


class OutputError(MtlError, OSError):
    """An output cannot be written (missing or read-only folder, disk full, an existing file not to replace)."""


class ModelFileError(MtlError, ValueError):
    """A model file is not ours, is damaged, or was written by a newer format version."""


class CancelledError(MtlError):
    """A long-running job was cancelled by the user."""
