"""The QgsTasks that run a prediction or explanation, or a training, in the background and hand the outcome back on
the main thread.

``run()`` (task thread) only calls :func:`.runner.run` with a :class:`mtl_core.jobs.Job` of plain
values: the raster is opened by path with GDAL inside ``mtl_core`` (or by the worker process), and no
layer, project or widget is touched. ``finished()`` (main thread) passes the outcome to a callback,
which adds and styles the layers.
"""

from __future__ import annotations

import shutil
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtl_core.jobs import Job
from qgis.core import QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from .logger import get_logger
from .runner import RunOutcome

log = get_logger()


@dataclass
class TaskResult:
    """How a task ended, the same shape for every task: ``outcome`` on success (a :class:`RunOutcome` for a run, the
    ``(variant, JobResult)`` pairs of a training, the ``SitesResult`` of proposed sites), else ``error`` (and
    ``cancelled``). A training that fails after some models keeps those in ``outcome`` beside its ``error``."""

    job: Job | None = None
    outcome: Any = None
    error: str | None = None
    details: str | None = None
    cancelled: bool = False

    @property
    def ok(self) -> bool:
        return self.outcome is not None


class PredictTask(QgsTask):
    """Run one prediction (or explanation) as a cancellable background task."""

    def __init__(self, job: Job, on_finished: Callable[[TaskResult], None] | None = None) -> None:
        """Create the task.

        Args:
            job: the run (a predict or explain job; ``out`` is the parent of the run's folder).
            on_finished: called on the main thread with the :class:`TaskResult`, whatever the ending.
        """
        super().__init__(f"MTL Explain: {job.kind} {job.name or 'raster'}", QgsTask.Flag.CanCancel)
        self.job = job
        self.on_finished = on_finished
        self.result = TaskResult(job)

    def run(self) -> bool:
        """Worker thread: run the engine, keep the outcome or the error; never raise."""
        from mtl_core.errors import CancelledError, MtlError

        from .deps import check
        from .runner import run

        status = check()
        if not status.onnx_ok:
            self.result.error = status.message()
            return False
        try:
            outcome = run(self.job, progress=self._progress, cancelled=self.isCanceled)
            if self.isCanceled():  # cancelled after the engine's last check: drop what it wrote
                shutil.rmtree(outcome.run_dir, ignore_errors=True)
                raise CancelledError("cancelled")
            self.result.outcome = outcome
            return True
        except CancelledError:
            self.result.cancelled = True
            self.result.error = "Run cancelled; no output was written."
        except MtlError as exc:
            self.result.error = str(exc)
        except ImportError as exc:
            self.result.error = f"a Python package is missing in QGIS ({exc}). {status.message()}"
        except MemoryError:
            self.result.error = "out of memory; use a smaller tile size or batch size, or a smaller extent"
        except Exception as exc:  # noqa: BLE001 — report any failure instead of crashing QGIS
            self.result.error = f"unexpected error: {exc!r}; details are in the log panel (MTL Explain)"
            self.result.details = traceback.format_exc()
        if self.isCanceled():
            self.result.cancelled = True
        return False

    def _progress(self, fraction: float) -> None:
        self.setProgress(max(0.0, min(100.0, 100.0 * fraction)))

    def finished(self, ok: bool) -> None:  # noqa: ARG002 — the result carries the details
        """Main thread: log the ending and hand the result to the callback."""
        r = self.result
        if self.isCanceled() and not r.ok:
            r.cancelled = True
        if r.ok:
            log.info("run finished on %s in %.1f s: %s", r.outcome.device, r.outcome.seconds, r.outcome.run_dir)
        elif r.cancelled:
            log.info("run cancelled: %s", self.job.raster)
        else:
            log.error("run failed: %s", r.error)
            if r.details:
                log.error(r.details)
        if self.on_finished is not None:
            self.on_finished(r)


class TrainTask(QgsTask):
    """Train one or more models (a variant and its baselines) one after another in the worker process.

    ``record`` carries each live record of the worker (phase, a step's losses, a validation's metrics) with the
    index of its job; emitted from the task's thread, it reaches a slot of a main-thread object queued.
    Cancelling stops the worker and removes the models already written by this task: nothing is left.
    """

    record = pyqtSignal(int, object)

    def __init__(self, jobs: list[Job], on_finished: Callable[[TaskResult], None] | None = None) -> None:
        super().__init__(f"MTL Explain: train {jobs[0].name or 'model'}", QgsTask.Flag.CanCancel)
        self.jobs = jobs
        self.on_finished = on_finished
        self.results: list = []  # (variant, mtl_core.jobs.JobResult)
        self.result = TaskResult(jobs[0])

    def run(self) -> bool:
        """Task thread: each job in a new worker process; never raise."""
        from mtl_core.errors import CancelledError, MtlError

        from .runner import worker_client

        try:
            for index, job in enumerate(self.jobs):
                client = worker_client()
                client.on_train = lambda record, index=index: self.record.emit(index, record)
                result = client.run(job, cancelled=self.isCanceled, progress=lambda f, index=index: self.setProgress(
                    100.0 * (index + f) / len(self.jobs)))
                self.results.append((job.train.get("variant", "mtl"), result))
            if self.isCanceled():
                raise CancelledError("cancelled")
            return True
        except CancelledError:
            self.result.cancelled = True
            self._remove_written()
        except MtlError as exc:  # the models already trained stay: they are complete and their scores are shown
            self.result.error = str(exc)
        except Exception as exc:  # noqa: BLE001 — report any failure instead of crashing QGIS
            self.result.error = f"unexpected error: {exc!r}; details are in the log panel (MTL Explain)"
            self.result.details = traceback.format_exc()
        return False

    def _remove_written(self) -> None:
        for _, result in self.results:
            for path in result.outputs.values():
                Path(path).unlink(missing_ok=True)
        self.results = []

    def finished(self, ok: bool) -> None:  # noqa: ARG002 — the result carries the details
        """Main thread: log the ending and hand the result to the callback."""
        r = self.result
        if self.isCanceled() and not ok:
            r.cancelled = True
        r.outcome = list(self.results) if self.results and not r.cancelled else None
        if r.cancelled:
            log.info("training cancelled; nothing was written")
        elif r.error:
            log.error("training failed: %s", r.error)
            if r.details:
                log.error(r.details)
        else:
            log.info("trained %s", ", ".join(res.outputs.get("model", "") or v for v, res in self.results))
        if self.on_finished is not None:
            self.on_finished(r)


class SitesTask(QgsTask):
    """Propose sites to label from the layers of a finished run (no model run: the run's entropy, confidence and,
    where it had the real auxiliary rasters, error layers are read window by window)."""

    def __init__(self, outcome: RunOutcome, count: int, out: str,
                 on_finished: Callable[[TaskResult], None] | None = None) -> None:
        super().__init__("MTL Explain: propose sites to label", QgsTask.Flag.CanCancel)
        self.outcome, self.count, self.out = outcome, count, out
        self.on_finished = on_finished
        self.result = TaskResult()  # its outcome: mtl_core.explain.sites.SitesResult

    def run(self) -> bool:
        """Task thread: read the run's rasters, write the GeoPackage; never raise."""
        from mtl_core.errors import MtlError
        from mtl_core.explain.sites import propose_from_outputs
        from mtl_core.spec import ModelSpec

        try:
            outputs = {k: Path(p) for k, p in self.outcome.outputs.items()}
            self.result.outcome = propose_from_outputs(outputs, ModelSpec.from_dict(self.outcome.spec), self.out,
                                                       self.count)
            return True
        except MtlError as exc:
            self.result.error = str(exc)
        except Exception as exc:  # noqa: BLE001 — report any failure instead of crashing QGIS
            self.result.error = f"unexpected error: {exc!r}"
            self.result.details = traceback.format_exc()
            log.error(self.result.details)
        return False

    def finished(self, ok: bool) -> None:  # noqa: ARG002
        if self.on_finished is not None:
            self.on_finished(self.result)
