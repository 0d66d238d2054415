"""Benchmark of the plugin's process split: torch in the worker, ONNX Runtime in QGIS.

Not a test: it prints figures measured in one run on this machine. Usage::

    .venv/bin/python bench/worker.py [--repeat 3]

On the real sample scene (489 x 443 px) with the bundled default model it measures, each in a fresh
subprocess so import costs are those a user meets:

* the worker's start-up: the time to import torch and segmentation-models-pytorch;
* a panel run as it was before the split: PyTorch in the same process (torch import + prediction);
* a panel run now: ONNX Runtime in QGIS's process (onnxruntime import + prediction) — the bundled
  ``.onnx`` model, or a ``.safetensors`` model whose export is in the cache;
* the first run of a ``.safetensors`` model: export by the worker (start-up, torch import, export),
  then the ONNX run; later runs find the export in the cache (hash of the file + lookup).

Median of ``--repeat`` runs each.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ONNX_MODEL = ROOT / "resources" / "default_model.mtl.onnx"

PREDICT = """
import sys, time
t = time.perf_counter()
from mtl_core.jobs import Job, run_job
run_job(Job(kind="predict", model=sys.argv[1], raster=sys.argv[2], out=sys.argv[3], backend=sys.argv[4],
            device="cpu"))
print(time.perf_counter() - t)
"""
IMPORT_TORCH = """
import time
t = time.perf_counter()
import torch, segmentation_models_pytorch
print(time.perf_counter() - t)
"""
CACHE_HIT = """
import sys, time
t = time.perf_counter()
from plugin.core.worker import WorkerClient, cached_onnx
path, hit = cached_onnx(sys.argv[1], sys.argv[2], WorkerClient("/bin/false"))
assert hit
print(time.perf_counter() - t)
"""


def timed(code: str, *args: str) -> float:
    """Seconds the snippet reports (its own work, interpreter start excluded)."""
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, capture_output=True, check=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3, help="runs per measurement (median; default 3)")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from mtl_core.sample_data import prepare_sample

    raster = str(prepare_sample("raleigh").parent / "raleigh_vnir.tif")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights = tmp / "default.mtl.safetensors"
        # The same network as the bundled .onnx, as a PyTorch model file (what the panel used to run).
        from mtl_core.engine.runtime import read_spec
        from mtl_core.modelfile import save_model
        from mtl_core.model import create_model

        spec = read_spec(ONNX_MODEL)
        save_model(weights, spec, create_model(spec).state_dict())

        def median(f) -> float:
            return statistics.median(f() for _ in range(args.repeat))

        def out() -> str:
            return tempfile.mkdtemp(dir=tmp)

        torch_import = median(lambda: timed(IMPORT_TORCH))
        before = median(lambda: timed(PREDICT, str(weights), raster, out(), "torch"))
        after = median(lambda: timed(PREDICT, str(ONNX_MODEL), raster, out(), "onnx"))
        cache = tmp / "cache"
        export = median(lambda: wall([sys.executable, "-m", "mtl_core.cli", "export", str(weights), "--onnx",
                                      str(tmp / "e.onnx")]))
        from plugin.core.worker import WorkerClient, cached_onnx

        cached_onnx(weights, cache, WorkerClient(sys.executable))
        hit = median(lambda: timed(CACHE_HIT, str(weights), str(cache)))
    print(f"sample scene {raster} (489 x 443 px), default model, CPU, median of {args.repeat}")
    print(f"  worker start-up: import torch + smp            {torch_import:6.2f} s")
    print(f"  panel run before (PyTorch in QGIS's process)   {before:6.2f} s")
    print(f"  panel run now (ONNX Runtime in QGIS's process) {after:6.2f} s   ratio before/now {before / after:5.2f}")
    print(f"  first run of a .safetensors model: export      {export:6.2f} s   (+ the ONNX run)")
    print(f"  later runs: cached export found in             {hit:6.3f} s   (plugin import + file hash)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
