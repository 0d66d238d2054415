"""Streaming tiled inference: (model file, raster, extent) to georeferenced output rasters.

The raster is read window by window with GDAL, in rows of overlapping tiles. Overlapping predictions
(class probabilities, reconstructions, regression values) are blended with a linear ramp over the
overlap, so no seam shows. Once a row of tiles is done, the rows of pixels no later tile touches are
final and are written; memory grows with the raster's width times the tile size, never with its height.
Every product comes from the same forward pass. Outputs are written under temporary names and renamed
only when the whole run succeeded, so a failed or cancelled run leaves nothing behind.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from osgeo import gdal
from tqdm import tqdm

from .data import denormalise, normalise
from .errors import CancelledError, RasterError
from .fileio import atomic_path
from .model import padded_size, resolve_device
from .modelfile import load_model
from .raster import (
    Grid,
    Window,
    check_georeferenced,
    create_geotiff,
    open_raster,
    read_window,
    set_classes,
)
from .spec import CLASS_NODATA, FLOAT_NODATA, ModelSpec

log = logging.getLogger("mtl_core")

PRODUCTS = ("main", "confidence", "entropy", "aux", "probabilities")
DEFAULT_PRODUCTS = ("main", "confidence", "entropy", "aux")


@dataclass
class PredictOptions:
    """How to tile and where to run. ``None`` sizes default from the model file."""

    tile: int | None = None
    overlap: int | None = None
    batch_size: int = 4
    device: str = "auto"
    extent: tuple[float, float, float, float] | None = None
    products: tuple[str, ...] = DEFAULT_PRODUCTS
    threads: int | None = None


@dataclass
class PredictResult:
    outputs: dict[str, Path] = field(default_factory=dict)
    device: str = "cpu"
    grid: Grid | None = None
    seconds: float = 0.0


def check_input(spec: ModelSpec, ds: gdal.Dataset) -> None:
    """Refuse a raster whose bands cannot be the model's inputs, saying what the model expects."""
    check_georeferenced(ds, "input raster")
    expected = [f"{m.name}/{b.name}" for m in spec.inputs for b in m.bands]
    if ds.RasterCount != len(expected):
        raise RasterError(
            f"the input raster has {ds.RasterCount} band(s) but the model expects {len(expected)}, in this "
            f"order: {', '.join(expected)}; build a raster with exactly these bands (QGIS: Raster > Miscellaneous "
            "> Build Virtual Raster, 'Place each input file into a separate band')"
        )
    for i in range(1, ds.RasterCount + 1):
        dt = ds.GetRasterBand(i).DataType
        if gdal.DataTypeIsComplex(dt):
            raise RasterError(f"band {i} of the input raster is complex ({gdal.GetDataTypeName(dt)}); use real values")


def extent_window(grid: Grid, extent: tuple[float, float, float, float] | None) -> Window:
    """Pixel window of an extent (in the raster's CRS), clipped to the raster; whole raster if None."""
    if extent is None:
        return 0, 0, grid.width, grid.height
    xmin, ymin, xmax, ymax = extent
    if not (xmax > xmin and ymax > ymin):
        raise RasterError(f"extent {extent} is empty; give xmin ymin xmax ymax with xmin < xmax and ymin < ymax")
    x0, dx, _, y0, _, dy = grid.transform
    c0 = max(0, math.floor((xmin - x0) / dx + 1e-9))
    c1 = min(grid.width, math.ceil((xmax - x0) / dx - 1e-9))
    r0 = max(0, math.floor((ymax - y0) / dy + 1e-9))
    r1 = min(grid.height, math.ceil((ymin - y0) / dy - 1e-9))
    if c1 <= c0 or r1 <= r0:
        b = grid.bounds
        raise RasterError(
            f"extent ({xmin}, {ymin}, {xmax}, {ymax}) does not intersect the raster, which covers "
            f"({b[0]}, {b[1]}, {b[2]}, {b[3]}) in its own CRS; give the extent in the raster's CRS"
        )
    return c0, r0, c1 - c0, r1 - r0


def sub_grid(grid: Grid, window: Window) -> Grid:
    x, y, w, h = window
    x0, dx, rx, y0, ry, dy = grid.transform
    return Grid(grid.wkt, (x0 + x * dx, dx, rx, y0 + y * dy, ry, dy), w, h)


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile offsets covering ``length``; the last tile ends exactly at the end."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def ramp(height: int, width: int, overlap: int) -> np.ndarray:
    """2-D blending weights: 1 in the middle, falling linearly to near 0 across the overlap."""

    def axis(n: int) -> np.ndarray:
        if overlap <= 0:
            return np.ones(n, dtype=np.float32)
        i = np.arange(n, dtype=np.float32) + 0.5
        return np.clip(np.minimum(i, n - i) / overlap, 1e-3, 1.0)

    return np.outer(axis(height), axis(width))


class _Outputs:
    """The output datasets, created under temporary names and renamed together at the end."""

    def __init__(self, spec: ModelSpec, grid: Grid, out_dir: Path, stem: str, products: tuple[str, ...],
                 stack: ExitStack) -> None:
        self.spec, self.datasets, self.final, self.temp = spec, {}, {}, {}
        seg = spec.task == "segmentation"
        plan: list[tuple[str, str, int, int, float]] = []
        if "main" in products:
            if seg:
                dtype = gdal.GDT_Byte if max(c.value for c in spec.classes) < 256 else gdal.GDT_UInt16
                plan.append(("main", f"{stem}_classes.tif", 1, dtype, CLASS_NODATA))
            else:
                plan.append(("main", f"{stem}_{spec.target.name}.tif", 1, gdal.GDT_Float32, FLOAT_NODATA))
        if seg:
            if "confidence" in products:
                plan.append(("confidence", f"{stem}_confidence.tif", 1, gdal.GDT_Float32, FLOAT_NODATA))
            if "entropy" in products:
                plan.append(("entropy", f"{stem}_entropy.tif", 1, gdal.GDT_Float32, FLOAT_NODATA))
            if "probabilities" in products:
                plan.append(("probabilities", f"{stem}_probabilities.tif", len(spec.classes), gdal.GDT_Float32,
                             FLOAT_NODATA))
        if "aux" in products:
            for m in spec.aux:
                plan.append((f"aux_{m.name}", f"{stem}_{m.name}_reconstructed.tif", len(m.bands), gdal.GDT_Float32,
                             FLOAT_NODATA))
        for key, name, bands, dtype, nodata in plan:
            tmp = stack.enter_context(atomic_path(out_dir / name))
            self.final[key], self.temp[key] = out_dir / name, tmp
            self.datasets[key] = create_geotiff(tmp, grid, bands, dtype, nodata)
        stack.callback(self.datasets.clear)  # close datasets before the temporary files are renamed or removed
        self._describe()

    def _describe(self) -> None:
        spec = self.spec
        if "main" in self.datasets and spec.task == "segmentation":
            band = self.datasets["main"].GetRasterBand(1)
            set_classes(band, [(c.value, c.name, c.color) for c in spec.classes])
            band.SetDescription("class")
        if "probabilities" in self.datasets:
            for i, c in enumerate(spec.classes, start=1):
                self.datasets["probabilities"].GetRasterBand(i).SetDescription(f"p({c.name})")
        for key, desc in (("confidence", "max class probability"), ("entropy", "entropy of class probabilities")):
            if key in self.datasets:
                self.datasets[key].GetRasterBand(1).SetDescription(desc)
        for m in spec.aux:
            ds = self.datasets.get(f"aux_{m.name}")
            if ds is not None:
                ds.SetMetadataItem("UNITS", m.units)
                for i, b in enumerate(m.bands, start=1):
                    ds.GetRasterBand(i).SetDescription(f"{b.name} (reconstructed)")
                    ds.GetRasterBand(i).SetUnitType(m.units)

    def write(self, key: str, data: np.ndarray, row: int) -> None:
        ds = self.datasets.get(key)
        if ds is not None:
            for i, band in enumerate(data, start=1):
                ds.GetRasterBand(i).WriteArray(band, 0, row)

    def finish(self) -> dict[str, Path]:
        for key, ds in self.datasets.items():
            method = "NEAREST" if key == "main" and self.spec.task != "regression" else "AVERAGE"
            levels = [f for f in (2, 4, 8, 16, 32, 64) if min(ds.RasterXSize, ds.RasterYSize) // f >= 64]
            if levels:
                ds.BuildOverviews(method, levels)
            ds.FlushCache()
        self.datasets.clear()
        return dict(self.final)


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
        raster_path: raster holding the model's input bands in order.
        out_dir: existing, writable output folder.
        opts: tiling, device, extent and products.
        progress: True for a progress bar, or a callback receiving the fraction done (0..1).
        cancelled: polled between batches; when it returns True the run stops and writes nothing.

    Raises:
        RasterError: band count, CRS, extent or output folder problems.
        CancelledError: the run was cancelled (no output file is left behind).
    """
    opts = opts or PredictOptions()
    start = time.perf_counter()
    unknown = set(opts.products) - set(PRODUCTS)
    if unknown:
        raise ValueError(f"unknown products {sorted(unknown)}; choose from {', '.join(PRODUCTS)}")
    device = resolve_device(opts.device)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    spec, model = load_model(model_path, device)
    if spec.task == "classification":
        raise RasterError("tiled prediction of patch-classification models is not supported yet; "
                          "use a segmentation or regression model")
    ds = open_raster(raster_path, "input raster")
    check_input(spec, ds)
    out_dir = Path(out_dir)
    grid = Grid.of(ds)
    win = extent_window(grid, opts.extent)
    out_grid = sub_grid(grid, win)

    tile = padded_size(opts.tile or max(256, spec.patch_size), model.divisor)
    overlap = opts.overlap if opts.overlap is not None else tile // 8
    if not 0 <= overlap < tile // 2 + 1:
        raise ValueError(f"overlap {overlap} must be between 0 and half the tile size ({tile // 2})")
    wx, wy, W, H = win
    th, tw = min(tile, padded_size(H, model.divisor)), min(tile, padded_size(W, model.divisor))
    ys, xs = tile_starts(H, th, th - overlap), tile_starts(W, tw, tw - overlap)
    weights = torch.from_numpy(ramp(th, tw, overlap)).to(device)
    bands = spec.input_bands
    seg = spec.task == "segmentation"
    n_main = len(spec.classes) if seg else 1
    n_aux = [len(m.bands) for m in spec.aux] if "aux" in opts.products else []
    channels = n_main + sum(n_aux)
    buf_h = 2 * th
    acc = torch.zeros((channels, buf_h, W), device=device)
    wsum = torch.zeros((buf_h, W), device=device)
    valid_buf = np.zeros((buf_h, W), dtype=bool)

    total = len(ys) * len(xs)
    bar = tqdm(total=total, unit="tile", desc="predict", disable=progress is not True)
    done = 0
    result = PredictResult(device=str(device), grid=out_grid)
    with ExitStack() as stack:
        outputs = _Outputs(spec, out_grid, out_dir, Path(raster_path).stem, opts.products, stack)
        base = 0
        for k, y in enumerate(ys):
            for b0 in range(0, len(xs), opts.batch_size):
                if cancelled is not None and cancelled():
                    raise CancelledError("prediction cancelled; no output was written")
                batch_x = xs[b0:b0 + opts.batch_size]
                tiles, valids = [], []
                for x in batch_x:
                    w = (wx + x, wy + y, min(tw, W - x), min(th, H - y))
                    data, valid = read_window(ds, list(range(1, len(bands) + 1)), w)
                    if spec.input_nodata is not None:
                        valid &= (data != spec.input_nodata).all(axis=0)
                    norm = normalise(data, valid, bands)
                    pad = np.zeros((len(bands), th, tw), dtype=np.float32)
                    pad[:, :w[3], :w[2]] = norm
                    tiles.append(pad)
                    valids.append(valid)
                with torch.no_grad():
                    out = model(torch.from_numpy(np.stack(tiles)).to(device))
                main = torch.softmax(out["main"], 1) if seg else out["main"]
                parts = [main] + ([out["aux"][m.name] for m in spec.aux] if n_aux else [])
                stacked = torch.cat(parts, 1) * weights
                r = y - base
                for i, x in enumerate(batch_x):
                    h, w_ = valids[i].shape
                    acc[:, r:r + h, x:x + w_] += stacked[i, :, :h, :w_]
                    wsum[r:r + h, x:x + w_] += weights[:h, :w_]
                    valid_buf[r:r + h, x:x + w_] |= valids[i]
                done += len(batch_x)
                bar.update(len(batch_x))
                if callable(progress):
                    progress(done / total)
            end = ys[k + 1] if k + 1 < len(ys) else H
            n = end - base
            self_rows = (acc[:, :n] / wsum[:n].clamp_min(1e-12)).cpu().numpy()
            _write_rows(outputs, spec, self_rows, valid_buf[:n], base, n_main, n_aux)
            acc = torch.roll(acc, -n, dims=1)
            wsum = torch.roll(wsum, -n, dims=0)
            acc[:, buf_h - n:] = 0
            wsum[buf_h - n:] = 0
            valid_buf = np.roll(valid_buf, -n, axis=0)
            valid_buf[buf_h - n:] = False
            base = end
        result.outputs = outputs.finish()
    bar.close()
    result.seconds = time.perf_counter() - start
    log.info("predicted %dx%d px on %s in %.1f s", W, H, device, result.seconds)
    return result


def _write_rows(outputs: _Outputs, spec: ModelSpec, rows: np.ndarray, valid: np.ndarray, row: int,
                n_main: int, n_aux: list[int]) -> None:
    """Turn blended channels of finished rows into each product and write them."""
    main = rows[:n_main]
    invalid = ~valid
    if spec.task == "segmentation":
        values = np.array([c.value for c in spec.classes])
        classes = values[main.argmax(0)].astype(np.uint16)
        classes[invalid] = CLASS_NODATA
        dtype = np.uint8 if values.max() < 256 else np.uint16
        outputs.write("main", classes.astype(dtype)[None], row)
        conf = main.max(0)
        ent = -(main * np.log(np.clip(main, 1e-12, 1.0))).sum(0)
        for key, arr in (("confidence", conf[None]), ("entropy", ent[None]), ("probabilities", main)):
            arr = arr.astype(np.float32)
            arr[:, invalid] = FLOAT_NODATA
            outputs.write(key, arr, row)
    else:
        t = spec.target
        arr = (main * t.std + t.mean).astype(np.float32)
        arr[:, invalid] = FLOAT_NODATA
        outputs.write("main", arr, row)
    off = n_main
    for m, k in zip(spec.aux, n_aux):
        arr = denormalise(rows[off:off + k], m.bands).astype(np.float32)
        arr[:, invalid] = FLOAT_NODATA
        outputs.write(f"aux_{m.name}", arr, row)
        off += k
