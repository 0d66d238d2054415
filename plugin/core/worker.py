"""The client of the worker process (``python -m mtl_core.worker``): everything that needs PyTorch runs there.

QGIS's own process never imports torch (nor segmentation-models-pytorch, timm, torchvision or triton):
on a Linux desktop whose QGIS has loaded Mesa's LLVM, triton's bundled LLVM crashes QGIS as soon as
torch's stack is imported. Training, export of a ``.safetensors`` model to ONNX and runs on PyTorch
(CUDA) therefore go through :class:`WorkerClient`, which starts the worker with the interpreter chosen
in the plugin's settings (:func:`.deps.worker_python`), feeds it the job as JSON, turns its JSON-line
events into progress and log calls, and cancels it by terminating it (killing it after a grace
period). Blocking: call it from a ``QgsTask`` or a Processing algorithm, never on the main thread.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import signal
import subprocess  # nosec B404: runs a fixed Python module with a JSON job on stdin, never a shell
import tempfile
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path

from mtl_core.errors import CancelledError, MtlError
from mtl_core.jobs import Job, JobResult

from .logger import get_logger

log = get_logger()
GRACE_SECONDS = 5.0


class WorkerError(MtlError):
    """The worker refused the job, failed, or could not be started (message names the fix)."""


def _mtl_core_parent() -> str:
    """The folder holding the ``mtl_core`` package QGIS uses (the plugin folder when installed)."""
    import mtl_core

    return str(Path(mtl_core.__file__).resolve().parent.parent)


def worker_environment(extra_paths: list[str] | None = None) -> dict[str, str]:
    """QGIS's environment with ``mtl_core`` (and ``extra_paths``) first on the worker's PYTHONPATH."""
    env = dict(os.environ)
    parts = [_mtl_core_parent(), *(extra_paths or []), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in parts if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


class WorkerClient:
    """Runs one job in a worker process.

    Args:
        python: interpreter with torch (and the rest of ``requirements.txt``) installed.
        on_log: receives ``(level, message)`` for each log record of the worker.
        on_train: receives a train job's live record (``{"kind": "phase" | "step" | "validation", …}``).
    """

    def __init__(self, python: str, on_log: Callable[[str, str], None] | None = None,
                 extra_paths: list[str] | None = None, on_train: Callable[[dict], None] | None = None) -> None:
        self.python = python
        self.extra_paths = extra_paths or []
        self.on_log = on_log or (lambda level, message: log.info("worker: %s", message))
        self.on_train = on_train
        self.pid: int | None = None

    def command(self) -> list[str]:
        return [self.python, "-m", "mtl_core.worker"]

    def environment(self) -> dict[str, str]:
        return worker_environment(self.extra_paths)

    def run(self, job: Job, progress: Callable[[float], None] | None = None,
            cancelled: Callable[[], bool] | None = None) -> JobResult:
        """Run ``job`` to the end in a new worker process.

        Raises:
            CancelledError: ``cancelled()`` returned True; the worker was stopped (what it wrote is the
                caller's to remove: the run folder or the output file).
            WorkerError: the worker refused the job (its own message), died, or could not be started.
        """
        try:
            proc = subprocess.Popen(  # nosec B603: fixed module, job on stdin
                self.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=self.environment(), text=True, encoding="utf-8", start_new_session=True)
        except OSError as exc:
            raise WorkerError(
                f"the worker's Python {self.python!r} cannot be started ({exc.strerror or exc}); set the Python "
                "that has PyTorch in Settings > Options > MTL Explain (or the panel's 'Worker Python')") from exc
        self.pid = proc.pid
        events: queue.Queue = queue.Queue()
        stderr_tail: deque[str] = deque(maxlen=30)

        def pump_stdout() -> None:
            for line in proc.stdout:
                events.put(line)
            events.put(None)

        def pump_stderr() -> None:
            for line in proc.stderr:
                stderr_tail.append(line.rstrip())

        threads = [threading.Thread(target=f, daemon=True) for f in (pump_stdout, pump_stderr)]
        for t in threads:
            t.start()
        try:
            proc.stdin.write(job.to_json())
            proc.stdin.close()
        except OSError:
            pass  # the worker died at once; its exit status and stderr say why
        result: JobResult | None = None
        error: dict | None = None
        stopped = False
        while True:
            if cancelled is not None and cancelled() and not stopped:
                self._stop(proc)
                stopped = True
            try:
                line = events.get(timeout=0.1)
            except queue.Empty:
                continue
            if line is None:
                break
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                stderr_tail.append(line.rstrip())
                continue
            kind = event.get("event")
            if kind == "progress" and progress is not None:
                progress(float(event.get("fraction", 0.0)))
            elif kind == "log":
                self.on_log(event.get("level", "INFO"), event.get("message", ""))
            elif kind == "train" and self.on_train is not None:
                self.on_train({k: v for k, v in event.items() if k != "event"})
            elif kind == "result":
                result = JobResult.from_dict(event.get("result", {}))
            elif kind == "error":
                error = event
        code = proc.wait()
        for t in threads:
            t.join(timeout=2)
        if stopped:
            raise CancelledError(f"{job.kind} cancelled; the worker process was stopped")
        if result is not None and code == 0:
            return result
        if error is not None:
            raise WorkerError(error.get("message", "the worker failed"))
        tail = " | ".join(stderr_tail)[-600:]
        if code < 0:
            hint = " (killed: out of memory?)" if code == -signal.SIGKILL else ""
            raise WorkerError(f"the worker process died on {_signal_name(code)}{hint}; try a smaller batch size, "
                              f"or check the worker's Python {self.python!r}. Last output: {tail or '(none)'}")
        raise WorkerError(f"the worker process {self.python!r} exited with status {code} before finishing; check that "
                          f"this Python has MTL Explain's packages. Last output: {tail or '(none)'}")

    @staticmethod
    def _stop(proc: subprocess.Popen) -> None:
        """SIGTERM (the worker cleans up and exits), then SIGKILL after the grace period."""
        if proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()


def file_hash(path: str | Path) -> str:
    """SHA-256 of a file's content (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_onnx(model: str | Path, cache_dir: str | Path, client: WorkerClient,
                progress: Callable[[float], None] | None = None,
                cancelled: Callable[[], bool] | None = None) -> tuple[Path, bool]:
    """The ONNX export of a ``.safetensors`` model, made once by the worker and kept by content hash.

    Args:
        model: safetensors model file.
        cache_dir: folder of the cached exports (created when missing).
        client: the worker client that exports it.

    Returns:
        (path of the ``.onnx`` file, True when it came from the cache).

    Raises:
        WorkerError, CancelledError: as :meth:`WorkerClient.run`; nothing is left in the cache then.
    """
    cache_dir = Path(cache_dir)
    target = cache_dir / f"{file_hash(model)[:32]}.onnx"
    if target.exists():
        return target, True
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=cache_dir))
    try:
        job = Job(kind="export", model=str(model), out=str(tmp / target.name))
        client.run(job, progress, cancelled)
        os.replace(tmp / target.name, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target, False
