"""One blocking run of the engine (prediction, or explanation with ground truth), shared by the task and Processing.

It opens everything by path: the model file, the input raster (through GDAL inside ``mtl_core``) and
the ground truth rasters. It never touches a QGIS layer, the project or a widget, so it is safe in a
worker thread. Each run writes into its own new folder; a failed or cancelled run removes that
folder, so nothing is left behind.
"""

from __future__ import annotations

import dataclasses
import datetime
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mtl_core.errors import MtlError

from .params import RunParameters, explain_options, predict_options


class PluginError(MtlError):
    """A problem the plugin detects before or around the engine (message names the fix)."""


@dataclass
class RunOutcome:
    """What a finished run produced: output paths by product key, and how it ran."""

    outputs: dict[str, str] = field(default_factory=dict)
    run_dir: str = ""
    device: str = ""
    seconds: float = 0.0
    report: str | None = None
    spec: dict = field(default_factory=dict)


def run(
    params: RunParameters,
    progress: Callable[[float], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> RunOutcome:
    """Run the model over the raster and write every requested product into a new run folder.

    Args:
        params: the run's parameters (paths and numbers only).
        progress: receives the fraction done, 0..1.
        cancelled: polled between tile batches; returning True stops the run.

    Returns:
        The outputs by product key (``main``, ``confidence``, ``aux_<name>``, ``agreement`` …).

    Raises:
        mtl_core.errors.MtlError: anything the engine refuses (message says why and how to fix it);
            ``mtl_core.errors.CancelledError`` when cancelled.
        ImportError: torch or another heavy dependency is missing.
    """
    from .model_info import read_spec

    start = time.perf_counter()
    spec = read_spec(params.model_path)
    out_parent = Path(params.out_dir)
    try:
        out_parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PluginError(f"cannot create output folder {str(out_parent)!r} ({exc.strerror}); choose another") from exc
    stamp = datetime.datetime.now().strftime("%Y%m%d_%H%M%S")
    run_dir = out_parent / params.run_name(spec.name.split(" ")[0], stamp)
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = out_parent / f"{params.run_name(spec.name.split(' ')[0], stamp)}_{suffix}"
    try:
        run_dir.mkdir()
    except OSError as exc:
        raise PluginError(f"cannot write in output folder {str(out_parent)!r} ({exc.strerror}); choose a "
                          "folder you can write to") from exc
    try:
        if params.has_ground_truth:
            from mtl_core.explain import explain

            result = explain(params.model_path, params.raster_path, run_dir, dict(params.aux_truth), params.labels,
                             explain_options(params), progress=progress or False, cancelled=cancelled)
            report = result.report.get("html")
        else:
            from mtl_core.inference import predict

            result = predict(params.model_path, params.raster_path, run_dir, predict_options(params),
                             progress=progress or False, cancelled=cancelled)
            report = None
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return RunOutcome(outputs={k: str(v) for k, v in result.outputs.items()}, run_dir=str(run_dir),
                      device=result.device, seconds=time.perf_counter() - start,
                      report=str(report) if report else None, spec=spec.to_dict())


def summary_fields(outcome: RunOutcome) -> dict:
    """The outcome as a plain dict (for Processing results and logs)."""
    return dataclasses.asdict(outcome)
