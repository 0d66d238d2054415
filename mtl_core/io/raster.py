"""GDAL helpers: opening rasters, checking and aligning grids, reading windows, writing outputs safely."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from osgeo import gdal, osr

from ..errors import RasterError, RasterNotFoundError

gdal.UseExceptions()
osr.UseExceptions()
log = logging.getLogger(__name__)

Window = tuple[int, int, int, int]  # (col_off, row_off, width, height)


@dataclass(frozen=True)
class Grid:
    """A raster grid: CRS (WKT), geotransform and size."""

    wkt: str
    transform: tuple[float, ...]
    width: int
    height: int

    @classmethod
    def of(cls, ds: gdal.Dataset) -> Grid:
        return cls(ds.GetProjection(), tuple(ds.GetGeoTransform()), ds.RasterXSize, ds.RasterYSize)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of a north-up grid."""
        x0, dx, _, y0, _, dy = self.transform
        xs = (x0, x0 + dx * self.width)
        ys = (y0, y0 + dy * self.height)
        return min(xs), min(ys), max(xs), max(ys)

    def pixel_size_m(self) -> float | None:
        """The pixel width in metres, for a projected CRS (None for degrees or no CRS)."""
        srs = self.srs() if self.wkt else None
        if srs is None or not srs.IsProjected():
            return None
        return abs(self.transform[1]) * srs.GetLinearUnits()

    def srs(self) -> osr.SpatialReference:
        srs = osr.SpatialReference()
        srs.ImportFromWkt(self.wkt)
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        return srs

    def same_as(self, other: Grid, tol: float = 1e-6) -> bool:
        if (self.width, self.height) != (other.width, other.height):
            return False
        scale = max(abs(self.transform[1]), abs(self.transform[5]))
        if any(abs(a - b) > tol * max(scale, 1.0) for a, b in zip(self.transform, other.transform)):
            return False
        return bool(self.srs().IsSame(other.srs()))


def open_raster(path: str | os.PathLike, what: str = "raster") -> gdal.Dataset:
    """Open a raster read-only with a clear error when it is missing or unreadable."""
    path = Path(path)
    if not path.exists():
        raise RasterNotFoundError(f"{what} {str(path)!r} does not exist; check the path")
    try:
        ds = gdal.Open(str(path), gdal.GA_ReadOnly)
    except RuntimeError as exc:
        raise RasterError(f"{what} {str(path)!r} cannot be read by GDAL: {exc}") from exc
    if ds is None or ds.RasterCount == 0:
        raise RasterError(f"{what} {str(path)!r} is not a raster GDAL can read")
    return ds


def bound_gdal_cache(mib: int = 64) -> None:
    """Cap GDAL's block cache (default 5 % of RAM) unless GDAL_CACHEMAX is set.

    A streaming run needs only a few rows of blocks in the cache; a larger cache just fills with
    blocks already written or read, so memory would grow with the raster. Command-line entry points
    call this; a host application such as QGIS keeps its own setting.
    """
    if gdal.GetConfigOption("GDAL_CACHEMAX") is None:
        gdal.SetCacheMax(mib * 1024 * 1024)


def share_malloc_arena() -> None:
    """Let every thread allocate from glibc's main arena (``M_ARENA_MAX`` = 1); no-op elsewhere.

    By default glibc gives each thread that allocates its own arena; the engine's reader, writer and
    model threads pass large arrays between them, and memory freed in one arena is not reused by
    the others, so peak memory varied from run to run by up to 80 MiB (measured, 8192² raster).
    Command-line entry points call this before any thread starts; a host application such as QGIS
    keeps its own setting. Allocation speed is unchanged here: the engine allocates few, large arrays.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-8, 1)  # M_ARENA_MAX
    except (OSError, AttributeError):  # not glibc
        pass


def check_georeferenced(ds: gdal.Dataset, what: str) -> None:
    """Refuse rasters without a CRS or geotransform, or that are rotated."""
    name = ds.GetDescription()
    if not ds.GetProjection():
        raise RasterError(
            f"{what} {name!r} has no coordinate reference system; assign one "
            "(QGIS: Raster > Projections > Assign Projection, or gdal_edit.py -a_srs EPSG:XXXX)"
        )
    gt = ds.GetGeoTransform(can_return_null=True)
    if gt is None:
        raise RasterError(f"{what} {name!r} has no geotransform; georeference it first")
    if gt[2] != 0 or gt[4] != 0:
        raise RasterError(f"{what} {name!r} is rotated; warp it to a north-up grid first (gdalwarp)")


def check_bands(ds: gdal.Dataset, bands: list[int], what: str) -> None:
    """Refuse band indices the raster does not have."""
    bad = [b for b in bands if not 1 <= b <= ds.RasterCount]
    if bad:
        raise RasterError(
            f"{what} {ds.GetDescription()!r} has {ds.RasterCount} band(s) but band(s) {bad} were asked for; "
            f"band numbers start at 1"
        )


def _transformed_bounds(grid: Grid, to: Grid) -> tuple[float, float, float, float]:
    """Bounds of ``grid`` expressed in the CRS of ``to``."""
    xmin, ymin, xmax, ymax = grid.bounds
    if grid.srs().IsSame(to.srs()):
        return xmin, ymin, xmax, ymax
    ct = osr.CoordinateTransformation(grid.srs(), to.srs())
    return ct.TransformBounds(xmin, ymin, xmax, ymax, 21)


def align_to(ds: gdal.Dataset, grid: Grid, what: str, categorical: bool) -> gdal.Dataset:
    """Return ``ds`` unchanged if it lies on ``grid``; otherwise a warped virtual raster on ``grid``.

    Continuous data is resampled bilinearly, categorical data by nearest neighbour. The warp is a
    VRT, so pixels are warped window by window as they are read.
    """
    check_georeferenced(ds, what)
    own = Grid.of(ds)
    if own.same_as(grid):
        return ds
    xmin, ymin, xmax, ymax = _transformed_bounds(own, grid)
    gx0, gy0, gx1, gy1 = grid.bounds
    if xmin >= gx1 or xmax <= gx0 or ymin >= gy1 or ymax <= gy0:
        raise RasterError(
            f"{what} {ds.GetDescription()!r} does not overlap the input raster: its extent "
            f"({xmin:.2f}, {ymin:.2f}, {xmax:.2f}, {ymax:.2f}) lies outside ({gx0:.2f}, {gy0:.2f}, {gx1:.2f}, "
            f"{gy1:.2f}) in the input's CRS; check that both rasters cover the same area"
        )
    method = "near" if categorical else "bilinear"
    log.warning(
        "%s %r is not on the input grid; aligning it with gdal.Warp (%s resampling)",
        what, ds.GetDescription(), method,
    )
    covered = ((min(xmax, gx1) - max(xmin, gx0)) * (min(ymax, gy1) - max(ymin, gy0))) / ((gx1 - gx0) * (gy1 - gy0))
    if covered < 0.99:
        log.warning("%s %r covers only %.0f%% of the input raster: pixels outside it are nodata, left out of every "
                    "loss and statistic that needs it", what, ds.GetDescription(), 100 * covered)
    nodata = ds.GetRasterBand(1).GetNoDataValue()
    return gdal.Warp(
        "",
        ds,
        format="VRT",
        dstSRS=grid.wkt,
        outputBounds=grid.bounds,
        width=grid.width,
        height=grid.height,
        resampleAlg=method,
        srcNodata=nodata,
        dstNodata=nodata,
    )


def read_window(ds: gdal.Dataset, bands: list[int], window: Window) -> tuple[np.ndarray, np.ndarray]:
    """Read bands of a window as float32 with a validity mask.

    Returns:
        ``(data, valid)``: data (C, h, w) float32, valid (h, w) bool — False where any band is
        nodata or not finite.

    Raises:
        RasterError: GDAL cannot read the pixels (a damaged or truncated file, a VRT whose source is missing).
    """
    x, y, w, h = window
    data = np.empty((len(bands), h, w), dtype=np.float32)
    valid = np.ones((h, w), dtype=bool)
    for i, b in enumerate(bands):
        band = ds.GetRasterBand(b)
        try:
            arr = band.ReadAsArray(x, y, w, h)
        except RuntimeError as exc:
            raise RasterError(
                f"cannot read band {b} of {ds.GetDescription()!r} at pixels {x}..{x + w}, {y}..{y + h} "
                f"({str(exc).strip()[:200]}): the file is damaged or truncated, or a file it refers to is missing "
                "(a VRT's source); check it with gdalinfo -checksum and copy or rebuild it") from exc
        if arr is None:  # GDAL without exceptions
            raise RasterError(f"cannot read band {b} of {ds.GetDescription()!r}: {gdal.GetLastErrorMsg()}; "
                              "check the file with gdalinfo -checksum")
        data[i] = arr
        nodata = band.GetNoDataValue()
        if nodata is not None:
            valid &= arr != nodata
        valid &= np.isfinite(data[i])
    return data, valid


def extent_window(grid: Grid, extent: list[float] | tuple[float, ...]) -> Window | None:
    """The pixels of ``grid`` that an extent (xmin, ymin, xmax, ymax, in the grid's CRS) touches, as a window;
    None when it misses the grid."""
    x0, dx, _, y0, _, dy = grid.transform
    xmin, ymin, xmax, ymax = extent
    cols, rows = sorted(((xmin - x0) / dx, (xmax - x0) / dx)), sorted(((ymax - y0) / dy, (ymin - y0) / dy))
    c0, c1 = max(0, int(np.floor(cols[0]))), min(grid.width, int(np.ceil(cols[1])))
    r0, r1 = max(0, int(np.floor(rows[0]))), min(grid.height, int(np.ceil(rows[1])))
    return (c0, r0, c1 - c0, r1 - r0) if c1 > c0 and r1 > r0 else None


def inside(window: Window, area: Window) -> np.ndarray:
    """(h, w) bool: which pixels of ``window`` lie inside the window ``area``."""
    x, y, w, h = window
    ax, ay, aw, ah = area
    cols, rows = np.arange(x, x + w), np.arange(y, y + h)
    return ((rows >= ay) & (rows < ay + ah))[:, None] & ((cols >= ax) & (cols < ax + aw))[None, :]


def overview_factors(width: int, height: int) -> list[int]:
    """The overview levels an output of ``width`` x ``height`` px gets (2x, 4x ... while the smaller side keeps
    at least 64 px); chunk boundaries must be multiples of the largest so overview blocks never straddle two."""
    return [f for f in (2, 4, 8, 16, 32, 64) if min(width, height) // f >= 64]


def padded_size(n: int, divisor: int) -> int:
    """Smallest multiple of ``divisor`` that is at least ``n``."""
    return -(-n // divisor) * divisor


def windows(width: int, height: int, size: int) -> Iterator[Window]:
    """Non-overlapping windows of at most ``size`` pixels covering a raster, row by row."""
    for y in range(0, height, size):
        for x in range(0, width, size):
            yield x, y, min(size, width - x), min(size, height - y)


def band_values(band: gdal.Band, raw: np.ndarray) -> np.ndarray:
    """Values read from ``band`` as GDAL and QGIS show them: its scale and offset applied (packed output layers),
    its nodata as NaN; float64."""
    arr = raw.astype(np.float64) * (band.GetScale() or 1.0) + (band.GetOffset() or 0.0)
    if band.GetNoDataValue() is not None:
        arr[raw == band.GetNoDataValue()] = np.nan
    return arr


def read_values(path: str | os.PathLike, band: int | None = None) -> np.ndarray:
    """A raster's values (:func:`band_values` of each band); (bands, h, w), or (h, w) for one ``band`` (1-based)."""
    ds = open_raster(path, "raster")
    out = [band_values(ds.GetRasterBand(i), ds.GetRasterBand(i).ReadAsArray())
           for i in ([band] if band else range(1, ds.RasterCount + 1))]
    return out[0] if band else np.stack(out)


def create_geotiff(
    path: str | os.PathLike, grid: Grid, bands: int, dtype: int, nodata: float | None, predictor: bool = False,
    compress: bool = True,
) -> gdal.Dataset:
    """Create a tiled, compressed GeoTIFF on ``grid`` (the caller writes windows into it).

    ZSTD at level 1 compresses float rasters about four times faster than DEFLATE at a similar
    ratio, which matters when writing keeps pace with inference; GDAL (and so QGIS) reads it.
    Bands are stored separately (``INTERLEAVE=BAND``): they are written one after the other, and
    pixel-interleaved blocks would have to stay in GDAL's cache until their last band arrives.
    ``predictor``: horizontal differencing before compression (``PREDICTOR=2``), for smooth integer data
    (packed continuous layers); class maps compress better without it. ``compress=False``: no compression, for
    scratch files read back once (a distributed run's shards).
    """
    driver = gdal.GetDriverByName("GTiff")
    options = ["TILED=YES", "BIGTIFF=IF_SAFER", "INTERLEAVE=BAND"]
    options += ["COMPRESS=ZSTD", "ZSTD_LEVEL=1"] if compress else []
    ds = driver.Create(str(path), grid.width, grid.height, bands, dtype,
                       options=options + (["PREDICTOR=2"] if predictor else []))
    ds.SetProjection(grid.wkt)
    ds.SetGeoTransform(grid.transform)
    if nodata is not None:
        for i in range(1, bands + 1):
            ds.GetRasterBand(i).SetNoDataValue(nodata)
    return ds


def set_classes(band: gdal.Band, classes: list[tuple[int, str, str]], nodata_name: str = "no data") -> None:
    """Give a class band its palette and category names: ``(value, name, '#rrggbb')`` per class."""
    table = gdal.ColorTable()
    names = [""] * (max(v for v, _, _ in classes) + 1)
    names[0] = nodata_name  # an empty first name would hide every name from GDAL's Python bindings
    for value, name, color in classes:
        table.SetColorEntry(value, tuple(int(color[k:k + 2], 16) for k in (1, 3, 5)) + (255,))
        names[value] = name
    band.SetRasterColorTable(table)
    band.SetRasterColorInterpretation(gdal.GCI_PaletteIndex)
    band.SetCategoryNames(names)
