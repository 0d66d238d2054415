"""Streaming tiled inference: (model file, raster, extent) to georeferenced output rasters.

The raster is read window by window with GDAL, in column chunks (2048 px wide by default) and, within
a chunk, in rows of overlapping tiles. Overlapping predictions (class probabilities, reconstructions,
regression values, sensitivities) are blended with a linear ramp over the overlap, so no seam shows.
Each chunk is tiled on its own, reaching ``overlap`` pixels into the next one; what its last tiles put
there is kept (``overlap`` columns for every row) and blended in when the next chunk gets there, as
between any two tiles, so no tile is computed twice. The last tile of a row or column is only as
large as it needs to be (at least half a tile).

The main thread only runs the model. A reader thread prepares the next batch of tiles; a writer
thread blends each batch into the accumulators and, once a row of tiles is done, turns the pixel rows
no later tile touches into products and writes them. Memory depends on the chunk and tile sizes (plus
the kept columns: ``overlap`` x 4 bytes per channel and raster row), not on the raster's width. Every
product comes from the same forward pass. Outputs are written under temporary names and renamed only
when the whole run succeeded: a failed or cancelled run leaves nothing behind.

Products (keys of :attr:`PredictResult.outputs`):

* ``main`` — class map (Byte/UInt16, palette and class names), per-cell class map for patch
  classification, or Float32 values for regression;
* ``confidence``, ``entropy`` — highest class probability and entropy of the probabilities;
* ``probabilities`` — one band per class (optional);
* ``aux_<name>`` — each reconstructed auxiliary modality, de-normalised to its units;
* with ``aux_truth``: ``recon_error_<name>`` — |reconstruction − truth| in normalised units (band 1
  the mean over bands, then one band per modality band);
* with ``labels``: ``main_error`` — misclassified (1) or correct (0), or absolute error for regression;
* with both and a fitted error model: ``error_score`` and ``agreement`` (see :mod:`mtl_core.explain`);
* ``sensitivity`` and ``sensitivity_<name>`` — per input band, how much the class probabilities
  (total variation) and each reconstruction (mean absolute change, normalised units) move when that
  band is replaced by its training mean.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from osgeo import gdal, ogr
from tqdm import tqdm

from .backends import Backend, open_runner
from .errors import CancelledError, ModelFileError, RasterError
from .fileio import atomic_path, check_outputs, run_lock
from .norm import class_indices, denormalise, normalise
from .raster import (
    Grid,
    Window,
    check_georeferenced,
    create_geotiff,
    open_raster,
    padded_size,
    read_window,
    set_classes,
)
from .spec import CLASS_NODATA, FLOAT_NODATA, ModelSpec

log = logging.getLogger("mtl_core")

PRODUCTS = ("main", "confidence", "entropy", "probabilities", "aux", "recon_error", "main_error",
            "error_score", "agreement", "sensitivity")
DEFAULT_PRODUCTS = ("main", "confidence", "entropy", "aux", "recon_error", "main_error", "error_score", "agreement")
ERROR_NODATA = 255


@dataclass
class PredictOptions:
    """How to tile, where to run and what to write. ``None`` sizes default from the model file.

    Attributes:
        tile: tile size in pixels (rounded up to the encoder's stride); default max(256, patch size).
        chunk: width in pixels of the column chunks the raster is processed in (a multiple of 256, at
            least a tile), so memory does not grow with the raster's width; neighbouring chunks are
            blended over the overlap like neighbouring tiles; default 2048.
        overlap: pixels shared by neighbouring tiles, blended; default tile / 8.
        batch_size: tiles per forward pass.
        device: ``auto``, ``cpu`` or ``cuda``.
        backend: ``auto`` (ONNX Runtime for ``.onnx`` files or when PyTorch is missing), ``torch`` or ``onnx``.
        threads: CPU threads for the backend (default: the backend's choice).
        extent: (xmin, ymin, xmax, ymax) in the raster's CRS; default the whole raster.
        mask: polygon layer (any OGR format) or raster (non-zero = inside); pixels outside are nodata
            and tiles wholly outside are skipped.
        bands: 1-based raster band feeding each model input band; default by band description, else
            bands 1..N.
        products: which products to write (see the module docstring); products that need ground
            truth are skipped without it.
        aux_truth: modality name -> raster of the real auxiliary bands, on the input grid.
        labels: reference raster of the main task, on the input grid.
        labels_band: its band holding the labels; default the band the model was trained on (recorded in
            the model file), else 1.
        cog: write Cloud Optimized GeoTIFFs instead of tiled GeoTIFFs.
        overwrite: replace outputs that already exist in the folder (never the run's own inputs);
            without it an existing output is refused before anything is computed.
    """

    tile: int | None = None
    overlap: int | None = None
    chunk: int = 2048
    batch_size: int = 4
    device: str = "auto"
    backend: Backend = "auto"
    threads: int | None = None
    extent: tuple[float, float, float, float] | None = None
    mask: str | None = None
    bands: list[int] | None = None
    products: tuple[str, ...] = DEFAULT_PRODUCTS
    aux_truth: dict[str, str] | None = None
    labels: str | None = None
    labels_band: int | None = None
    cog: bool = False
    overwrite: bool = False


@dataclass
class PredictResult:
    outputs: dict[str, Path] = field(default_factory=dict)
    device: str = "cpu"
    grid: Grid | None = None
    seconds: float = 0.0
    tiles: int = 0
    skipped_tiles: int = 0
    spec: ModelSpec | None = None


def band_mapping(spec: ModelSpec, ds: gdal.Dataset, bands: list[int] | None = None) -> list[int]:
    """The raster band (1-based) feeding each model input band.

    Explicit ``bands`` are checked; otherwise bands are matched by description when every model band
    name is found among the raster's band descriptions, else taken in order when the counts agree.

    Raises:
        RasterError: the raster cannot provide the model's bands.
    """
    names = [b.name for b in spec.input_bands]
    expected = ", ".join(f"{m.name}/{b.name}" for m in spec.inputs for b in m.bands)
    if bands is not None:
        if len(bands) != len(names) or not all(1 <= b <= ds.RasterCount for b in bands):
            raise RasterError(
                f"band mapping {bands} must give {len(names)} band numbers between 1 and {ds.RasterCount}, "
                f"one for each model band: {expected}"
            )
        return list(bands)
    descriptions = [ds.GetRasterBand(i).GetDescription().strip().lower() for i in range(1, ds.RasterCount + 1)]
    if all(n.lower() in descriptions for n in names):
        return [descriptions.index(n.lower()) + 1 for n in names]
    if ds.RasterCount != len(names):
        raise RasterError(
            f"the input raster has {ds.RasterCount} band(s) but the model expects {len(names)}, in this order: "
            f"{expected}; build a raster with exactly these bands (QGIS: Raster > Miscellaneous > Build Virtual "
            "Raster, 'Place each input file into a separate band') or map the bands explicitly"
        )
    return list(range(1, len(names) + 1))


def check_input(spec: ModelSpec, ds: gdal.Dataset, bands: list[int] | None = None) -> list[int]:
    """Refuse a raster that cannot feed the model; return the band mapping."""
    check_georeferenced(ds, "input raster")
    mapping = band_mapping(spec, ds, bands)
    for i in mapping:
        dt = ds.GetRasterBand(i).DataType
        if gdal.DataTypeIsComplex(dt):
            raise RasterError(f"band {i} of the input raster is complex ({gdal.GetDataTypeName(dt)}); use real values")
    return mapping


def read_input(ds: gdal.Dataset, spec: ModelSpec, mapping: list[int], window: Window) -> tuple[np.ndarray, np.ndarray]:
    """The model's input bands of a window, in the model's order, and where they are valid: not nodata
    (the raster's or the model's input nodata value) and finite."""
    data, valid = read_window(ds, mapping, window)
    if spec.input_nodata is not None:
        valid &= (data != spec.input_nodata).all(axis=0)
    return data, valid


def extent_window(grid: Grid, extent: tuple[float, float, float, float] | None) -> Window:
    """Pixel window of an extent (in the raster's CRS), clipped to the raster; whole raster if None."""
    if extent is None:
        return 0, 0, grid.width, grid.height
    xmin, ymin, xmax, ymax = extent
    if not all(math.isfinite(v) for v in extent):
        raise RasterError(f"extent {tuple(extent)} is not finite; give four numbers in the raster's CRS")
    if not (xmax > xmin and ymax > ymin):
        raise RasterError(f"extent {extent} is empty; give xmin ymin xmax ymax with xmin < xmax and ymin < ymax")
    x0, dx, _, y0, _, dy = grid.transform

    def span(a: float, b: float, origin: float, step: float, n: int) -> tuple[int, int]:
        # Works for either sign of the pixel size: north-up (dy < 0) and south-up (dy > 0) grids alike.
        lo, hi = sorted(((a - origin) / step, (b - origin) / step))
        return max(0, math.floor(lo + 1e-9)), min(n, math.ceil(hi - 1e-9))

    c0, c1 = span(xmin, xmax, x0, dx, grid.width)
    r0, r1 = span(ymin, ymax, y0, dy, grid.height)
    if c1 <= c0 or r1 <= r0:
        b = grid.bounds
        raise RasterError(
            f"extent ({xmin}, {ymin}, {xmax}, {ymax}) does not intersect the raster, which covers "
            f"({b[0]}, {b[1]}, {b[2]}, {b[3]}) in its own CRS; give the extent in the raster's CRS"
        )
    return c0, r0, c1 - c0, r1 - r0


def sub_grid(grid: Grid, window: Window, cell: int = 1) -> Grid:
    """The grid of a window of ``grid``, optionally with pixels ``cell`` times larger."""
    x, y, w, h = window
    x0, dx, rx, y0, ry, dy = grid.transform
    return Grid(grid.wkt, (x0 + x * dx, dx * cell, rx, y0 + y * dy, ry, dy * cell), -(-w // cell), -(-h // cell))


def tile_spans(start: int, end: int, tile: int, overlap: int, divisor: int) -> list[tuple[int, int]]:
    """(offset, size) of the tiles covering ``[start, end)`` along one axis.

    Neighbours share ``overlap`` pixels. Sizes are multiples of ``divisor``; the last tile ends exactly
    at ``end`` and is only as large as it needs to be, but at least half a tile, so it keeps some
    context and little work is repeated. A span shorter than a tile gets one tile, padded.
    """
    if end - start <= tile:
        return [(start, padded_size(end - start, divisor))]
    stride = tile - overlap
    spans = [(o, tile) for o in range(start, end - tile + 1, stride)]
    last = spans[-1][0] + tile
    if last < end:
        size = min(tile, padded_size(max(end - last + overlap, tile // 2), divisor))
        spans.append((end - size, size))
    return spans


def ramp(height: int, width: int, overlap: int) -> np.ndarray:
    """2-D blending weights: 1 in the middle, falling linearly to near 0 across the overlap."""

    def axis(n: int) -> np.ndarray:
        if overlap <= 0:
            return np.ones(n, dtype=np.float32)
        i = np.arange(n, dtype=np.float32) + 0.5
        return np.clip(np.minimum(i, n - i) / overlap, 1e-3, 1.0)

    return np.outer(axis(height), axis(width))


class _Mask:
    """Area-of-interest mask read per window: a raster (non-zero inside) or polygons rasterised on the fly."""

    def __init__(self, path: str, grid: Grid) -> None:
        self.grid = grid
        self.vector = ogr.Open(str(path))
        if self.vector is not None:
            self.layer = self.vector.GetLayer(0)
            if self.layer.GetFeatureCount() == 0:
                raise RasterError(f"mask {str(path)!r} holds no polygon; draw the area of interest first")
            xmin, xmax, ymin, ymax = self._extent_in(grid)
            b = grid.bounds
            if xmax <= b[0] or xmin >= b[2] or ymax <= b[1] or ymin >= b[3]:
                raise RasterError(f"mask {str(path)!r} does not overlap the input raster (its polygons cover "
                                  f"{xmin:.6g}, {ymin:.6g}, {xmax:.6g}, {ymax:.6g} in the raster's CRS, the raster "
                                  f"{b[0]:.6g}, {b[1]:.6g}, {b[2]:.6g}, {b[3]:.6g}); draw the area of interest over it")
            return
        ds = open_raster(path, "mask")
        check_georeferenced(ds, "mask")
        if not Grid.of(ds).same_as(grid):
            raise RasterError(f"mask raster {str(path)!r} is not on the input raster's grid; "
                              "use a polygon layer or warp the mask onto the input grid (gdalwarp)")
        self.raster = ds

    def _extent_in(self, grid: Grid) -> tuple[float, float, float, float]:
        """(xmin, xmax, ymin, ymax) of the polygons, in the raster's CRS."""
        from osgeo import osr

        xmin, xmax, ymin, ymax = self.layer.GetExtent()
        source, target = self.layer.GetSpatialRef(), grid.srs()  # Grid.srs() is in x, y order already
        if source is None or source.IsSame(target):
            return xmin, xmax, ymin, ymax
        source.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        transform = osr.CoordinateTransformation(source, target)
        xs, ys = zip(*(transform.TransformPoint(x, y)[:2] for x in (xmin, xmax) for y in (ymin, ymax)))
        return min(xs), max(xs), min(ys), max(ys)

    def read(self, window: Window) -> np.ndarray:
        x, y, w, h = window
        if self.vector is None:
            return self.raster.GetRasterBand(1).ReadAsArray(x, y, w, h) != 0
        mem = gdal.GetDriverByName("MEM").Create("", w, h, 1, gdal.GDT_Byte)
        mem.SetProjection(self.grid.wkt)
        mem.SetGeoTransform(sub_grid(self.grid, window).transform)
        gdal.RasterizeLayer(mem, [1], self.layer, burn_values=[1])
        return mem.GetRasterBand(1).ReadAsArray() != 0


def run_inputs(raster_path: str | os.PathLike, opts: PredictOptions) -> list[str]:
    """Every file a run reads (input raster, ground truth, mask): no output may replace one of them."""
    named = [str(raster_path), *(opts.aux_truth or {}).values(), opts.labels, opts.mask]
    return [str(p) for p in named if p]


def labels_band_of(spec: ModelSpec, band: int | None = None) -> int:
    """The label band to read: ``band`` if given, else the one the model was trained on, else 1."""
    return band or int(spec.training.get("data", {}).get("labels_band") or 1)


class _Truth:
    """Ground-truth rasters (auxiliary modalities and labels) read per window, on the input grid."""

    def __init__(self, spec: ModelSpec, grid: Grid, aux_truth: dict[str, str], labels: str | None,
                 labels_band: int | None = None) -> None:
        self.spec, self.aux, self.labels = spec, {}, None
        self.labels_band = labels_band_of(spec, labels_band)
        known = [m.name for m in spec.aux]
        for name, path in aux_truth.items():
            if name not in known:
                raise RasterError(
                    f"the model reconstructs no modality {name!r}; it reconstructs {known or 'nothing'}: pass "
                    f"--aux {known[0] if known else 'NAME'}=PATH" + ("" if known else " only with an 'mtl' model")
                )
            m = spec.aux_modality(name)
            ds = open_raster(path, f"auxiliary raster {name!r}")
            if ds.RasterCount != len(m.bands):
                raise RasterError(
                    f"auxiliary raster {name!r} ({str(path)!r}) has {ds.RasterCount} band(s) but the model's {name!r} "
                    f"modality has {len(m.bands)} ({', '.join(m.band_names)}); give a raster with exactly these bands, "
                    "in this order"
                )
            self.aux[name] = self._open(path, grid, f"auxiliary raster {name!r}")
        if labels:
            self.labels = self._open(labels, grid, "label raster")
            if not 1 <= self.labels_band <= self.labels.RasterCount:
                raise RasterError(f"label raster {str(labels)!r} has {self.labels.RasterCount} band(s); band "
                                  f"{self.labels_band} was asked for: give --labels-band between 1 and "
                                  f"{self.labels.RasterCount}")
            self.values = np.array([c.value for c in spec.classes])

    @staticmethod
    def _open(path: str, grid: Grid, what: str) -> gdal.Dataset:
        ds = open_raster(path, what)
        check_georeferenced(ds, what)
        if not Grid.of(ds).same_as(grid):
            raise RasterError(
                f"{what} {str(path)!r} is not on the input raster's grid (CRS, pixel size, origin and size must "
                f"match); warp it first, e.g. gdalwarp -t_srs <input CRS> -te <input extent> -ts {grid.width} "
                f"{grid.height}"
            )
        return ds

    def read_aux(self, name: str, window: Window) -> tuple[np.ndarray, np.ndarray]:
        ds = self.aux[name]
        return read_window(ds, list(range(1, ds.RasterCount + 1)), window)

    def read_labels(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Class indices (-1 where unlabelled) or raw values for regression, and validity."""
        raw, valid = read_window(self.labels, [self.labels_band], window)
        raw = raw[0]
        if self.spec.task == "regression":
            return raw, valid
        idx = class_indices(raw, valid, self.values)
        return idx, idx >= 0


@dataclass
class _Layout:
    """Where each blended quantity sits among the accumulator's channels."""

    main: int
    aux: dict[str, int]
    sensitivity: dict[str, int]  # "main" and modality names -> channels (one per input band)

    @property
    def channels(self) -> int:
        return self.main + sum(self.aux.values()) + sum(self.sensitivity.values())

    def split(self, arr: np.ndarray) -> dict[str, np.ndarray]:
        out, off = {"main": arr[:self.main]}, self.main
        for name, n in self.aux.items():
            out[f"aux_{name}"], off = arr[off:off + n], off + n
        for name, n in self.sensitivity.items():
            out[f"sens_{name}"], off = arr[off:off + n], off + n
        return out


class _Outputs:
    """The output datasets, created under temporary names and renamed together at the end."""

    def __init__(self, spec: ModelSpec, grid: Grid, cell_grid: Grid, out_dir: Path, stem: str,
                 wanted: set[str], cog: bool, stack: ExitStack, inputs: list[str] = (),
                 overwrite: bool = False) -> None:
        self.spec, self.datasets, self.final, self.temp, self.cog = spec, {}, {}, {}, cog
        self.overviews: dict[str, _Overviews] = {}
        self.cell_grid = cell_grid
        classes = spec.task != "regression"
        f32 = gdal.GDT_Float32
        plan: list[tuple[str, str, int, int, float, Grid]] = []
        if classes:
            dtype = gdal.GDT_Byte if max(c.value for c in spec.classes) < 256 else gdal.GDT_UInt16
            cells = cell_grid if spec.task == "classification" else grid
            plan += [("main", "classes", 1, dtype, CLASS_NODATA, cells),
                     ("confidence", "confidence", 1, f32, FLOAT_NODATA, cells),
                     ("entropy", "entropy", 1, f32, FLOAT_NODATA, cells),
                     ("probabilities", "probabilities", len(spec.classes), f32, FLOAT_NODATA, cells)]
        else:
            plan.append(("main", spec.target.name, 1, f32, FLOAT_NODATA, grid))
        for m in spec.aux:
            plan += [(f"aux_{m.name}", f"{m.name}_reconstructed", len(m.bands), f32, FLOAT_NODATA, grid),
                     (f"recon_error_{m.name}", f"{m.name}_recon_error", 1 + len(m.bands), f32, FLOAT_NODATA, grid)]
        if spec.task == "regression":
            plan.append(("main_error", "main_error", 1, f32, FLOAT_NODATA, grid))
        else:
            plan.append(("main_error", "main_error", 1, gdal.GDT_Byte, ERROR_NODATA, grid))
        plan += [("error_score", "error_score", 1, f32, FLOAT_NODATA, grid),
                 ("agreement", "agreement", 1, gdal.GDT_Byte, 0, grid),
                 ("sensitivity", "sensitivity", spec.in_channels, f32, FLOAT_NODATA, grid)]
        plan += [(f"sensitivity_{m.name}", f"sensitivity_{m.name}", spec.in_channels, f32, FLOAT_NODATA, grid)
                 for m in spec.aux]
        plan = [item for item in plan if item[0] in wanted]
        check_outputs([out_dir / f"{stem}_{name}.tif" for _, name, *_ in plan], inputs, overwrite)
        stack.enter_context(run_lock(out_dir, stem))
        for key, name, bands, dtype, nodata, g in plan:
            final = out_dir / f"{stem}_{name}.tif"
            tmp = stack.enter_context(atomic_path(final))
            path = tmp
            if cog:  # write a plain GeoTIFF first, translate to COG into the atomic temporary at the end
                path = tmp.with_name(tmp.name + ".gtiff.tif")
                stack.callback(path.unlink, missing_ok=True)
            self.final[key], self.temp[key] = final, (tmp, path)
            self.datasets[key] = create_geotiff(path, g, bands, dtype, nodata)
            categorical = key in ("agreement", "main_error") or (key == "main" and spec.task != "regression")
            self.overviews[key] = _Overviews(self.datasets[key], nodata, categorical)
        stack.callback(self.close)  # close datasets before the temporary files are renamed or removed
        self._describe()

    def _describe(self) -> None:
        spec, ds = self.spec, self.datasets
        input_names = [f"{m.name}/{b.name}" for m in spec.inputs for b in m.bands]
        if "main" in ds and spec.task != "regression":
            set_classes(ds["main"].GetRasterBand(1), [(c.value, c.name, c.color) for c in spec.classes])
            ds["main"].GetRasterBand(1).SetDescription("class")
        if "main" in ds and spec.task == "regression":
            ds["main"].GetRasterBand(1).SetDescription(spec.target.name)
            ds["main"].GetRasterBand(1).SetUnitType(spec.target.units)
        if "probabilities" in ds:
            for i, c in enumerate(spec.classes, start=1):
                ds["probabilities"].GetRasterBand(i).SetDescription(f"p({c.name})")
        descriptions = {"confidence": "max class probability", "entropy": "entropy of class probabilities",
                        "error_score": "reconstruction error score", "agreement": "error agreement",
                        "main_error": "main-task error"}
        for key, desc in descriptions.items():
            if key in ds:
                ds[key].GetRasterBand(1).SetDescription(desc)
        from .explain import AGREEMENT_CLASSES, MAIN_ERROR_CLASSES

        if "agreement" in ds:
            set_classes(ds["agreement"].GetRasterBand(1), AGREEMENT_CLASSES)
        if "main_error" in ds and spec.task != "regression":
            set_classes(ds["main_error"].GetRasterBand(1), MAIN_ERROR_CLASSES)
        for m in spec.aux:
            if f"aux_{m.name}" in ds:
                rec = ds[f"aux_{m.name}"]
                rec.SetMetadataItem("UNITS", m.units)
                for i, b in enumerate(m.bands, start=1):
                    rec.GetRasterBand(i).SetDescription(f"{b.name} (reconstructed)")
                    rec.GetRasterBand(i).SetUnitType(m.units)
            if f"recon_error_{m.name}" in ds:
                err = ds[f"recon_error_{m.name}"]
                err.GetRasterBand(1).SetDescription(f"{m.name} mean abs error (std units)")
                for i, b in enumerate(m.bands, start=2):
                    err.GetRasterBand(i).SetDescription(f"{b.name} abs error (std units)")
        for key in ["sensitivity"] + [f"sensitivity_{m.name}" for m in spec.aux]:
            if key in ds:
                for i, name in enumerate(input_names, start=1):
                    ds[key].GetRasterBand(i).SetDescription(f"{name}")

    def write(self, key: str, data: np.ndarray, row: int, col: int = 0) -> None:
        ds = self.datasets.get(key)
        if ds is not None:
            for i, band in enumerate(data, start=1):
                ds.GetRasterBand(i).WriteArray(band, col, row)
            self.overviews[key].push(data, col, last=row + data.shape[-2] == ds.RasterYSize)

    def close(self) -> None:
        """Drop every reference to the output datasets, which closes them."""
        self.overviews.clear()
        self.datasets.clear()

    def finish(self) -> dict[str, Path]:
        self.overviews.clear()
        for key in list(self.datasets):
            ds = self.datasets.pop(key)
            if self.cog:  # the COG driver reuses the overviews written along the way
                ds.FlushCache()
                tmp, _ = self.temp[key]
                gdal.Translate(str(tmp), ds, format="COG", creationOptions=[
                    "COMPRESS=DEFLATE", "BIGTIFF=IF_SAFER", "OVERVIEWS=FORCE_USE_EXISTING"])
            ds = None
        return dict(self.final)


class _Overviews:
    """Overview levels (2x, 4x, ...) of an output, filled as its rows arrive instead of in a pass at the end.

    Each level halves the one below: the mean of the valid pixels of each 2 x 2 block (nodata where
    none is valid), or its top-left pixel for categorical rasters. Rows arrive in strips, per column
    chunk (starting at a multiple of 256 px); rows that do not yet make a whole block wait in a
    carry-over of at most one row per level and chunk.
    """

    def __init__(self, ds: gdal.Dataset, nodata: float, categorical: bool) -> None:
        self.ds, self.nodata, self.categorical = ds, nodata, categorical
        levels = [f for f in (2, 4, 8, 16, 32, 64) if min(ds.RasterXSize, ds.RasterYSize) // f >= 64]
        if levels:
            ds.BuildOverviews("NONE", levels)  # create the levels empty
        self.levels = len(levels)
        self.carry: dict[int, list[np.ndarray | None]] = {}  # chunk column -> per level
        self.rows: dict[int, list[int]] = {}

    def _halve(self, data: np.ndarray) -> np.ndarray:
        b, h, w = data.shape
        if w % 2:
            data = np.concatenate([data, np.full((b, h, 1), self.nodata, data.dtype)], axis=2)
        if h % 2:
            data = np.concatenate([data, np.full((b, 1, data.shape[2]), self.nodata, data.dtype)], axis=1)
        if self.categorical:
            return data[:, ::2, ::2]
        if not (data == self.nodata).any():  # the usual case, several times faster
            quarter = data[:, ::2, ::2] + data[:, ::2, 1::2]
            quarter += data[:, 1::2, ::2]
            quarter += data[:, 1::2, 1::2]
            quarter *= 0.25
            return quarter.astype(data.dtype, copy=False)
        blocks = data.reshape(b, data.shape[1] // 2, 2, data.shape[2] // 2, 2).astype(np.float32)
        valid = blocks != self.nodata
        count = valid.sum(axis=(2, 4))
        mean = np.where(valid, blocks, 0).sum(axis=(2, 4)) / np.maximum(count, 1)
        return np.where(count > 0, mean, self.nodata).astype(data.dtype)

    def push(self, data: np.ndarray, col: int, last: bool) -> None:
        carry = self.carry.setdefault(col, [None] * self.levels)
        rows = self.rows.setdefault(col, [0] * self.levels)
        for level in range(self.levels):
            if carry[level] is not None:
                data = np.concatenate([carry[level], data], axis=1)
            whole = data.shape[1] if last else data.shape[1] // 2 * 2
            carry[level] = None if whole == data.shape[1] else data[:, whole:]
            if whole == 0:
                return
            data = self._halve(data[:, :whole])
            for i, band in enumerate(data, start=1):
                self.ds.GetRasterBand(i).GetOverview(level).WriteArray(band, col >> (level + 1), rows[level])
            rows[level] += data.shape[1]


def _wanted(spec: ModelSpec, opts: PredictOptions) -> set[str]:
    """Output keys to write, from the requested products and the ground truth available."""
    unknown = set(opts.products) - set(PRODUCTS)
    if unknown:
        raise ValueError(f"unknown products {sorted(unknown)}; choose from {', '.join(PRODUCTS)}")
    p, classes = set(opts.products), spec.task != "regression"
    truth = opts.aux_truth or {}
    wanted = {"main"} & p
    if classes:
        wanted |= {"confidence", "entropy", "probabilities"} & p
    for m in spec.aux:
        if "aux" in p:
            wanted.add(f"aux_{m.name}")
        if "recon_error" in p and m.name in truth:
            wanted.add(f"recon_error_{m.name}")
    if "main_error" in p and opts.labels:
        wanted.add("main_error")
    error_model = spec.training.get("error_model")
    if truth and error_model and spec.task != "regression":
        if "error_score" in p:
            wanted.add("error_score")
        if "agreement" in p and opts.labels:
            wanted.add("agreement")
    if "sensitivity" in p:
        wanted.add("sensitivity")
        wanted |= {f"sensitivity_{m.name}" for m in spec.aux}
    return wanted


def predict(
    model_path: str | os.PathLike,
    raster_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    opts: PredictOptions | None = None,
    progress: bool | Callable[[float], None] = False,
    cancelled: Callable[[], bool] | None = None,
) -> PredictResult:
    """Run a model over a raster and write every requested product.

    Args:
        model_path: model file.
        raster_path: raster holding the model's input bands.
        out_dir: existing, writable output folder.
        opts: tiling, device, extent, mask, band mapping, products and ground truth.
        progress: True for a progress bar, or a callback receiving the fraction done (0..1).
        cancelled: polled between batches; when it returns True the run stops and writes nothing.

    Raises:
        RasterError: band count, CRS, grid, extent or output folder problems.
        CancelledError: the run was cancelled (no output file is left behind).
    """
    opts = opts or PredictOptions()
    start = time.perf_counter()
    spec, runner = open_runner(model_path, opts.backend, opts.device, opts.threads)
    divisor = runner.divisor
    wanted = _wanted(spec, opts)
    ds = open_raster(raster_path, "input raster")
    mapping = check_input(spec, ds, opts.bands)
    out_dir = Path(out_dir)
    grid = Grid.of(ds)
    win = extent_window(grid, opts.extent)
    out_grid = sub_grid(grid, win)
    truth = _Truth(spec, grid, opts.aux_truth or {}, opts.labels if "main_error" in wanted else None,
                   opts.labels_band)
    mask = _Mask(opts.mask, grid) if opts.mask else None
    wx, wy, W, H = win

    if opts.chunk < 256 or opts.chunk % 256:
        raise RasterError(f"chunk width {opts.chunk} must be a positive multiple of 256")
    if spec.task == "classification":  # one prediction per patch-sized cell, cells on a fixed grid, one chunk
        overlap, cell = 0, spec.patch_size
        ys = [(y, cell) for y in range(0, H, cell)]
        bounds = [0, W]
        spans = [[(x, cell) for x in range(0, W, cell)]]
    else:
        tile = padded_size(opts.tile or max(256, spec.patch_size), divisor)
        overlap = opts.overlap if opts.overlap is not None else tile // 8
        if not 0 <= overlap <= tile // 2:
            raise RasterError(f"overlap {overlap} must be between 0 and half the tile size ({tile // 2})")
        cell = 1
        ys = tile_spans(0, H, tile, overlap, divisor)
        # Column chunks start at multiples of the chunk width (so overview blocks line up); each is tiled
        # on its own up to `overlap` px into the next one, and that shared strip is blended through
        # `seam`. A remainder narrower than a tile joins the chunk before it.
        chunk = -(-max(opts.chunk, tile) // 256) * 256
        bounds = [b for b in range(0, W, chunk) if b == 0 or W - b >= tile] + [W]
        spans = [tile_spans(lo, min(W, hi + overlap), tile, overlap, divisor) for lo, hi in zip(bounds, bounds[1:])]
    th = ys[0][1]
    span = max(min(W, s[-1][0] + s[-1][1]) - s[0][0] for s in spans)
    sens = "sensitivity" in wanted
    need_aux = any(k.startswith(("aux_", "recon_error_")) for k in wanted) or "error_score" in wanted
    layout = _Layout(
        main=len(spec.classes) if spec.task != "regression" else 1,
        aux={m.name: len(m.bands) for m in spec.aux} if need_aux else {},
        sensitivity={n: spec.in_channels for n in ["main"] + [m.name for m in spec.aux]} if sens else {},
    )
    _check_memory(layout.channels, th, span, opts.batch_size, H, seam_width=overlap if len(spans) > 1 else 0)
    acc = np.zeros((layout.channels, th, span), dtype=np.float32)
    wsum = np.zeros((th, span), dtype=np.float32)
    valid_buf = np.zeros((th, span), dtype=bool)
    # What a chunk's last tiles put into the next chunk's first `overlap` columns, for every row.
    seam_width = overlap if len(spans) > 1 else 0
    seam = np.zeros((layout.channels, H, seam_width), dtype=np.float32)
    seam_w = np.zeros((H, seam_width), dtype=np.float32)
    seam_valid = np.zeros((H, seam_width), dtype=bool)
    weights: dict[tuple[int, int], np.ndarray] = {}
    counts = [0, 0]  # valid input pixels given to the model, and those it answered NaN or infinity for
    bands = spec.input_bands
    batches = []  # (chunk, row of tiles, tiles of one size)
    for c, row in enumerate(spans):
        for k in range(len(ys)):
            for size in dict.fromkeys(w for _, w in row):
                same = [t for t in row if t[1] == size]
                batches += [(c, k, same[i:i + opts.batch_size]) for i in range(0, len(same), opts.batch_size)]

    def read_batch(_: int, k: int, tiles: list[tuple[int, int]]) -> tuple[np.ndarray | None, list, list[int]]:
        """Read, mask and normalise one batch of tiles (runs in the reader thread): the stacked tiles that
        hold valid pixels (None if none does), every tile's validity, and which tiles were stacked."""
        y, h = ys[k]
        data_tiles, valids = [], []
        for x, w in tiles:
            window = (wx + x, wy + y, min(w, W - x), min(h, H - y))
            data, valid = read_input(ds, spec, mapping, window)
            if mask is not None:
                valid &= mask.read(window)
            pad = np.zeros((len(bands), h, w), dtype=np.float32)
            pad[:, :window[3], :window[2]] = normalise(data, valid, bands)
            data_tiles.append(pad)
            valids.append(valid)
        keep = [i for i, v in enumerate(valids) if v.any()]
        x = np.stack([data_tiles[i] for i in keep]) if keep else None
        return x, valids, keep

    def run(x: np.ndarray) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """The forward passes of a batch (main thread): the tiles as they are, then, for sensitivity, with
        each input band in turn replaced by its training mean (0 in normalised units)."""
        outs = [runner(x)]
        for b in range(spec.in_channels if sens else 0):
            xb = x.copy()
            xb[:, b] = 0.0
            outs.append(runner(xb))
        return outs

    def channels(outs: list[tuple[np.ndarray, dict[str, np.ndarray]]], shape: tuple[int, int]) -> np.ndarray:
        """All blended channels of a batch from its forward passes: main, reconstructions, sensitivities."""

        def main_of(raw: np.ndarray) -> np.ndarray:
            if spec.task == "classification":
                raw = np.broadcast_to(raw[:, :, None, None], raw.shape + shape)
            return _softmax(raw) if spec.task != "regression" else raw

        (raw, aux), perturbed = outs[0], outs[1:]
        main = main_of(raw)
        parts = [main] + [aux[n] for n in layout.aux]
        if perturbed:
            sens_main, sens_aux = [], {m.name: [] for m in spec.aux}
            for raw_b, aux_b in perturbed:
                delta = np.abs(main_of(raw_b) - main)
                sens_main.append(delta.sum(1, keepdims=True) / 2 if spec.task != "regression" else delta)
                for name in sens_aux:
                    sens_aux[name].append(np.abs(aux_b[name] - aux[name]).mean(1, keepdims=True))
            parts += [np.concatenate(sens_main, 1)] + [np.concatenate(v, 1) for v in sens_aux.values()]
        return np.concatenate(parts, 1) if len(parts) > 1 else main

    base = 0  # first raster row held in the accumulators; changed by the writer thread only

    def blend(b: int, valids: list[np.ndarray], keep: list[int], outs: list | None) -> None:
        """Blend a batch into the accumulators and, once its row of tiles is complete, turn the rows no
        later tile touches into products and write them (writer thread, batch after batch)."""
        nonlocal base
        c, k, tiles = batches[b]
        lo, hi = bounds[c], bounds[c + 1]
        if outs is not None:
            stacked = channels(outs, (ys[k][1], tiles[0][1]))
            weight = weights.get(stacked.shape[2:])
            if weight is None:
                weight = weights[stacked.shape[2:]] = ramp(*stacked.shape[2:], overlap)
            bad = ~np.isfinite(stacked)  # a damaged model can answer NaN or infinity
            finite = None
            if bad.any():  # rare: only then are pixels masked tile by tile
                finite = ~bad.any(axis=1)  # (B, H, W)
                stacked[bad] = 0.0
            stacked *= weight
            r = ys[k][0] - base
            for j, i in enumerate(keep):
                h, w = valids[i].shape
                xi = tiles[i][0] - lo
                valid, wt = valids[i], weight[:h, :w]
                counts[0] += int(valid.sum())
                if finite is not None:
                    ok = finite[j, :h, :w]
                    counts[1] += int((valid & ~ok).sum())
                    valid, wt = valid & ok, wt * ok
                acc[:, r:r + h, xi:xi + w] += stacked[j, :, :h, :w]
                wsum[r:r + h, xi:xi + w] += wt
                valid_buf[r:r + h, xi:xi + w] |= valid
        if b + 1 < len(batches) and batches[b + 1][:2] == (c, k):
            return  # the row of tiles of this chunk goes on
        end = ys[k + 1][0] if k + 1 < len(ys) else H
        n = end - base
        if c > 0 and seam_width:  # add what the chunk before put into this one's first columns
            acc[:, :n, :seam_width] += seam[:, base:end]
            wsum[:n, :seam_width] += seam_w[base:end]
            valid_buf[:n, :seam_width] |= seam_valid[base:end]
        if c + 1 < len(spans) and seam_width:
            cols = slice(hi - lo, hi - lo + seam_width)
            seam[:, base:end], seam_w[base:end], seam_valid[base:end] = (
                acc[:, :n, cols], wsum[:n, cols], valid_buf[:n, cols])
        rows = acc[:, :n, :hi - lo]  # final: divided in place, then written, then shifted out
        rows /= np.maximum(wsum[:n, :hi - lo], 1e-12)
        # in pieces 512 px wide (a multiple of the overview blocks): the products' temporaries stay small
        piece = hi - lo if spec.task == "classification" else 512
        for p0 in range(0, hi - lo, piece):
            p1 = min(p0 + piece, hi - lo)
            _finish_rows(outputs, truth, spec, layout, rows[:, :, p0:p1], valid_buf[:n, p0:p1],
                         (wx + lo + p0, wy + base, p1 - p0, n), base, lo + p0, cell)
        if end == H:  # chunk done: start the next one from empty buffers
            for buf in (acc, wsum, valid_buf):
                buf[...] = 0
            base = 0
        else:
            for buf in (acc, wsum, valid_buf):  # shift the unfinished rows to the top
                buf[..., :th - n, :] = buf[..., n:, :]
                buf[..., th - n:, :] = 0
            base = end

    result = PredictResult(device=runner.device, grid=out_grid, tiles=sum(len(b[2]) for b in batches), spec=spec)
    bar = tqdm(total=result.tiles, unit="tile", desc="predict", disable=progress is not True)
    done = 0
    with ExitStack() as stack:
        cell_grid = sub_grid(grid, win, cell)
        outputs = _Outputs(spec, out_grid, cell_grid, out_dir, Path(raster_path).stem, wanted, opts.cog, stack,
                           run_inputs(raster_path, opts), opts.overwrite)
        reader = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="mtl-read"))
        writer = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="mtl-write"))
        # The main thread only runs the model: reading happens one batch ahead, blending and writing
        # behind it, at most two batches behind (memory stays bounded; a writer error surfaces here).
        behind: deque[Future] = deque()
        ahead = reader.submit(read_batch, *batches[0])
        for b, (_, _, tiles) in enumerate(batches):
            if cancelled is not None and cancelled():
                raise CancelledError("prediction cancelled; no output was written")
            x, valids, keep = ahead.result()
            if b + 1 < len(batches):
                ahead = reader.submit(read_batch, *batches[b + 1])
            result.skipped_tiles += len(valids) - len(keep)
            outs = run(x) if x is not None else None
            while len(behind) >= 2:
                behind.popleft().result()
            behind.append(writer.submit(blend, b, valids, keep, outs))
            done += len(tiles)
            bar.update(len(tiles))
            if callable(progress):
                progress(done / result.tiles)
        while behind:
            behind.popleft().result()
        if counts[1] and counts[1] == counts[0]:
            raise ModelFileError(f"the model answered NaN or infinity for every pixel; {Path(model_path).name!r} is "
                                 "damaged (export or train it again); nothing was written")
        result.outputs = outputs.finish()
        if counts[1]:
            log.warning("the model answered NaN or infinity for %d of %d pixels (tile counts, overlaps included); "
                        "they are nodata in every output. The model file may be damaged", counts[1], counts[0])
    bar.close()
    result.seconds = time.perf_counter() - start
    log.info("predicted %dx%d px on %s in %.1f s (%d tiles, %d skipped)", W, H, runner.device, result.seconds,
             result.tiles, result.skipped_tiles)
    return result


def _available_memory() -> int | None:
    """Bytes of memory available now (Linux: MemAvailable), or None where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _check_memory(channels: int, tile_h: int, span: int, batch: int, height: int, seam_width: int) -> None:
    """Refuse, before allocating, a run whose buffers cannot fit in memory (a model file with thousands of
    classes, a huge tile or chunk), naming the options that shrink them."""
    per_channel = 4 * (tile_h * span + 2 * batch * tile_h * tile_h + height * seam_width)  # float32
    need = channels * per_channel
    available = _available_memory()
    if available is not None and need > 0.8 * available:
        raise RasterError(
            f"this run needs about {need / 2**30:.1f} GiB for its buffers ({channels} output channels) but "
            f"{available / 2**30:.1f} GiB of memory is available; use a smaller --tile, --chunk or --batch, or "
            "fewer products (the class probabilities and sensitivity add channels)")


def _finish_rows(outputs: _Outputs, truth: _Truth, spec: ModelSpec, layout: _Layout, rows: np.ndarray,
                 valid: np.ndarray, window: Window, row: int, col: int, cell: int) -> None:
    """Turn blended channels of finished rows into every product and write them (writer thread)."""
    parts = layout.split(rows)
    main = parts["main"]
    invalid = ~valid
    wanted = outputs.datasets

    def put(key: str, arr: np.ndarray, nodata: float = FLOAT_NODATA) -> None:
        if key in wanted:
            arr[..., invalid] = nodata
            outputs.write(key, arr, row, col)

    pred_idx = None
    if spec.task != "regression":
        pred_idx, conf = _argmax(main)
        classes = np.array([c.value for c in spec.classes], dtype=np.uint16)[pred_idx]
        ent = np.zeros(main.shape[1:], dtype=np.float32)
        term = np.empty_like(ent)
        for p in main:  # class by class: no temporary as large as all the probabilities
            np.log(np.maximum(p, 1e-12, out=term), out=term)
            term *= p
            ent -= term
        if spec.task == "classification":  # one value per cell: sample the cells' top-left pixels
            cells = lambda a: a[..., ::cell, ::cell].copy()  # noqa: E731
            cell_invalid = ~_any_cells(valid, cell)
            for key, arr, nodata in (("main", classes[None], CLASS_NODATA), ("confidence", conf[None], FLOAT_NODATA),
                                     ("entropy", ent[None], FLOAT_NODATA), ("probabilities", main, FLOAT_NODATA)):
                if key in wanted:
                    a = cells(arr).astype(np.float32 if key != "main" else classes.dtype)
                    a[..., cell_invalid] = nodata
                    outputs.write(key, a, row // cell, col // cell)
        else:
            put("main", classes[None], CLASS_NODATA)
            put("confidence", conf[None])
            put("entropy", ent[None])
            put("probabilities", main.astype(np.float32))  # astype copies: the blended rows stay intact
    else:
        t = spec.target
        put("main", (main * t.std + t.mean).astype(np.float32))

    recon_error: dict[str, np.ndarray] = {}
    for m in spec.aux:
        if m.name not in layout.aux:
            continue
        rec = parts[f"aux_{m.name}"]
        put(f"aux_{m.name}", denormalise(rec, m.bands).astype(np.float32))
        if m.name in truth.aux:
            real, real_valid = truth.read_aux(m.name, window)
            err = np.abs(rec - normalise(real, real_valid, m.bands))
            err[:, ~real_valid] = np.nan
            recon_error[m.name] = err
            err_out = np.concatenate([err.mean(0, keepdims=True), err]).astype(np.float32)
            err_out[np.isnan(err_out)] = FLOAT_NODATA
            put(f"recon_error_{m.name}", err_out)

    main_wrong, unlabelled = None, np.zeros_like(valid)
    if truth.labels is not None:
        ref, labelled = truth.read_labels(window)
        labelled &= valid
        if spec.task == "regression":
            err = np.abs(main[0] * spec.target.std + spec.target.mean - ref).astype(np.float32)
            err[~labelled] = FLOAT_NODATA
            put("main_error", err[None])
        else:
            main_wrong = pred_idx != ref
            out = main_wrong.astype(np.uint8)
            out[~labelled] = ERROR_NODATA
            put("main_error", out[None], ERROR_NODATA)
            main_wrong = np.where(labelled, main_wrong, False)
            unlabelled = ~labelled

    if "error_score" in wanted or "agreement" in wanted:
        from .explain import agreement, error_score

        error_model = spec.training["error_model"]
        score = error_score({k: np.nan_to_num(v) for k, v in recon_error.items()},
                            main if spec.task != "regression" else None, error_model).astype(np.float32)
        no_truth = np.any([np.isnan(v).any(0) for v in recon_error.values()], axis=0)
        s = score.copy()
        s[no_truth] = FLOAT_NODATA
        put("error_score", s[None])
        if main_wrong is not None and "agreement" in wanted:
            agree = agreement(main_wrong, score, float(error_model["threshold"])).astype(np.uint8)
            agree[no_truth | unlabelled] = 0
            put("agreement", agree[None], 0)

    for name in layout.sensitivity:
        key = "sensitivity" if name == "main" else f"sensitivity_{name}"
        put(key, parts[f"sens_{name}"].astype(np.float32))


def _argmax(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index and value of the largest of ``p`` along axis 0 (the first on ties), class by class:
    several times faster than ``argmax`` along the outer axis of a (C, H, W) array."""
    idx = np.zeros(p.shape[1:], dtype=np.uint8 if len(p) < 256 else np.uint16)
    best = p[0].copy()
    for i in range(1, len(p)):
        higher = p[i] > best
        idx[higher] = i
        np.maximum(best, p[i], out=best)
    return idx, best


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over axis 1 of (B, C, H, W) logits."""
    e = logits - logits.max(axis=1, keepdims=True)
    np.exp(e, out=e)
    e /= e.sum(axis=1, keepdims=True)
    return e


def _any_cells(valid: np.ndarray, cell: int) -> np.ndarray:
    """Per cell of ``cell`` x ``cell`` pixels: does it hold any valid pixel."""
    h, w = valid.shape
    padded = np.zeros((-(-h // cell) * cell, -(-w // cell) * cell), dtype=bool)
    padded[:h, :w] = valid
    return padded.reshape(padded.shape[0] // cell, cell, padded.shape[1] // cell, cell).any(axis=(1, 3))
