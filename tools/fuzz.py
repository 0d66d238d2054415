"""The long fuzzing run: the property-based tests of every parser of outside input (``tests/test_fuzz.py``) with a
large hypothesis budget instead of ``make test``'s few seconds.

Usage: ``.venv/bin/python tools/fuzz.py [--examples 20000]``. Each property draws that many inputs (model file
bytes, safetensors headers and specs, spec text, configuration mappings and files, job JSON); any exception other
than our own error types fails the run with the smallest input that raises it. Findings and fixes are in
docs/hostile-input.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess  # nosec B404: runs pytest with a fixed argument list, never a shell
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=20000, help="inputs drawn per property (default 20000)")
    args = parser.parse_args(argv)
    env = {**os.environ, "MTL_FUZZ_EXAMPLES": str(args.examples)}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "test_fuzz.py")]
    return subprocess.call(command, cwd=ROOT, env=env)  # nosec B603: fixed arguments


if __name__ == "__main__":
    sys.exit(main())
