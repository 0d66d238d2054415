"""Writing files safely: a temporary name beside the destination, renamed only on success."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputError

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` and rename it onto ``path`` only if the block succeeds.

    Raises:
        OutputError: the destination folder is missing or not writable.
    """
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise OutputError(f"output folder {str(folder)!r} does not exist; create it or choose another")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"output folder {str(folder)!r} is read-only; choose a folder you can write to")
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
    finally:
        tmp_path.unlink(missing_ok=True)
        sidecar.unlink(missing_ok=True)
