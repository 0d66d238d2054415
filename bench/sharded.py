"""Benchmark of sharded prediction (``mtl predict --workers N``): the speed-up of 1 -> N Dask workers against a
single-process run, and the figures the scaling model of docs/scale.md is built from.

Not a test: it prints what it measures in one run on this machine. Usage::

    .venv/bin/python bench/sharded.py [--width 8192] [--height 2048] [--workers 1 2] [--repeat 2] [--vrt]

On a WIDTH x HEIGHT mosaic of the sample scene (see ``bench/inference.py``) it runs the bundled default model
with the four default products: once in one process (ONNX Runtime with every core), then with each number of
workers (LocalCluster, the cores shared among them), and with ``--vrt`` each of those again writing VRTs over the
shards instead of copying them, median of REPEAT runs each, interleaved. It prints the wall time, megapixels per
second, the ratio to the single run, the CPU seconds of all processes, and for the sharded runs their phases:
cluster start, the shards (slowest shard, tiles per shard, MP/s per shard), the copy of the shards into the final
GeoTIFFs (MP/s; done as each shard finishes) and what is left after the last shard.
"""

from __future__ import annotations

import argparse
import logging
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.inference import CACHE  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "resources" / "default_model.mtl.onnx"


def mosaic(width: int, height: int) -> Path:
    """A width x height window of the square mosaic of the sample (built once, cached)."""
    from osgeo import gdal

    from bench.inference import build_mosaic

    out = CACHE / f"mosaic_{width}x{height}.tif"
    if not out.exists():
        tmp = out.with_suffix(".tmp.tif")
        gdal.Translate(str(tmp), str(build_mosaic(max(width, height))), srcWin=[0, 0, width, height],
                       creationOptions=["TILED=YES", "COMPRESS=ZSTD", "BIGTIFF=YES"])
        tmp.rename(out)
    return out


def run(raster: Path, workers: int | None, vrt: bool = False):
    """Wall seconds, the result, and the CPU seconds of this process and of the worker processes (ended by then)."""
    from mtl_core.engine import PredictOptions, predict

    def cpu() -> float:
        return sum(u.ru_utime + u.ru_stime for u in map(resource.getrusage, (resource.RUSAGE_SELF,
                                                                             resource.RUSAGE_CHILDREN)))

    with tempfile.TemporaryDirectory(dir=CACHE) as out:
        start, used = time.perf_counter(), cpu()
        result = predict(MODEL, raster, out, PredictOptions(device="cpu", backend="onnx", workers=workers, vrt=vrt))
        return time.perf_counter() - start, result, cpu() - used


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=8192)
    p.add_argument("--height", type=int, default=2048)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--vrt", action="store_true", help="also each number of workers with --vrt (no copy)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import os

    raster = mosaic(args.width, args.height)
    mp = args.width * args.height / 1e6
    print(f"raster {args.width} x {args.height} ({mp:.1f} MP), {os.cpu_count()} cores, default model, "
          "products: main confidence entropy aux; median of", args.repeat)
    settings = [(None, False)] + [(w, False) for w in args.workers] + [(w, True) for w in args.workers if args.vrt]
    runs: dict[str, list] = {}
    for _ in range(args.repeat):  # interleaved, so a busy moment of the machine hits every setting alike
        for workers, vrt in settings:
            key = "1 process" if workers is None else f"{workers} workers" + (" --vrt" if vrt else "")
            runs.setdefault(key, []).append(run(raster, workers, vrt))
    single = statistics.median(t for t, _, _ in runs["1 process"])
    print(f"{'setting':<16} {'wall s':>7} {'MP/s':>6} {'x single':>8} {'CPU s':>6}   phases (median run)")
    for key, results in runs.items():
        wall = statistics.median(t for t, _, _ in results)
        line = f"{key:<16} {wall:7.2f} {mp / wall:6.2f} {single / wall:8.2f} " \
               f"{statistics.median(c for _, _, c in results):6.1f}"
        if key != "1 process":
            _, r, _ = sorted(results, key=lambda x: x[0])[len(results) // 2]
            t = r.timings
            per_shard = t["shard_seconds"]
            shard_mp = [mp * n / r.tiles / s for n, s in zip(t["shard_tiles"], t["shard_seconds"])]
            line += (f"   cluster {t['cluster']:.2f} s, shards {t['shards']:.2f} s ({len(per_shard)} shards, slowest "
                     f"{max(per_shard):.2f} s, tiles {t['shard_tiles']} of {r.tiles}, "
                     f"{statistics.mean(shard_mp):.2f} MP/s per shard), " + (
                         f"copy into the outputs {t['copy']:.2f} s ({mp / t['copy']:.1f} MP/s, overlapping the "
                         "shards), " if t["copy"] else "") + f"after the last shard {t['merge']:.2f} s")
        print(line)


if __name__ == "__main__":
    main()
