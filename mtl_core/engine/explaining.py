"""One explained run: the engine with ground truth, its blocks streamed into the statistics, then the report."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import OutputError
from ..explain.report import report_paths, write_report
from ..explain.sink import ExplainStats
from ..io.fileio import check_outputs
from ..spec import ModelSpec
from .inputs import labels_band_of, run_inputs
from .products import all_layers
from .run import PredictOptions, predict
from .runtime import open_runner

log = logging.getLogger(__name__)


@dataclass
class ExplainResult:
    """What ``mtl explain`` wrote: the layers (output keys -> paths), the report files and the numbers."""

    outputs: dict[str, Path] = field(default_factory=dict)
    report: dict[str, Path] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    spec: ModelSpec | None = None


def explain(
    model_path: str | os.PathLike,
    raster_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    opts: PredictOptions,
    progress: bool | Callable[[float], None] = False,
    cancelled: Callable[[], bool] | None = None,
    sample_pixels: int = 1_000_000,
    seed: int = 0,
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
    sink = ExplainStats(spec, bool(labels), sample_pixels, seed)
    # Honest progress: the prediction is 90 % of the run, statistics and report the rest.
    phase = (lambda f: progress(0.9 * f)) if callable(progress) else progress
    result = predict(model_path, raster_path, out_dir, popts, progress=phase, cancelled=cancelled, sink=sink,
                     opened=opened)
    if aux_truth and "error_score" not in result.outputs and spec.task == "segmentation":
        log.warning("the model file holds no error model (trained before explanation layers existed?): "
                    "no error score or agreement layer; retrain it with 'mtl train' to get them")
    band = labels_band_of(spec, opts.labels_band)
    stats = sink.result()
    stats["inputs"] = {"model": str(model_path), "raster": str(raster_path), "aux_truth": aux_truth,
                       "labels": labels, "labels_band": band if labels else None, "device": result.device}
    report = write_report(spec, stats, result.outputs, all_layers(spec), Path(out_dir), Path(raster_path).stem)
    log.info("explanation report written to %s", report["html"])
    if callable(progress):
        progress(1.0)
    return ExplainResult(outputs=result.outputs, report=report, stats=stats, device=result.device, spec=spec)
