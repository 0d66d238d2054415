"""The worker process: runs one job and reports JSON lines, so PyTorch never runs inside QGIS.

Run as ``python -m mtl_core.worker [JOB.json]`` (or ``mtl worker``); without a file the job is read from
standard input. Standard output carries only events, one JSON object a line:

* ``{"event": "started", "pid": …, "python": …, "kind": …}``
* ``{"event": "progress", "fraction": 0.42, "phase": "train"}``
* ``{"event": "log", "level": "INFO", "message": …}``
* ``{"event": "train", "kind": "phase" | "step" | "validation", …}``: a train job's live record (the phase, each
  step's losses, each validation's metrics), for curves drawn while it trains
* ``{"event": "result", "result": {…}}`` (:class:`~mtl_core.jobs.JobResult` as a dict), exit status 0
* ``{"event": "error", "message": …, "type": …, "exit": N}``: the same message the CLI prints, exit
  status 2 for a refused job (``MtlError``), 1 for an unexpected failure, 130/143 when cancelled.

Anything else written to standard output (by a library, or C code) is sent to standard error instead,
so the event stream stays parseable. SIGTERM and SIGINT cancel the job: the engine and training poll
for it between batches and steps, remove what they started writing and stop; the client kills the
process if it has not stopped after a grace period.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, TextIO

from .errors import CancelledError, MtlError
from .jobs import Job, run_job

EXIT_REFUSED, EXIT_FAILED = 2, 1


class EventStream:
    """Writes events as JSON lines to a private copy of the original standard output (thread-safe)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.lock = threading.Lock()
        self.last_progress = -1.0
        self.last_time = 0.0

    def send(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, **fields}, default=str)
        with self.lock:
            self.stream.write(line + "\n")
            self.stream.flush()

    def progress(self, fraction: float, phase: str) -> None:
        """A progress event, at most every 1 % or 0.5 s (training calls this every step)."""
        now = time.monotonic()
        if fraction < 1.0 and fraction - self.last_progress < 0.01 and now - self.last_time < 0.5:
            return
        self.last_progress, self.last_time = fraction, now
        self.send("progress", fraction=round(float(fraction), 4), phase=phase)


class _LogToEvents(logging.Handler):
    def __init__(self, events: EventStream) -> None:
        super().__init__(logging.INFO)
        self.events = events

    def emit(self, record: logging.LogRecord) -> None:
        self.events.send("log", level=record.levelname, message=record.getMessage())


def _private_stdout() -> TextIO:
    """A stream on a duplicate of fd 1 for the events; fd 1 itself (and sys.stdout) then go to stderr."""
    sys.stdout.flush()
    events_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(events_fd, "w", buffering=1, encoding="utf-8")


def import_advice(exc: ImportError) -> str:
    """What to do when the worker's Python lacks a module. GDAL's bindings (osgeo) cannot be pip-installed to match
    QGIS's GDAL: then the fix is another interpreter, never installing PyTorch into this one."""
    name = exc.name or str(exc)
    if name.split(".")[0] == "osgeo":
        return (f"the worker's Python ({sys.executable}) cannot import GDAL's Python bindings (osgeo), so it is not "
                "QGIS's Python: choose QGIS's own Python, or a virtual environment made from it with "
                "--system-site-packages, as the worker's Python in the MTL Explain panel (Setup page)")
    return (f"the worker's Python ({sys.executable}) cannot import {name}: install it there ({sys.executable} -m pip "
            "install torch segmentation-models-pytorch safetensors onnx scikit-learn), or choose another Python in "
            "the MTL Explain panel (Setup page)")


def main(argv: list[str] | None = None) -> int:
    """Run the job of ``argv[0]`` (a file) or of standard input; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    events = EventStream(_private_stdout())
    stop = threading.Event()
    signalled: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        signalled.append(signum)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    core_log = logging.getLogger("mtl_core")
    core_log.setLevel(logging.INFO)
    core_log.addHandler(_LogToEvents(events))
    core_log.propagate = False
    try:
        text = open(argv[0], encoding="utf-8").read() if argv else sys.stdin.read()
        job = Job.from_json(text)
        events.send("started", pid=os.getpid(), python=sys.executable, kind=job.kind)
        phase = {"train": "train", "export": "export"}.get(job.kind, "predict")
        result = run_job(job, progress=lambda f: events.progress(f, phase), cancelled=stop.is_set,
                         report=lambda record: events.send("train", **record))
        if stop.is_set():  # a signal after the job's last check: what it wrote is not wanted
            for path in [*result.outputs.values(), result.report]:
                if path:
                    Path(path).unlink(missing_ok=True)
            raise CancelledError(f"{job.kind} cancelled")
    except CancelledError as exc:
        code = 128 + (signalled[0] if signalled else signal.SIGTERM)
        events.send("error", message=f"{exc}; nothing was written", type="CancelledError", exit=code)
        return code
    except (MtlError, FileNotFoundError) as exc:
        events.send("error", message=str(exc), type=type(exc).__name__, exit=EXIT_REFUSED)
        return EXIT_REFUSED
    except MemoryError:
        events.send("error", message="out of memory; use a smaller batch size, tile size or extent",
                    type="MemoryError", exit=EXIT_FAILED)
        return EXIT_FAILED
    except ImportError as exc:
        events.send("error", message=import_advice(exc), type="ImportError", exit=EXIT_FAILED)
        return EXIT_FAILED
    except Exception as exc:  # noqa: BLE001 — report any failure as an event, with the traceback on stderr
        traceback.print_exc()
        events.send("error", message=f"unexpected error: {exc!r}", type=type(exc).__name__, exit=EXIT_FAILED)
        return EXIT_FAILED
    events.send("result", result=result.to_dict())
    return 0


if __name__ == "__main__":
    sys.exit(main())
