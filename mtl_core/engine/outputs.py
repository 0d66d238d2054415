"""The output set: one GeoTIFF per layer, overviews filled as rows arrive, renamed together when the run succeeds.

Outputs are written under temporary names and renamed only when the whole run succeeded: a failed or
cancelled run leaves nothing behind. With ``cog``, each is translated to a Cloud Optimized GeoTIFF at
the end, reusing the overviews written along the way.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import numpy as np
from osgeo import gdal

from ..io.fileio import atomic_path, check_outputs, run_lock, write_error
from ..io.raster import Grid, create_geotiff, overview_factors, set_classes
from .product import Layer

log = logging.getLogger(__name__)


class Outputs:
    """The output datasets of a run's layers, created under temporary names and renamed together at the end.

    Args:
        layers: the layers to write.
        grid: the pixel grid of the outputs; ``cell_grid`` that of cell layers (patch classification).
        out_dir: existing output folder; files are ``<stem>_<layer suffix>.tif``.
        stem: the input raster's file stem.
        cog: write Cloud Optimized GeoTIFFs.
        stack: closes and removes the temporaries if the run fails.
        inputs: files the run reads; no output may replace one.
        overwrite: replace existing outputs (else they are refused before anything is computed).
        scratch: files read back once (a distributed run's shards): uncompressed, without overviews (the merged
            file gets them).
    """

    def __init__(self, layers: list[Layer], grid: Grid, cell_grid: Grid, out_dir: Path, stem: str, cog: bool,
                 stack: ExitStack, inputs: list[str] = (), overwrite: bool = False, scratch: bool = False) -> None:
        self.layers = {layer.key: layer for layer in layers}
        self.datasets: dict[str, gdal.Dataset] = {}
        self.final: dict[str, Path] = {}
        self.temp: dict[str, Path] = {}  # the atomic temporary each layer is renamed from
        self.overviews: dict[str, Overviews] = {}
        self.cog = cog
        check_outputs([out_dir / f"{stem}_{layer.suffix}.tif" for layer in layers], inputs, overwrite)
        stack.enter_context(run_lock(out_dir, stem))
        for layer in layers:
            final = out_dir / f"{stem}_{layer.suffix}.tif"
            tmp = stack.enter_context(atomic_path(final))
            path = tmp
            if cog:  # write a plain GeoTIFF first, translate to COG into the atomic temporary at the end
                path = tmp.with_name(tmp.name + ".gtiff.tif")
                stack.callback(path.unlink, missing_ok=True)
                stack.callback(Path(str(path) + ".aux.xml").unlink, missing_ok=True)  # its PAM metadata
            self.final[layer.key], self.temp[layer.key] = final, tmp
            # Closed before its temporaries are renamed or removed (the stack unwinds in reverse). No local name
            # holds a dataset in the main thread's code, so a traceback (a signal) keeps none open past this.
            stack.callback(self.close, layer.key)
            self.datasets[layer.key] = create_geotiff(path, cell_grid if layer.cells else grid, layer.bands,
                                                      layer.dtype, layer.nodata, predictor=layer.packed,
                                                      compress=not scratch)
            _describe(self.datasets[layer.key], layer)
            if not scratch:
                self.overviews[layer.key] = Overviews(self.datasets[layer.key], layer.fill, layer.categorical,
                                                      layer.encode)

    def write(self, key: str, data: np.ndarray, row: int, col: int = 0) -> None:
        """Write a computed block (float32 for packed layers: packed here, its overviews averaged before)."""
        ds = self.datasets[key]
        for i, band in enumerate(self.layers[key].encode(data), start=1):
            ds.GetRasterBand(i).WriteArray(band, col, row)
        if key in self.overviews:
            self.overviews[key].push(data, col, last=row + data.shape[-2] == ds.RasterYSize)

    def read(self, key: str, window: tuple[int, int, int, int]) -> np.ndarray:
        """A window of a layer written so far (for halo products), as computed (unpacked), nodata kept."""
        bands = range(1, self.datasets[key].RasterCount + 1)
        stored = np.stack([self.datasets[key].GetRasterBand(i).ReadAsArray(*window) for i in bands])
        return self.layers[key].decode(stored)

    def close(self, key: str) -> None:
        """Drop the references to a layer's dataset, which closes it (after a failure: its temporaries are removed
        next, so a write error while closing is only logged, not raised from a destructor)."""
        self.overviews.pop(key, None)
        if key not in self.datasets:
            return
        hook = sys.unraisablehook  # GDAL's bindings raise close errors from the datasets' destructors
        sys.unraisablehook = lambda u: log.debug("closing a failed run's output %s: %s", key, u.exc_value)
        try:
            del self.datasets[key]
        finally:
            sys.unraisablehook = hook

    def finish(self) -> dict[str, Path]:
        """Flush and close every output (the caller's atomic paths then rename them).

        Raises:
            OutputError: a write failed (a full disk shows here: GDAL reports it when blocks are flushed).
        """
        self.overviews.clear()
        # No local name holds a dataset: if this fails (or a signal lands here), the traceback keeps none alive, so
        # close() really closes them all before the temporaries (and GDAL's .aux.xml sidecars) are removed.
        for key in list(self.datasets):
            try:
                self.datasets[key].FlushCache()  # a write error raises here, not when the dataset is dropped
                if self.cog:  # the COG driver reuses the overviews written along the way
                    gdal.Translate(str(self.temp[key]), self.datasets[key], format="COG", creationOptions=[
                        "COMPRESS=DEFLATE", "BIGTIFF=IF_SAFER", "OVERVIEWS=FORCE_USE_EXISTING"])
            except RuntimeError as exc:
                raise write_error(self.final[key], exc) from exc
            del self.datasets[key]  # closes it
        return dict(self.final)


def _describe(ds: gdal.Dataset, layer: Layer) -> None:
    """Band descriptions, units and colour table of a layer, from its declaration."""
    names = layer.band_names or (layer.description,)
    for i, name in enumerate(names[:ds.RasterCount], start=1):
        if name:
            ds.GetRasterBand(i).SetDescription(name)
    if layer.units:
        ds.SetMetadataItem("UNITS", layer.units)
        for i in range(1, ds.RasterCount + 1):
            ds.GetRasterBand(i).SetUnitType(layer.units)
    if layer.categories:
        set_classes(ds.GetRasterBand(1), list(layer.categories))
    if layer.packed:
        for i in range(ds.RasterCount):
            scale, offset = layer.band_scale(i)
            ds.GetRasterBand(i + 1).SetScale(scale)
            ds.GetRasterBand(i + 1).SetOffset(offset)


class Overviews:
    """Overview levels (2x, 4x, ...) of an output, filled as its rows arrive instead of in a pass at the end.

    Each level halves the one below: the mean of the valid pixels of each 2 x 2 block (nodata where
    none is valid), or its top-left pixel for categorical rasters; packed layers are averaged as computed
    (float) and packed (``encode``) when written. Rows arrive in strips, per column
    chunk (starting at a multiple of 256 px); rows that do not yet make a whole block wait in a
    carry-over of at most one row per level and chunk.
    """

    def __init__(self, ds: gdal.Dataset, nodata: float, categorical: bool,
                 encode: Callable[[np.ndarray], np.ndarray] = lambda a: a) -> None:
        self.ds, self.nodata, self.categorical, self.encode = ds, nodata, categorical, encode
        levels = overview_factors(ds.RasterXSize, ds.RasterYSize)
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
        # Pairs of rows first (contiguous), then pairs of columns: several times faster than summing a
        # (b, h/2, 2, w/2, 2) view over its small axes.
        valid = data != self.nodata
        if valid.all():  # the usual case
            rows = data[:, ::2] + data[:, 1::2]
            quarter = rows[:, :, ::2] + rows[:, :, 1::2]
            quarter *= 0.25
            return quarter.astype(data.dtype, copy=False)
        rows = np.where(valid, data, 0).astype(np.float32, copy=False)
        rows = rows[:, ::2] + rows[:, 1::2]
        total = rows[:, :, ::2] + rows[:, :, 1::2]
        pairs = valid.view(np.uint8)[:, ::2] + valid.view(np.uint8)[:, 1::2]
        count = pairs[:, :, ::2] + pairs[:, :, 1::2]
        mean = total / np.maximum(count, 1)
        return np.where(count > 0, mean, self.nodata).astype(data.dtype, copy=False)

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
            for i, band in enumerate(self.encode(data), start=1):
                self.ds.GetRasterBand(i).GetOverview(level).WriteArray(band, col >> (level + 1), rows[level])
            rows[level] += data.shape[1]
