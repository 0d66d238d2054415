"""One blocking run of a job for the panel and Processing: in QGIS on ONNX Runtime, or in the worker process.

Prediction and explanation run in QGIS's process on ONNX Runtime. A ``.safetensors`` model is first
exported to ONNX by the worker, once: the export is cached by the model file's content hash, so later
runs start at once. A run on CUDA (device ``cuda``) goes to the worker as a whole, where PyTorch runs
it. Nothing here imports torch.

Everything is opened by path; no QGIS layer, project or widget is touched, so this is safe in a worker
thread. Each run writes into its own new folder; a failed or cancelled run removes that folder, so
nothing is left behind.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mtl_core.errors import MtlError
from mtl_core.jobs import Job, JobResult, run_job

from . import deps
from .logger import get_logger
from .worker import WorkerClient, cached_onnx

log = get_logger()


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
    where: str = "qgis"  # "qgis" (ONNX Runtime in QGIS's process) or "worker"
    export: str = ""  # "", "cached" or "exported": what happened to a .safetensors model first
    warnings: list[str] = field(default_factory=list)  # e.g. an input unlike the model's training data


def onnx_cache_dir() -> Path:
    """Where the ONNX exports of ``.safetensors`` models are kept (inside the QGIS profile)."""
    from qgis.core import QgsApplication

    return Path(QgsApplication.qgisSettingsDirPath()) / "cache" / "mtl_explain" / "onnx"


def worker_client() -> WorkerClient:
    """A client for the worker Python chosen in the settings, its log going to the plugin's log."""
    return WorkerClient(deps.worker_python(), on_log=lambda level, message: log.info("worker: %s", message),
                        extra_paths=deps.private_paths())


def run_name(job: Job, model_name: str, stamp: str) -> str:
    """A file-system-safe folder name for one run: ``<input>_<model>_<stamp>``."""
    text = f"{job.name or 'input'}_{model_name}_{stamp}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:120]


def _new_run_dir(job: Job, model_name: str) -> Path:
    parent = Path(job.out)
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PluginError(f"cannot create output folder {str(parent)!r} ({exc.strerror}); choose another") from exc
    stamp = datetime.datetime.now().strftime("%Y%m%d_%H%M%S")
    base = run_name(job, model_name, stamp)
    run_dir, suffix = parent / base, 1
    while run_dir.exists():
        suffix += 1
        run_dir = parent / f"{base}_{suffix}"
    try:
        run_dir.mkdir()
    except OSError as exc:
        raise PluginError(f"cannot write in output folder {str(parent)!r} ({exc.strerror}); choose a "
                          "folder you can write to") from exc
    return run_dir


def run(
    job: Job,
    progress: Callable[[float], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
    cache_dir: Path | None = None,
) -> RunOutcome:
    """Run a predict or explain job, writing every product into a new folder under ``job.out``.

    Args:
        job: the job; ``out`` is the parent folder of the run's own folder.
        progress: receives the fraction done, 0..1.
        cancelled: polled between tile batches; returning True stops the run.
        cache_dir: folder of cached ONNX exports (default :func:`onnx_cache_dir`).

    Returns:
        The outputs by product key (``main``, ``confidence``, ``aux_<name>``, ``agreement`` …).

    Raises:
        mtl_core.errors.MtlError: anything the engine or the worker refuses (message says why and how to
            fix it); ``mtl_core.errors.CancelledError`` when cancelled.
    """
    from mtl_core.engine.runtime import is_onnx, read_spec

    if job.kind not in ("predict", "explain"):
        raise PluginError(f"the panel runs predict and explain jobs, not {job.kind!r}")
    start = time.perf_counter()
    spec = read_spec(job.model)
    run_dir = _new_run_dir(job, spec.name.split(" ")[0])
    job = dataclasses.replace(job, out=str(run_dir))
    where, export = "qgis", ""
    try:
        if job.device == "cuda":  # PyTorch (CUDA) in the worker process
            where = "worker"
            result: JobResult = worker_client().run(job, progress, cancelled)
        else:
            model = Path(job.model)
            if not is_onnx(model):
                model, hit = cached_onnx(model, cache_dir or onnx_cache_dir(), worker_client(), None, cancelled)
                export = "cached" if hit else "exported"
                log.info("%s: ONNX export %s (%s)", job.model, "found in the cache" if hit else "made", model)
            onnx_job = dataclasses.replace(job, model=str(model), backend="onnx")
            if job.workers or job.scheduler:  # a Dask cluster is started by the worker process (a plain Python
                where = "worker"  # that can start processes; QGIS's cannot), on the same ONNX file
                result = worker_client().run(onnx_job, progress, cancelled)
            else:
                result = run_job(onnx_job, progress or False, cancelled)
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return RunOutcome(outputs=dict(result.outputs), run_dir=str(run_dir), device=result.device,
                      seconds=time.perf_counter() - start, report=result.report, spec=spec.to_dict(),
                      where=where, export=export, warnings=list(result.warnings))


def summary_fields(outcome: RunOutcome) -> dict:
    """The outcome as a plain dict (for Processing results and logs)."""
    return dataclasses.asdict(outcome)
