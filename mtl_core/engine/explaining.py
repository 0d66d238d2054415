"""One explained run: the engine with ground truth, its blocks streamed into the statistics, then the report."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, OutputError
from ..explain.report import report_paths, write_report
from ..explain.sink import ExplainStats
from ..io.fileio import check_outputs
from ..io.raster import Grid, extent_window, inside, open_raster
from ..metrics import FEW_BLOCKS, FEW_PIXELS
from ..spec import ModelSpec
from ..split import SPLITS, block_grid, label_census, split_blocks
from .inputs import Truth, labels_band_of, run_inputs
from .products import all_layers
from .distributed import predict
from .run import PredictOptions
from .runtime import open_runner

log = logging.getLogger(__name__)


def _training_raster(spec: ModelSpec, raster_path: str | os.PathLike, grid: Grid) -> str | None:
    """The raster the model was trained on (its first input), when ``raster_path`` (on ``grid``) is that raster
    or lies on its grid, else None."""
    data = spec.training.get("data") or {}
    source = (data.get("sources") or {}).get(spec.inputs[0].name)
    if not source:
        return None
    if Path(source).resolve() == Path(raster_path).resolve():
        return source
    if Path(source).exists() and Grid.of(open_raster(source, "training raster")).same_as(grid):
        return source
    return None


def scored_blocks(spec: ModelSpec, raster_path: str | os.PathLike, labels: str | None, labels_band: int,
                  split: str, labels_field: str | None = None) -> tuple[np.ndarray | None, int, dict[str, Any]]:
    """Which blocks ``mtl explain --split`` scores: the model's own train/val/test blocks of its training raster,
    rebuilt with training's code from the split recorded in the model file and the labels.

    Returns:
        (blocks down, blocks across) bool grid of the scored blocks (None: every pixel), the block size, and what
        the report says about it (``split``, ``blocks``, ``of``, and a ``warning`` when training pixels count).

    Raises:
        ConfigError: an unknown split, or a split asked for on a raster the model was not trained on (or a model
            file that does not record its split, or no labels).
    """
    if split not in ("all", *SPLITS):
        raise ConfigError(f"unknown split {split!r}; choose all, train, val or test")
    grid = Grid.of(open_raster(raster_path, "input raster"))
    source = _training_raster(spec, raster_path, grid)
    recorded = (spec.training.get("data") or {}).get("split")
    info: dict[str, Any] = {"split": split}
    if split == "all":
        if source and labels:
            info["warning"] = ("the input is the model's training raster: the scores mix in its training blocks "
                               "and are optimistic; score only held-out blocks with --split test")
        return None, 0, info
    if not (source and recorded and labels):
        trained_on = ((spec.training.get("data") or {}).get("sources") or {}).get(spec.inputs[0].name)
        why = ("it needs --labels" if not labels else "this model file does not record its split" if not recorded
               else f"the input is not the raster the model was trained on ({trained_on!r})")
        raise ConfigError(f"--split {split} scores the blocks of the model's own train/val/test split, but {why}; "
                          "use --split all to score every labelled pixel")
    truth = Truth(spec, grid, {}, labels, labels_band, labels_field=labels_field)  # as the engine reads them
    size = int(recorded["block_size"])
    extent = (spec.training.get("data") or {}).get("extent")
    area = extent_window(grid, extent) if extent else None

    def read(window):
        idx, labelled = truth.read_labels(window)
        return idx, (labelled & inside(window, area)) if area else labelled

    per_block = label_census(read, grid.width, grid.height, size).blocks(size)
    blocks = split_blocks(grid.width, grid.height, size, float(recorded["val_fraction"]),
                          float(recorded["test_fraction"]), int(recorded["seed"]), per_block)
    info.update(blocks=len(blocks[split]), of=sum(len(b) for b in blocks.values()), block_size=size)
    if split == "train":
        info["warning"] = "only training blocks are scored: the numbers are optimistic"
    return block_grid(blocks[split], grid.width, grid.height, size), size, info


def few_scored(pixels: int, blocks: int | None) -> str | None:
    """A warning when the labelled pixels (or blocks) a report scores are too few for its numbers to mean much."""
    if pixels >= FEW_PIXELS and (blocks is None or blocks >= FEW_BLOCKS):
        return None
    where = f" in {blocks} block(s)" if blocks is not None else ""
    return (f"only {pixels:,} labelled pixel(s){where} are scored: the accuracy and detector numbers rest on little "
            "and may swing widely; label more, or larger areas spread over the scene")


@dataclass
class ExplainResult:
    """What ``mtl explain`` wrote: the layers (output keys -> paths), the report files and the numbers."""

    outputs: dict[str, Path] = field(default_factory=dict)
    report: dict[str, Path] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    spec: ModelSpec | None = None
    warnings: list[str] = field(default_factory=list)  # the prediction's (e.g. an input unlike the training data)


def explain(
    model_path: str | os.PathLike,
    raster_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    opts: PredictOptions,
    progress: bool | Callable[[float], None] = False,
    cancelled: Callable[[], bool] | None = None,
    sample_pixels: int = 1_000_000,
    seed: int = 0,
    split: str = "all",
) -> ExplainResult:
    """Write every explanation layer of a model on a raster, the statistics and a self-contained HTML report.

    Args:
        model_path: model file (``mtl`` variant for reconstruction layers; baselines give entropy only).
        raster_path: raster with the model's input bands.
        out_dir: existing, writable folder for the layers and the report.
        opts: the engine's options, ground truth included (``aux_truth``: modality name -> raster of
            the real auxiliary bands; ``labels``: reference raster), both on the input raster's grid.
            Every option is honoured (extent, mask, products, COG …); ``main`` is always written,
            since the statistics score it.
        progress: True for a progress bar, or a callback receiving the fraction of prediction done.
        cancelled: polled between batches of tiles; when it returns True the run stops, writing nothing.
        sample_pixels: most pixels kept (uniform random sample) for rank statistics; the confusion
            matrix, agreement counts and sensitivity totals use every pixel.
        seed: seed of the pixel sample.
        split: ``all`` scores every labelled pixel; ``train``, ``val`` or ``test`` only the blocks of the model's own
            split (the input must be its training raster). Every layer covers the whole extent either way.

    Returns:
        The layers, the report files (``html``, ``json``, ``detectors_csv``, ``per_class_csv``) and the statistics.

    Raises:
        RasterError: unknown modality, wrong band count, raster on another grid.
        OutputError: the output folder is missing or read-only, or an output exists (without ``overwrite``).
        CancelledError: the run was cancelled (no output file is left behind).
    """
    opened = open_runner(model_path, opts.backend, opts.device, opts.threads)
    spec = opened[0]
    aux_truth = {k: str(v) for k, v in (opts.aux_truth or {}).items()}
    labels = str(opts.labels) if opts.labels else None
    if not Path(out_dir).is_dir():
        raise OutputError(f"output folder {str(out_dir)!r} does not exist; create it or choose another")
    check_outputs(report_paths(Path(out_dir), Path(raster_path).stem).values(),
                  run_inputs(raster_path, aux_truth, labels, opts.mask), opts.overwrite)
    products = tuple(dict.fromkeys(("main",) + tuple(opts.products)))
    popts = dataclasses.replace(opts, products=products, aux_truth=aux_truth or None, labels=labels)
    band = labels_band_of(spec, opts.labels_band)
    region, block_size, scored = scored_blocks(spec, raster_path, labels, band, split, opts.labels_field)
    if scored.get("warning"):
        log.warning("%s", scored["warning"])
    sink = ExplainStats(spec, bool(labels), sample_pixels, seed, region=region, block_size=block_size)
    # Honest progress: the prediction is 90 % of the run, statistics and report the rest.
    phase = (lambda f: progress(0.9 * f)) if callable(progress) else progress
    result = predict(model_path, raster_path, out_dir, popts, progress=phase, cancelled=cancelled, sink=sink,
                     opened=opened)
    if aux_truth and "error_score" in products and "error_score" not in result.outputs and spec.task == "segmentation":
        log.warning("the model file holds no error model (trained before explanation layers existed?): "
                    "no error score or agreement layer; retrain it with 'mtl train' to get them")
    try:
        stats = sink.result()
        stats["scored"] = scored
        stats["warnings"] = list(result.warnings)
        few = few_scored(stats.get("pixels_labelled", 0), scored.get("blocks")) if labels else None
        if few:
            stats["warnings"].append(few)
            result.warnings.append(few)
            log.warning("%s", few)
        stats["inputs"] = {"model": str(model_path), "raster": str(raster_path), "aux_truth": aux_truth,
                           "labels": labels, "labels_band": band if labels else None, "device": result.device,
                           "warped": result.warped}
        report = write_report(spec, stats, result.outputs, all_layers(spec), Path(out_dir), Path(raster_path).stem)
    except BaseException:  # a run is its layers and its report: keep neither when the report fails
        for path in result.outputs.values():  # (a failed write is already one OutputError: see atomic_path)
            Path(path).unlink(missing_ok=True)
            Path(str(path) + ".aux.xml").unlink(missing_ok=True)
        if result.shards:  # a --vrt run's shard files
            shutil.rmtree(result.shards, ignore_errors=True)
        raise
    log.info("explanation report written to %s", report["html"])
    if callable(progress):
        progress(1.0)
    return ExplainResult(outputs=result.outputs, report=report, stats=stats, device=result.device, spec=spec,
                         warnings=result.warnings)
