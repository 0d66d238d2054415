"""Reading output rasters in tests as the products computed them: packed layers (integers with scale/offset)
unpacked to float32 with ``FLOAT_NODATA``; other layers as stored."""

import numpy as np
from osgeo import gdal

from mtl_core.io.raster import band_values
from mtl_core.spec import FLOAT_NODATA


def unpack(band: gdal.Band, raw: np.ndarray) -> np.ndarray:
    if ((band.GetScale() or 1.0), (band.GetOffset() or 0.0)) == (1.0, 0.0):
        return raw
    values = band_values(band, raw).astype(np.float32)
    values[np.isnan(values)] = FLOAT_NODATA
    return values


def read(path, band: int | None = None) -> np.ndarray:
    """Like ``gdal.Open(path).ReadAsArray()`` (or one band's), with packed bands unpacked."""
    ds = gdal.Open(str(path))
    arrays = [unpack(ds.GetRasterBand(i), ds.GetRasterBand(i).ReadAsArray())
              for i in ([band] if band else range(1, ds.RasterCount + 1))]
    return arrays[0] if len(arrays) == 1 else np.stack(arrays)
