"""Reading output rasters in tests as the products computed them: packed layers (integers with scale/offset)
unpacked to float32 with ``FLOAT_NODATA``; other layers as stored."""

import numpy as np
from osgeo import gdal

from mtl_core.spec import FLOAT_NODATA


def unpack(band: gdal.Band, raw: np.ndarray) -> np.ndarray:
    scale, offset = band.GetScale() or 1.0, band.GetOffset() or 0.0
    if (scale, offset) == (1.0, 0.0):
        return raw
    values = (raw * scale + offset).astype(np.float32)
    values[raw == band.GetNoDataValue()] = FLOAT_NODATA
    return values


def read(path, band: int | None = None) -> np.ndarray:
    """Like ``gdal.Open(path).ReadAsArray()`` (or one band's), with packed bands unpacked."""
    ds = gdal.Open(str(path))
    arrays = [unpack(ds.GetRasterBand(i), ds.GetRasterBand(i).ReadAsArray())
              for i in ([band] if band else range(1, ds.RasterCount + 1))]
    return arrays[0] if len(arrays) == 1 else np.stack(arrays)
