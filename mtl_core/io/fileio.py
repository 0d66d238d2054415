"""Writing files safely: a temporary name beside the destination, renamed only on success; never over an
input or an existing file unasked; one run at a time per output set; JSON that other tools can read."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import OutputError

_UMASK = os.umask(0)
os.umask(_UMASK)


def _check_folder(folder: Path) -> None:
    """Refuse a missing or read-only output folder, naming the fix."""
    if not folder.is_dir():
        raise OutputError(f"output folder {str(folder)!r} does not exist; create it or choose another")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"output folder {str(folder)!r} is read-only; choose a folder you can write to")


def check_writable(folder: str | os.PathLike) -> None:
    """Refuse a folder that exists but cannot take a new file (read-only, a virtual file system, a full disk), by
    creating and removing one: before a long run, not after it.

    Raises:
        OutputError: naming the folder and the reason.
    """
    folder = Path(folder)
    _check_folder(folder)
    try:
        fd, probe = tempfile.mkstemp(prefix=".mtl-probe.", dir=folder)
    except OSError as exc:
        raise OutputError(f"cannot write in output folder {str(folder)!r} ({exc.strerror}); choose another") from exc
    os.close(fd)
    os.unlink(probe)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` and rename it onto ``path`` only if the block succeeds.

    Raises:
        OutputError: the destination folder is missing or not writable.
    """
    path = Path(path)
    folder = path.parent
    _check_folder(folder)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix or ".tmp", dir=folder)
    except OSError as exc:
        raise OutputError(f"cannot write in output folder {str(folder)!r} ({exc.strerror}); choose another") from exc
    os.close(fd)
    tmp_path = Path(tmp)
    sidecar = Path(str(tmp_path) + ".aux.xml")  # GDAL's PAM metadata (e.g. category names)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        if sidecar.exists():
            os.replace(sidecar, str(path) + ".aux.xml")
        os.replace(tmp_path, path)
    except OSError as exc:  # a full disk, most often: one line, nothing left
        if isinstance(exc, OutputError):
            raise
        raise write_error(path, exc) from exc
    finally:
        tmp_path.unlink(missing_ok=True)
        sidecar.unlink(missing_ok=True)


def write_error(path: Path, exc: Exception) -> OutputError:
    """The one-line error of a failed write, with the free space of the folder (a full disk is the usual cause)."""
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**20:.0f} MiB free there"
    except OSError:
        free = "free space unknown"
    reason = getattr(exc, "strerror", None) or str(exc).strip()[:160]
    return OutputError(f"writing {path.name!r} failed ({reason}); {free}: free some space or choose another "
                       "output folder; nothing was written")


def check_outputs(outputs: Iterable[str | os.PathLike], inputs: Iterable[str | os.PathLike],
                  overwrite: bool = False) -> None:
    """Refuse, before any work, outputs that would replace one of the run's inputs or (without
    ``overwrite``) a file that already exists.

    Raises:
        OutputError: naming the file and the fix.
    """
    def same(a: Path, b: Path) -> bool:
        try:
            return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
        except OSError:
            return False

    inputs = [Path(i) for i in inputs if i]
    for out in map(Path, outputs):
        for sidecar in (out, Path(str(out) + ".aux.xml")):
            clash = next((i for i in inputs if same(sidecar, i)), None)
            if clash is not None:
                raise OutputError(f"the output {str(sidecar)!r} would replace the input {str(clash)!r}; choose "
                                  "another output folder (--out)")
        if out.exists() and not overwrite:
            raise OutputError(f"{str(out)!r} already exists; choose another output folder (--out), or pass "
                              "--overwrite to replace it")


@contextmanager
def run_lock(folder: str | os.PathLike, stem: str) -> Iterator[Path]:
    """Hold ``folder/.<stem>.mtl-lock`` for the run, so two runs cannot write the same outputs at once.

    A lock left by a process that no longer exists is taken over.

    Raises:
        OutputError: another live run holds the lock.
    """
    lock = Path(folder) / f".{stem}.mtl-lock"
    _check_folder(Path(folder))
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            try:
                pid = int(lock.read_text() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and _alive(pid):
                raise OutputError(f"another run (process {pid}) is writing {stem!r} outputs into {str(folder)!r}; "
                                  "wait for it to finish or choose another output folder (--out)") from None
            lock.unlink(missing_ok=True)  # stale: its process is gone
        except OSError as exc:
            raise OutputError(f"cannot write in output folder {str(folder)!r} ({exc.strerror}); "
                              "choose another") from exc
    else:
        raise OutputError(f"cannot take the lock {str(lock)!r}; remove it if no run is going")
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    try:
        yield lock
    finally:
        lock.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def json_safe(value: Any) -> Any:
    """``value`` with numpy scalars as Python numbers and NaN/inf as None, so ``json.dumps`` writes valid JSON."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()  # numpy scalar
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def save_json(data: Any, path: str | os.PathLike) -> None:
    """Write ``data`` as indented JSON, NaN and infinity written as null."""
    Path(path).write_text(json.dumps(json_safe(data), indent=2))
