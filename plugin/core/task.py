"""The QgsTask that runs a prediction or explanation in the background and hands its outcome back on the main thread.

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

from mtl_core.jobs import Job
from qgis.core import QgsTask

from .logger import get_logger
from .runner import RunOutcome

log = get_logger()


@dataclass
class TaskResult:
    """How the task ended: ``outcome`` on success, else ``error`` (and ``cancelled``)."""

    job: Job
    outcome: RunOutcome | None = None
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
