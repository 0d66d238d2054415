"""The engine's run: (model file, raster, extent) to georeferenced output rasters.

:func:`predict` wires the parts: the tiling plan (:mod:`.tiling`), the readers (:mod:`.inputs`), the
runtime (:mod:`.runtime`), blending (:mod:`.blend`), the products (:mod:`.products`) and the output
set (:mod:`.outputs`). The main thread only runs the model. A reader thread prepares the next batch of
tiles; a writer thread blends each batch and, once rows are finished, turns them into every product's
layers, writes them and hands them to an optional statistics sink (``mtl explain`` computes its report
this way, without reading anything back). Memory depends on the chunk and tile sizes (plus the kept
seam columns: ``overlap`` x 4 bytes per channel and raster row), not on the raster's width. Every
product comes from the same forward pass; products with a halo are computed from their source layer
once the stream is done.

Sensitivity: per input band, how much the class probabilities (total variation) and each
reconstruction (mean absolute change, normalised units) move when that band is replaced by its
training mean (one more forward pass per input band).
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from ..errors import CancelledError, ModelFileError
from ..io.raster import Grid, open_raster
from ..norm import normalise
from ..spec import ModelSpec
from .blend import Blender, Layout
from .inputs import Mask, Truth, check_input, read_input, run_inputs
from .outputs import Outputs
from .product import Available, Block, Layer, Product
from .products import default_names, plan_layers
from .runtime import Backend, Runner, open_runner, output_channels
from .tiling import Plan, check_memory, extent_window, sub_grid

log = logging.getLogger(__name__)

DEFAULT_PRODUCTS = default_names()
#: Rows (and columns, x 8) of the windows a halo product is computed in.
HALO_WINDOW = 256


class Sink(Protocol):
    """Receives the keys of the layers a run writes, then every finished block: the layers as written
    (nodata set) and the block they came from (writer thread)."""

    def start(self, keys: list[str]) -> None: ...

    def add(self, layers: dict[str, np.ndarray], block: Block) -> None: ...

    def merge(self, other: Sink) -> None:
        """Add what another copy received from other blocks (a sharded run's shards; needed only there)."""


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
        products: which products to write (names of :data:`mtl_core.engine.products.REGISTRY`);
            products that need ground truth the run does not have are skipped.
        aux_truth: modality name -> raster of the real auxiliary bands (another grid is warped onto the input's).
        aux_bands: modality name -> the raster's bands (1-based) holding its bands, in order; default by band
            description, else bands 1..K.
        labels: reference labels of the main task: a raster (warped onto the input grid when needed) or a vector
            layer of polygons (rasterised on the input grid; ``labels_field`` names the class field).
        labels_band: its band holding the labels; default the band the model was trained on (recorded in
            the model file), else 1.
        cog: write Cloud Optimized GeoTIFFs instead of tiled GeoTIFFs.
        float32: write every continuous layer as float32 instead of packed integers with scale/offset
            (confidence, entropy, probabilities, error score, probability of being wrong: Byte in 254 steps;
            reconstruction error: UInt16 in steps of 0.01 training std; reconstructions: Int16 in steps of
            0.01 training std around the band's mean), e.g. for tools that ignore a GeoTIFF's scale/offset.
        overwrite: replace outputs that already exist in the folder (never the run's own inputs);
            without it an existing output is refused before anything is computed.
        vrt: with ``workers`` or ``scheduler``: write each layer as a VRT over its shards' files (GeoTIFFs, COGs
            with ``cog``) in a folder ``<stem>_shards-<id>`` beside it, instead of copying the shards into one file.
        workers: run on a Dask LocalCluster of this many processes on this machine (:mod:`.distributed`):
            the raster is split into shards along the chunk grid and the outputs equal a single run's.
        scheduler: address of a running Dask scheduler to run the shards on instead (its workers must read the
            model, the rasters and the output folder under the same paths).
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
    labels_field: str | None = None
    aux_bands: dict[str, list[int]] | None = None
    cog: bool = False
    float32: bool = False
    overwrite: bool = False
    vrt: bool = False
    workers: int | None = None
    scheduler: str | None = None


@dataclass
class PredictResult:
    outputs: dict[str, Path] = field(default_factory=dict)
    device: str = "cpu"
    grid: Grid | None = None
    seconds: float = 0.0
    tiles: int = 0
    skipped_tiles: int = 0
    spec: ModelSpec | None = None
    warped: list[str] = field(default_factory=list)  # ground-truth rasters warped onto the input grid
    warnings: list[str] = field(default_factory=list)  # things the user should know (also logged)
    seen: np.ndarray | None = None  # per input band: sum of the normalised valid values, and their count
    timings: dict[str, Any] = field(default_factory=dict)  # a sharded run: its phases (s), per-shard seconds, tiles
    shards: Path | None = None  # a sharded run with ``vrt``: the folder of shard files its VRT outputs reference


def chosen_layers(spec: ModelSpec, opts: PredictOptions) -> list[tuple[Product, Layer]]:
    """The (product, layer) pairs a run writes: the chosen products the run's ground truth allows, float32 on
    request."""
    chosen = plan_layers(spec, opts.products, Available.of(spec, opts.aux_truth or {}, bool(opts.labels)))
    return [(p, layer.unpacked()) for p, layer in chosen] if opts.float32 else chosen


def _layout(spec: ModelSpec, products: list[Product]) -> Layout:
    """The blended channels the chosen products need."""
    channels = output_channels(spec)  # what the model answers: main, then aux_<name>
    return Layout(
        main=channels["main"],
        aux={m.name: channels[f"aux_{m.name}"] for m in spec.aux} if any(p.reconstructions for p in products) else {},
        sensitivity={n: spec.in_channels for n in ["main"] + [m.name for m in spec.aux]}
        if any(p.sensitivity for p in products) else {},
    )


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over axis 1 of (B, C, H, W) logits."""
    e = logits - logits.max(axis=1, keepdims=True)
    np.exp(e, out=e)
    e /= e.sum(axis=1, keepdims=True)
    return e


class _Model:
    """The forward passes of a batch and the blended channels they give."""

    def __init__(self, spec: ModelSpec, runner, layout: Layout) -> None:
        self.spec, self.runner, self.layout = spec, runner, layout

    def run(self, x: np.ndarray) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """The tiles as they are, then, for sensitivity, with each input band in turn replaced by its
        training mean (0 in normalised units). Runs on the main thread."""
        outs = [self.runner(x)]
        for b in range(self.spec.in_channels if self.layout.sensitivity else 0):
            xb = x.copy()
            xb[:, b] = 0.0
            outs.append(self.runner(xb))
        return outs

    def _main(self, raw: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        if self.spec.task == "classification":
            raw = np.broadcast_to(raw[:, :, None, None], raw.shape + shape)
        return _softmax(raw) if self.spec.task != "regression" else raw

    def channels(self, outs: list[tuple[np.ndarray, dict[str, np.ndarray]]], shape: tuple[int, int]) -> np.ndarray:
        """(B, channels, h, w): class probabilities (or value), reconstructions, sensitivities."""
        (raw, aux), perturbed = outs[0], outs[1:]
        main = self._main(raw, shape)
        parts = [main] + [aux[n] for n in self.layout.aux]
        if perturbed:
            classes = self.spec.task != "regression"
            sens_main, sens_aux = [], {m.name: [] for m in self.spec.aux}
            for raw_b, aux_b in perturbed:
                delta = np.abs(self._main(raw_b, shape) - main)
                sens_main.append(delta.sum(1, keepdims=True) / 2 if classes else delta)
                for name in sens_aux:
                    sens_aux[name].append(np.abs(aux_b[name] - aux[name]).mean(1, keepdims=True))
            parts += [np.concatenate(sens_main, 1)] + [np.concatenate(v, 1) for v in sens_aux.values()]
        return np.concatenate(parts, 1) if len(parts) > 1 else main


def predict(
    model_path: str | os.PathLike,
    raster_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    opts: PredictOptions | None = None,
    progress: bool | Callable[[float], None] = False,
    cancelled: Callable[[], bool] | None = None,
    sink: Sink | None = None,
    opened: tuple[ModelSpec, Runner] | None = None,
    shard: tuple[int, int] | None = None,
) -> PredictResult:
    """Run a model over a raster and write every requested product.

    Args:
        model_path: model file.
        raster_path: raster holding the model's input bands.
        out_dir: existing, writable output folder.
        opts: tiling, device, extent, mask, band mapping, products and ground truth.
        progress: True for a progress bar, or a callback receiving the fraction done (0..1).
        cancelled: polled between batches; when it returns True the run stops and writes nothing.
        sink: receives every finished block (writer thread), e.g. the statistics of a report.
        opened: the model already opened with :func:`~mtl_core.engine.runtime.open_runner` (not opened again).
        shard: (first, end) chunks of the plan to run alone, as one shard of a distributed run
            (:mod:`.distributed`, whose ``predict`` is the one that reads ``opts.workers`` and ``opts.scheduler``):
            the outputs cover those chunks' columns, are float32 where packed, have no overviews and no halo
            products; the caller merges the shards. With ``opts.vrt`` they are packed, compressed, and have the
            whole run's overview levels (the shards of a VRT mosaic).

    Raises:
        ConfigError: an unknown product, or tiling options the engine cannot use.
        RasterError: band count, CRS, grid, extent or mask problems.
        OutputError: the outputs cannot be written (or would replace a file without ``overwrite``).
        CancelledError: the run was cancelled (no output file is left behind).
    """
    return Prediction(model_path, raster_path, out_dir, opts or PredictOptions(), sink, opened, shard).run(
        progress, cancelled)


class Prediction:
    """One run of :func:`predict`, as a pipeline: built (model, raster, plan, products), then :meth:`run` reads
    batches of tiles (:meth:`read_batch`, reader thread), runs the model (main thread), blends and writes finished
    rows (:meth:`blend`, :meth:`write_block`, writer thread), then the halo products and the outputs' ending
    (:meth:`finish`)."""

    def __init__(self, model_path, raster_path, out_dir, opts: PredictOptions, sink: Sink | None = None,
                 opened: tuple[ModelSpec, Runner] | None = None, shard: tuple[int, int] | None = None) -> None:
        self.model_path, self.raster_path, self.out_dir, self.opts = model_path, raster_path, out_dir, opts
        self.sink, self.shard = sink, shard
        self.start = time.perf_counter()
        self.spec, self.runner = spec, runner = opened or open_runner(model_path, opts.backend, opts.device,
                                                                      opts.threads)
        self.chosen = chosen_layers(spec, opts)
        self.ds = open_raster(raster_path, "input raster")
        self.mapping = check_input(spec, self.ds, opts.bands)
        self.grid = grid = Grid.of(self.ds)
        self.win = extent_window(grid, opts.extent)
        self.truth = Truth(spec, grid, opts.aux_truth or {}, opts.labels, opts.labels_band, opts.aux_bands,
                           opts.labels_field)
        self.mask = Mask(opts.mask, grid) if opts.mask else None
        wx, wy, W, H = self.win
        plan = Plan.of(spec, W, H, runner.divisor, opts.tile, opts.overlap, opts.chunk, opts.batch_size)
        self.lo, self.hi = 0, W  # the columns this run writes (a shard's chunks, else the whole window)
        if shard is not None:
            plan = plan.shard(*shard)
            self.lo, self.hi = plan.bounds[shard[0]], plan.bounds[shard[1]]
            self.chosen = [(p, layer if opts.vrt else layer.unpacked()) for p, layer in self.chosen if not p.halo]
        self.plan = plan
        self.out_win = (wx + self.lo, wy, self.hi - self.lo, H)
        self.out_grid = sub_grid(grid, self.out_win)
        self.streamed = list(dict.fromkeys(p for p, _ in self.chosen if not p.halo))
        self.model = _Model(spec, runner, _layout(spec, self.streamed))
        check_memory(self.model.layout.channels, plan, opts.batch_size, H)
        self.blender = Blender(plan, self.model.layout.channels, H)
        self.seen = np.zeros((2, len(spec.input_bands)))  # sum of the normalised valid input values per band, count

    def read_batch(self, _: int, k: int, tiles: list[tuple[int, int]]) -> tuple[np.ndarray | None, list, list[int]]:
        """Read, mask and normalise one batch of tiles (reader thread): the stacked tiles that hold valid
        pixels (None if none does), every tile's validity, and which tiles were stacked."""
        wx, wy, W, H = self.win
        bands = self.spec.input_bands
        y, h = self.plan.rows[k]
        data_tiles, valids = [], []
        for x, w in tiles:
            window = (wx + x, wy + y, min(w, W - x), min(h, H - y))
            data, valid = read_input(self.ds, self.spec, self.mapping, window)
            if self.mask is not None:
                valid &= self.mask.read(window)
            pad = np.zeros((len(bands), h, w), dtype=np.float32)
            pad[:, :window[3], :window[2]] = normalise(data, valid, bands)
            self.seen[0] += pad.sum(axis=(1, 2))  # normalise left invalid pixels (and the padding) at 0
            self.seen[1] += valid.sum()
            data_tiles.append(pad)
            valids.append(valid)
        keep = [i for i, v in enumerate(valids) if v.any()]
        x = np.stack([data_tiles[i] for i in keep]) if keep else None
        return x, valids, keep

    def write_block(self, outputs: Outputs, rows: np.ndarray, valid: np.ndarray, row: int, col: int) -> None:
        """Every streamed product's layers of finished rows, written and handed to the sink (writer thread);
        in pieces 512 px wide (a multiple of the overview blocks), so the products' temporaries stay small."""
        if col < self.lo:
            return  # a shard's seam tiles of the chunk before it: only what they put into its own columns counts
        wx, wy = self.win[:2]
        cell, lo = self.plan.cell, self.lo
        width = rows.shape[2]
        piece = width if cell > 1 else 512
        for p0 in range(0, width, piece):
            p1 = min(p0 + piece, width)
            block = Block(self.spec, self.model.layout.split(rows[:, :, p0:p1]), valid[:, p0:p1],
                          (wx + col + p0, wy + row, p1 - p0, rows.shape[1]), self.truth, cell)
            written = {}
            for product in self.streamed:
                for key, arr in product.compute(block).items():
                    layer = outputs.layers.get(key)
                    if layer is None:
                        continue
                    if layer.cells:
                        arr[..., ~block.cell_valid] = layer.fill
                        outputs.write(key, arr, row // cell, (col - lo + p0) // cell)
                    else:
                        arr[..., ~block.valid] = layer.fill
                        outputs.write(key, arr, row, col - lo + p0)
                    written[key] = arr
            if self.sink is not None:
                self.sink.add(written, block)

    def blend(self, outputs: Outputs, b: int, valids: list[np.ndarray], keep: list[int], outs: list | None) -> None:
        """Blend a batch and write the rows it finished (writer thread, batch after batch)."""
        c, k, tiles = self.plan.batches[b]
        if outs is not None:
            self.blender.add(b, valids, keep, self.model.channels(outs, (self.plan.rows[k][1], tiles[0][1])))
        for rows, valid, row, col in self.blender.finished(b):
            self.write_block(outputs, rows, valid, row, col)

    def _outputs(self, stack: ExitStack) -> Outputs:
        opts, grid, cell = self.opts, self.grid, self.plan.cell
        part = self.shard is not None and not opts.vrt  # a shard to be copied into the run's files, else final
        return Outputs([layer for _, layer in self.chosen], self.out_grid, sub_grid(grid, self.out_win, cell),
                       Path(self.out_dir), Path(self.raster_path).stem, opts.cog and not part, stack,
                       run_inputs(self.raster_path, opts.aux_truth, opts.labels, opts.mask), opts.overwrite,
                       scratch=part, overview_grids=(sub_grid(grid, self.win), sub_grid(grid, self.win, cell)))

    def run(self, progress: bool | Callable[[float], None] = False,
            cancelled: Callable[[], bool] | None = None) -> PredictResult:
        """Every batch through the model, the outputs written; the result."""
        plan = self.plan
        result = PredictResult(device=self.runner.device, grid=self.out_grid, tiles=plan.tiles, spec=self.spec,
                               warped=self.truth.warped)
        bar = tqdm(total=result.tiles, unit="tile", desc="predict", disable=progress is not True)
        done = 0
        with ExitStack() as stack:
            outputs = self._outputs(stack)
            if self.sink is not None:
                self.sink.start(list(outputs.layers))
            reader = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="mtl-read"))
            writer = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="mtl-write"))
            # The main thread only runs the model: reading happens one batch ahead, blending and writing
            # behind it, at most two batches behind (memory stays bounded; a writer error surfaces here).
            behind: deque[Future] = deque()
            ahead = reader.submit(self.read_batch, *plan.batches[0])
            for b, (_, _, tiles) in enumerate(plan.batches):
                if cancelled is not None and cancelled():
                    raise CancelledError("prediction cancelled; no output was written")
                x, valids, keep = ahead.result()
                if b + 1 < len(plan.batches):
                    ahead = reader.submit(self.read_batch, *plan.batches[b + 1])
                result.skipped_tiles += len(valids) - len(keep)
                outs = self.model.run(x) if x is not None else None
                while len(behind) >= 2:
                    behind.popleft().result()
                behind.append(writer.submit(self.blend, outputs, b, valids, keep, outs))
                done += len(tiles)
                bar.update(len(tiles))
                if callable(progress):
                    progress(done / result.tiles)
            while behind:
                behind.popleft().result()
            self.finish(outputs, result, cancelled)
        bar.close()
        result.seconds = time.perf_counter() - self.start
        log.info("predicted %dx%d px on %s in %.1f s (%d tiles, %d skipped)", self.win[2], self.win[3],
                 self.runner.device, result.seconds, result.tiles, result.skipped_tiles)
        return result

    def finish(self, outputs: Outputs, result: PredictResult, cancelled: Callable[[], bool] | None) -> None:
        """After the last batch: refuse a model that answered only NaN, compute the halo products, end the outputs
        and say what the user should know."""
        blender = self.blender
        if blender.non_finite and blender.non_finite == blender.pixels:
            raise ModelFileError(f"the model answered NaN or infinity for every pixel; {Path(self.model_path).name!r} "
                                 "is damaged (export or train it again); nothing was written")
        for product, layer in self.chosen:
            if product.halo:
                _halo_pass(outputs, product, layer, self.out_grid, cancelled)
        result.outputs = outputs.finish()
        if blender.non_finite:
            log.warning("the model answered NaN or infinity for %d of %d pixels (tile counts, overlaps included); "
                        "they are nodata in every output. The model file may be damaged", blender.non_finite,
                        blender.pixels)
        result.seen = self.seen
        if self.shard is None:
            result.warnings += input_range_warnings(self.spec, self.seen)
        for warning in result.warnings:
            log.warning("%s", warning)


#: Input bands whose mean over the run lies further than this from the training mean (in training standard
#: deviations) are reported: another sensor, other units (reflectance x 10000 against DN) or a wrong band order.
INPUT_RANGE_STD = 4.0
NO_VALID_PIXELS = ("no valid input pixels in the chosen extent: every output is nodata and nothing could be scored; "
                   "check the raster's nodata value, the band mapping and the extent")


def input_range_warnings(spec: ModelSpec, seen: np.ndarray) -> list[str]:
    """One message naming the input bands whose run mean (``seen``: sums and counts of the normalised values) is
    far from the training data; or, when no input pixel was valid at all, one saying so."""
    if not seen[1].any():
        return [NO_VALID_PIXELS]
    means = seen[0] / np.maximum(seen[1], 1)
    far = [(b, m) for b, m, s in zip(spec.input_bands, means, seen[1]) if s and abs(m) > INPUT_RANGE_STD]
    if not far:
        return []
    said = ", ".join(f"{b.name} averages {b.mean + m * b.std:.4g} against {b.mean:.4g} ± {b.std:.3g} in training "
                     f"({m:+.0f} std)" for b, m in far)
    return [f"the input is unlike the model's training data: {said}; the outputs are likely meaningless. Check the "
            "band mapping and that the raster is in the units the model was trained on (e.g. DN, not reflectance "
            "x 10000), from the same sensor"]


def _halo_pass(outputs: Outputs, product: Product, layer: Layer, grid: Grid,
               cancelled: Callable[[], bool] | None) -> None:
    """Compute a halo product's layer from its finished source layer, in windows that reach ``product.halo``
    pixels beyond each side (fewer at the raster's edges): no window or chunk seam shows."""
    source_key = product.source_key(layer)
    source = outputs.layers[source_key]
    outputs.datasets[source_key].FlushCache()
    pixel_size = (abs(grid.transform[1]), abs(grid.transform[5]))
    n, step_x = product.halo, HALO_WINDOW * 8
    for y in range(0, grid.height, HALO_WINDOW):
        if cancelled is not None and cancelled():
            raise CancelledError("prediction cancelled; no output was written")
        h = min(HALO_WINDOW, grid.height - y)
        top, bottom = min(n, y), min(n, grid.height - y - h)
        for x in range(0, grid.width, step_x):
            w = min(step_x, grid.width - x)
            left, right = min(n, x), min(n, grid.width - x - w)
            data = outputs.read(source_key, (x - left, y - top, w + left + right, h + top + bottom))
            out = product.compute_halo(layer, data, source, (top, bottom, left, right), pixel_size)
            outputs.write(layer.key, out, y, x)
