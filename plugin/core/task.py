"""The QgsTask that runs a prediction in the background and hands its outcome back on the main thread.

``run()`` (worker thread) only calls :func:`.runner.run` with plain parameters: the raster is opened by
path with GDAL inside ``mtl_core``, and no layer, project or widget is touched. ``finished()`` (main
thread) passes the outcome to a callback, which adds and styles the layers.
"""

from __future__ import annotations

import shutil
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from qgis.core import QgsTask

from .logger import get_logger
from .params import RunParameters
from .runner import RunOutcome

log = get_logger()


@dataclass
class TaskResult:
    """How the task ended: ``outcome`` on success, else ``error`` (and ``cancelled``)."""

    params: RunParameters
    outcome: RunOutcome | None = None
    error: str | None = None
    details: str | None = None
    cancelled: bool = False

    @property
    def ok(self) -> bool:
        return self.outcome is not None


class PredictTask(QgsTask):
    """Run one prediction (or explanation) as a cancellable background task."""

    def __init__(self, params: RunParameters, on_finished: Callable[[TaskResult], None] | None = None) -> None:
        """Create the task.

        Args:
            params: the run's parameters.
            on_finished: called on the main thread with the :class:`TaskResult`, whatever the ending.
        """
        name = params.input_name or "raster"
        super().__init__(f"MTL Explain: predict {name}", QgsTask.CanCancel)
        self.params = params
        self.on_finished = on_finished
        self.result = TaskResult(params)

    def run(self) -> bool:
        """Worker thread: run the engine, keep the outcome or the error; never raise."""
        from mtl_core.errors import CancelledError, MtlError

        from .deps import check
        from .runner import run

        status = check()
        if not status.can_run(self.params.model_path):
            self.result.error = status.message()
            return False
        try:
            outcome = run(self.params, progress=self._progress, cancelled=self.isCanceled)
            if self.isCanceled():  # cancelled after the engine's last check: drop what it wrote
                shutil.rmtree(outcome.run_dir, ignore_errors=True)
                raise CancelledError("cancelled")
            self.result.outcome = outcome
            return True
        except CancelledError:
            self.result.cancelled = True
            self.result.error = "Prediction cancelled; no output was written."
        except MtlError as exc:
            self.result.error = str(exc)
        except ImportError as exc:
            self.result.error = f"a Python package is missing ({exc}). {status.message()}"
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
            log.info("run cancelled: %s", self.params.raster_path)
        else:
            log.error("run failed: %s", r.error)
            if r.details:
                log.error(r.details)
        if self.on_finished is not None:
            self.on_finished(r)
