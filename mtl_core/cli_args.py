"""Shared pieces of the ``mtl`` command line: argument types (numbers in a range, a one-line usage error when
not) and the output folder a run creates."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from .errors import MtlError
from .training.options import MAX_MINUTES


def number(kind: type, low: float, what: str, high: float | None = None):
    """An argparse type: a ``kind`` number >= ``low`` (and <= ``high``); a bad value is a one-line usage error."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if value < low or (high is not None and value > high) or value != value:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value
    return parse


positive = number(int, 1, "a whole number of at least 1")
at_least_0 = number(int, 0, "a whole number of at least 0")
positive_float = number(float, 1e-12, "a number above 0")
at_least_0_float = number(float, 0.0, "a number of at least 0")
opset = number(int, 11, "an ONNX opset between 11 and 20", 20)
#: a training budget: above 0 and at most a week
minutes = number(float, 1e-12, f"a number of minutes above 0 and at most {MAX_MINUTES:g} (a week)", MAX_MINUTES)


@contextlib.contextmanager
def out_folder(path: str | Path, option: str = "--out"):
    """The output folder, created when missing (``mkdir -p``) and removed again if the run fails and leaves it
    empty; a path that is a file is refused."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise MtlError(f"{option} {str(path)!r} is a file, not a folder; give the folder to write the outputs into")
    missing = [p for p in [folder, *folder.parents] if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MtlError(f"cannot create the output folder {str(path)!r} ({exc.strerror}); "
                       f"choose another {option}") from exc
    try:
        yield folder
    except BaseException:
        for p in missing:  # innermost first: only what this run created, and only if still empty
            with contextlib.suppress(OSError):
                p.rmdir()
        raise
