"""Benchmark of the output layers' size and writing cost: packed integers with scale/offset (the default) against
``--float32``.

Not a test: it prints what it measures in one run on this machine. Usage::

    .venv/bin/python bench/outputs.py [--size 8192] [--time-size 2048] [--threads 2]

On a SIZE x SIZE mosaic of the sample scene (input bands, real SWIR and labels tiled alike, see
``bench/inference.py``) it runs the bundled default model's explanation once with packed layers and once with
``float32`` and prints, per layer, the file size of both, their ratio and the largest difference between the
packed and the float values (in the layer's units, against the layer's packing step). Then, on TIME-SIZE^2, the
time each default product adds to a run writing the class map alone, in both modes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.inference import build_mosaic  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "resources" / "default_model.mtl.onnx"
EXPLAIN = ("main", "confidence", "entropy", "probabilities", "aux", "recon_error", "main_error", "error_score",
           "agreement", "error_probability")
TIMED = ("confidence", "entropy", "aux")


def run(raster: Path, swir: Path, labels: Path, out: Path, products: tuple[str, ...], float32: bool, threads: int):
    from mtl_core.engine import PredictOptions, predict

    opts = PredictOptions(products=products, float32=float32, threads=threads, device="cpu", backend="onnx",
                          aux_truth={"swir": str(swir)}, labels=str(labels))
    start = time.perf_counter()
    result = predict(MODEL, raster, out, opts)
    return result, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=8192, help="side of the raster for sizes (default 8192)")
    p.add_argument("--time-size", type=int, default=2048, help="side of the raster for per-product times")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    import numpy as np
    from osgeo import gdal

    from mtl_core.engine.products import plan_layers
    from mtl_core.engine.product import Available
    from mtl_core.engine.runtime import read_spec
    from mtl_core.io.raster import read_values

    gdal.UseExceptions()
    spec = read_spec(MODEL)
    layers = {la.key: la for _, la in plan_layers(spec, EXPLAIN, Available.of(spec, {"swir"}, True))}
    rasters = [build_mosaic(args.size, n) for n in ("vnir", "swir", "landcover")]
    print(f"Output sizes, {args.size}² px, default model, {', '.join(EXPLAIN)}:")
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for float32 in (True, False):
            out = Path(tmp) / ("float32" if float32 else "packed")
            out.mkdir()
            runs[float32] = run(*rasters, out, EXPLAIN, float32, args.threads)
        (f32, f32_s), (packed, packed_s) = runs[True], runs[False]
        print(f"{'layer':<22}{'type':>8}{'float32 MB':>12}{'packed MB':>11}{'ratio':>7}  max |packed - float| (step)")
        total = [0, 0]
        for key, path in packed.outputs.items():
            a, b = Path(f32.outputs[key]).stat().st_size, Path(path).stat().st_size
            total[0] += a
            total[1] += b
            layer = layers[key]
            diff = ""
            if layer.packed:
                x, y = read_values(f32.outputs[key]), read_values(path)
                both = np.isfinite(x) & np.isfinite(y)
                step = max(layer.band_scale(i)[0] for i in range(layer.bands))
                alike = bool((both == np.isfinite(x)).all())
                diff = f"{np.abs(x - y)[both].max():.4g} ({step:.3g}); nodata alike: {alike}"
            print(f"{key:<22}{gdal.GetDataTypeName(layer.dtype):>8}{a / 1e6:12.1f}{b / 1e6:11.1f}{a / b:7.2f}  {diff}")
        print(f"{'all':<30}{total[0] / 1e6:12.1f}{total[1] / 1e6:11.1f}{total[0] / total[1]:7.2f}")
        four = [sum(Path(r.outputs[k]).stat().st_size for k in ("main", "confidence", "entropy", "aux_swir"))
                for r in (f32, packed)]
        print(f"{'mtl predict defaults (4)':<30}{four[0] / 1e6:12.1f}{four[1] / 1e6:11.1f}{four[0] / four[1]:7.2f}")
        print(f"wall: float32 {f32_s:.1f} s, packed {packed_s:.1f} s (ratio {f32_s / packed_s:.2f})")

        rasters = [build_mosaic(args.time_size, n) for n in ("vnir", "swir", "landcover")]
        print(f"\nTime each product adds to the class map alone, {args.time_size}² px (s; one run each):")
        base = {}
        for float32 in (True, False):
            out = Path(tmp) / f"t{float32}main"
            out.mkdir()
            base[float32] = run(*rasters, out, ("main",), float32, args.threads)[1]
        print(f"{'product':<16}{'float32':>9}{'packed':>9}   (main alone: {base[True]:.1f} / {base[False]:.1f} s)")
        for name in TIMED:
            added = []
            for float32 in (True, False):
                out = Path(tmp) / f"t{float32}{name}"
                out.mkdir()
                added.append(run(*rasters, out, ("main", name), float32, args.threads)[1] - base[float32])
            print(f"{name:<16}{added[0]:9.2f}{added[1]:9.2f}")


if __name__ == "__main__":
    main()
