"""The output set: one GeoTIFF per layer, overviews filled as rows arrive, renamed together when the run succeeds.

Outputs are written under temporary names and renamed only when the whole run succeeded: a failed or
cancelled run leaves nothing behind. With ``cog``, each is translated to a Cloud Optimized GeoTIFF at
the end, reusing the overviews written along the way.
"""

from __future__ import annotations

import html
import logging
import os
import sys
from collections.abc import Callable, Collection
from contextlib import ExitStack
from pathlib import Path
from xml.etree import ElementTree

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
        overview_grids: the (pixel, cell) grids whose overview levels the files get, when not their own: a shard of a
            ``vrt`` run takes the whole run's, so the shards' overviews are the mosaic's.
        mosaics: keys of layers written as a VRT over files made elsewhere (a ``vrt`` run's shards, given to
            :meth:`mosaic`): ``<stem>_<layer suffix>.vrt``, renamed with the others.
    """

    def __init__(self, layers: list[Layer], grid: Grid, cell_grid: Grid, out_dir: Path, stem: str, cog: bool,
                 stack: ExitStack, inputs: list[str] = (), overwrite: bool = False, scratch: bool = False,
                 overview_grids: tuple[Grid, Grid] | None = None, mosaics: Collection[str] = ()) -> None:
        self.layers = {layer.key: layer for layer in layers}
        self.datasets: dict[str, gdal.Dataset] = {}
        self.final: dict[str, Path] = {}
        self.temp: dict[str, Path] = {}  # the atomic temporary each layer is renamed from
        self.overviews: dict[str, Overviews] = {}
        self.cog, self.mosaics = cog, set(mosaics)
        names = {layer.key: f"{stem}_{layer.suffix}.{'vrt' if layer.key in self.mosaics else 'tif'}"
                 for layer in layers}
        check_outputs([out_dir / name for name in names.values()], inputs, overwrite)
        stack.enter_context(run_lock(out_dir, stem))
        for layer in layers:
            final = out_dir / names[layer.key]
            tmp = stack.enter_context(atomic_path(final))
            path = tmp
            self.final[layer.key], self.temp[layer.key] = final, tmp
            if layer.key in self.mosaics:  # its VRT is written by mosaic(), and closed as the others
                stack.callback(self.close, layer.key)
                continue
            if cog:  # write a plain GeoTIFF first, translate to COG into the atomic temporary at the end
                path = tmp.with_name(tmp.name + ".gtiff.tif")
                stack.callback(path.unlink, missing_ok=True)
                stack.callback(Path(str(path) + ".aux.xml").unlink, missing_ok=True)  # its PAM metadata
            # Closed before its temporaries are renamed or removed (the stack unwinds in reverse). No local name
            # holds a dataset in the main thread's code, so a traceback (a signal) keeps none open past this.
            stack.callback(self.close, layer.key)
            self.datasets[layer.key] = create_geotiff(path, cell_grid if layer.cells else grid, layer.bands,
                                                      layer.dtype, layer.nodata, predictor=layer.packed,
                                                      compress=not scratch)
            _describe(self.datasets[layer.key], layer)
            if not scratch:
                whole = overview_grids[layer.cells] if overview_grids else None
                self.overviews[layer.key] = Overviews(self.datasets[layer.key], layer.fill, layer.categorical,
                                                      layer.encode, whole and (whole.width, whole.height))

    def mosaic(self, key: str, files: list[str], folder: Path) -> None:
        """Write a mosaic layer: a VRT over ``files`` side by side (placed by their georeferencing, paths relative to
        the VRT), described as the layer declares, with their overviews as its own: one VRT per level in ``folder``
        (GDAL's implicit overviews of a VRT round its sizes down and stop at 128 px, a single run's files do not)."""
        tmp = self.temp[key]
        try:
            ds = gdal.BuildVRT(str(tmp), files)
            _describe(ds, self.layers[key])
            levels = _overview_vrts(files, folder / f"{self.final[key].stem}.ovr", ds)
            del ds  # written
            bands = tmp.read_text().split("</VRTRasterBand>")  # the n-th closes band n
            for i in range(len(bands) - 1):
                bands[i] += "".join(f'  <Overview><SourceFilename relativeToVRT="1">'
                                    f'{html.escape(os.path.relpath(level, tmp.parent))}</SourceFilename>'
                                    f'<SourceBand>{i + 1}</SourceBand></Overview>\n  ' for level in levels)
            tmp.write_text("</VRTRasterBand>".join(bands))
            self.datasets[key] = gdal.Open(str(tmp))
        except (RuntimeError, OSError) as exc:
            raise write_error(self.final[key], exc) from exc

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
                if self.cog and key not in self.mosaics:  # the COG driver reuses the overviews written along the way
                    gdal.Translate(str(self.temp[key]), self.datasets[key], format="COG", creationOptions=[
                        "COMPRESS=DEFLATE", "BIGTIFF=IF_SAFER", "OVERVIEWS=FORCE_USE_EXISTING"])
            except RuntimeError as exc:
                raise write_error(self.final[key], exc) from exc
            del self.datasets[key]  # closes it
        return dict(self.final)


def _overview_vrts(files: list[str], stem: Path, mosaic: gdal.Dataset) -> list[Path]:
    """Per overview level of ``files`` (the shards of ``mosaic``, made with its overview levels): a VRT
    ``<stem>.<factor>x.vrt`` setting those files' overviews side by side, sized as a single file's level."""
    x0, dx = mosaic.GetGeoTransform()[:2]
    shards = [gdal.Open(f) for f in files]
    cols = [round((ds.GetGeoTransform()[0] - x0) / dx) for ds in shards]  # where each begins in the mosaic
    out = []
    for level, factor in enumerate(overview_factors(mosaic.RasterXSize, mosaic.RasterYSize)):
        root = ElementTree.Element("VRTDataset", rasterXSize=str(-(-mosaic.RasterXSize // factor)),
                                   rasterYSize=str(-(-mosaic.RasterYSize // factor)))
        for b in range(1, mosaic.RasterCount + 1):
            source_band = mosaic.GetRasterBand(b)
            band = ElementTree.SubElement(root, "VRTRasterBand", dataType=gdal.GetDataTypeName(source_band.DataType),
                                          band=str(b))
            if source_band.GetNoDataValue() is not None:
                ElementTree.SubElement(band, "NoDataValue").text = repr(source_band.GetNoDataValue())
            for path, ds, col in zip(files, shards, cols):
                ovr = ds.GetRasterBand(b).GetOverview(level)
                source = ElementTree.SubElement(band, "SimpleSource")
                ElementTree.SubElement(source, "SourceFilename", relativeToVRT="1").text = \
                    os.path.relpath(path, stem.parent)
                options = ElementTree.SubElement(source, "OpenOptions")
                ElementTree.SubElement(options, "OOI", key="OVERVIEW_LEVEL").text = str(level)
                ElementTree.SubElement(source, "SourceBand").text = str(b)
                size = {"xSize": str(ovr.XSize), "ySize": str(ovr.YSize)}
                ElementTree.SubElement(source, "SrcRect", xOff="0", yOff="0", **size)
                ElementTree.SubElement(source, "DstRect", xOff=str(col // factor), yOff="0", **size)
        path = Path(f"{stem}.{factor}x.vrt")
        ElementTree.ElementTree(root).write(path)
        out.append(path)
    return out


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
                 encode: Callable[[np.ndarray], np.ndarray] = lambda a: a, size: tuple[int, int] | None = None) -> None:
        self.ds, self.nodata, self.categorical, self.encode = ds, nodata, categorical, encode
        levels = overview_factors(*(size or (ds.RasterXSize, ds.RasterYSize)))  # size: of the whole, for a part
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
