"""Benchmark of the streaming engine: throughput against the bare forward pass, memory, cost per product.

Not a test: it prints ratios measured in one run on this machine. Usage::

    .venv/bin/python bench/inference.py [--size 8192] [--tile 256] [--overlap 16] [--batch 1]
                                        [--backends torch onnx onnx-int8] [--threads 2] [--deepness-src DIR]

It builds (once, cached) a raster of at least SIZE x SIZE pixels by tiling the interior of the real
sample scene, and a U-Net/ResNet-18 model (smp defaults: depth 5) with the sample's 4 bands, 7 classes
and a 2-band SWIR reconstruction head (random weights: speed does not depend on them), exported to ONNX
and to int8 ONNX too. For each backend it measures the bare forward pass on full tiles and on the very batches
the end-to-end run computes (the plan's tiles, overlaps and smaller edge tiles included: no reading, blending or
writing), the end-to-end run on SIZE^2 and on SMALL^2 (main, confidence, entropy and reconstruction written), and
the cost of each product. The ratio of the end-to-end run to the second bare pass, per CPU-second, is the
engine's own efficiency (both count the raster's megapixels); the ratio to the first also counts what the
overlap costs. Each measurement runs in a fresh subprocess, so peak RSS is that run's own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CACHE = Path(os.environ.get("MTL_EXPLAIN_CACHE", Path.home() / ".cache" / "mtl-explain")) / "bench"


def build_mosaic(size: int, name: str = "vnir") -> Path:
    """A GeoTIFF of at least size x size px, tiled from the valid interior of one raster of the sample scene
    (``vnir``, ``swir`` or ``landcover``: the same tiling, so they stay aligned)."""
    from osgeo import gdal

    from mtl_core.sample_data import prepare_sample

    gdal.UseExceptions()
    out = CACHE / (f"mosaic_{size}.tif" if name == "vnir" else f"mosaic_{name}_{size}.tif")
    if out.exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    src = prepare_sample("raleigh").parent / f"raleigh_{name}.tif"
    ds = gdal.Open(str(src))
    x0, dx, _, y0, _, dy = ds.GetGeoTransform()
    cx, cy, cw, ch = 24, 24, ds.RasterXSize - 48, ds.RasterYSize - 48  # inside the nodata border
    nx, ny = -(-size // cw), -(-size // ch)

    def band_xml(b: int) -> str:
        band = ds.GetRasterBand(b)
        nodata = band.GetNoDataValue()
        return (f'<VRTRasterBand dataType="{gdal.GetDataTypeName(band.DataType)}" band="{b}">'
                + (f"<NoDataValue>{nodata:g}</NoDataValue>" if nodata is not None else "")
                + "".join(f"<SimpleSource><SourceFilename>{src}</SourceFilename><SourceBand>{b}</SourceBand>"
                          f'<SrcRect xOff="{cx}" yOff="{cy}" xSize="{cw}" ySize="{ch}"/>'
                          f'<DstRect xOff="{i * cw}" yOff="{j * ch}" xSize="{cw}" ySize="{ch}"/></SimpleSource>'
                          for j in range(ny) for i in range(nx))
                + f"<Description>{band.GetDescription()}</Description></VRTRasterBand>")

    gt = f"{x0 + cx * dx}, {dx}, 0, {y0 + cy * dy}, 0, {dy}"
    xml = (f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}"><SRS>{ds.GetProjection()}</SRS>'
           f"<GeoTransform>{gt}</GeoTransform>{''.join(band_xml(b) for b in range(1, ds.RasterCount + 1))}"
           "</VRTDataset>")
    tmp = out.with_suffix(".tmp.tif")
    gdal.Translate(str(tmp), xml, creationOptions=["TILED=YES", "COMPRESS=ZSTD", "BIGTIFF=YES", "NUM_THREADS=2"])
    tmp.rename(out)
    return out


def build_model(tile: int, calibration: Path) -> dict[str, Path]:
    """Model files with random weights: U-Net/ResNet-18 (depth 5), 4 bands in, 7 classes, SWIR head; as
    safetensors (PyTorch), ONNX and int8 ONNX (calibrated on tiles of ``calibration``)."""
    import torch

    from mtl_core.training.export import export_onnx
    from mtl_core.model import create_model
    from mtl_core.modelfile import save_model
    from mtl_core.spec import Architecture, Band, ClassInfo, Modality, ModelSpec

    path = CACHE / "bench_unet_resnet18.mtl.safetensors"
    paths = {"torch": path, "onnx": path.with_name("bench_unet_resnet18.onnx"),
             "onnx-int8": path.with_name("bench_unet_resnet18.int8.onnx")}
    if all(p.exists() for p in paths.values()):
        return paths
    torch.manual_seed(0)
    spec = ModelSpec(
        name="benchmark U-Net/ResNet-18, random weights",
        task="segmentation",
        variant="mtl",
        inputs=[Modality("optical", [Band(n, 70.0, 15.0) for n in ("blue", "green", "red", "nir")], "DN")],
        aux=[Modality("swir", [Band("swir1", 80.0, 20.0), Band("swir2", 60.0, 20.0)], "DN")],
        classes=[ClassInfo(i, f"class {i}", "#808080") for i in range(1, 8)],
        architecture=Architecture(encoder="resnet18", encoder_depth=5),
        patch_size=tile,
        input_nodata=-99999.0,
    )
    save_model(path, spec, create_model(spec).state_dict())
    export_onnx(path, paths["onnx"])
    export_onnx(path, paths["onnx-int8"], calibration=calibration)
    return paths


def child(job: dict) -> dict:
    """One measurement, in its own process: returns its seconds, megapixels and peak RSS."""
    import numpy as np

    from mtl_core.engine.runtime import open_runner
    from mtl_core.engine import PredictOptions, predict
    from mtl_core.io.raster import bound_gdal_cache, share_malloc_arena

    bound_gdal_cache()  # as the mtl command does
    share_malloc_arena()
    if job["backend"] == "torch":  # time the engine, not Python importing PyTorch
        import segmentation_models_pytorch  # noqa: F401
        import torch  # noqa: F401
    else:
        import onnxruntime  # noqa: F401

    if job["kind"] == "bare":  # the runner alone on random tiles: no reading, blending or writing
        _, runner = open_runner(job["model"], job["engine"], "cpu", job["threads"])
        x = np.random.default_rng(0).normal(size=(job["batch"], 4, job["tile"], job["tile"])).astype(np.float32)
        runner(x)  # warm-up
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(job["repeats"]):
            runner(x)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        mp = job["repeats"] * job["batch"] * job["tile"] ** 2 / 1e6
    elif job["kind"] == "bare-plan":  # the runner alone on the very batches the engine runs: same tiles, same shapes
        from osgeo import gdal

        from mtl_core.engine.tiling import Plan

        spec, runner = open_runner(job["model"], job["engine"], "cpu", job["threads"])
        ds = gdal.Open(job["raster"])
        plan = Plan.of(spec, ds.RasterXSize, ds.RasterYSize, runner.divisor, job["tile"], job["overlap"],
                       PredictOptions().chunk, job["batch"])
        rng = np.random.default_rng(0)
        shapes = [(len(tiles), 4, plan.rows[k][1], tiles[0][1]) for _, k, tiles in plan.batches]
        # One random array per shape: the pass does not depend on the values.
        inputs = {shape: rng.normal(size=shape).astype(np.float32) for shape in dict.fromkeys(shapes)}
        for x in inputs.values():
            runner(x)  # warm-up, once per shape (as the engine's first batches are)
        start, cpu = time.perf_counter(), time.process_time()
        for shape in shapes:
            runner(inputs[shape])
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        mp = ds.RasterXSize * ds.RasterYSize / 1e6  # the raster's pixels, as the end-to-end run counts them
    else:
        with tempfile.TemporaryDirectory() as out:
            opts = PredictOptions(tile=job["tile"], overlap=job["overlap"], batch_size=job["batch"], device="cpu",
                                  backend=job["engine"], threads=job["threads"], products=tuple(job["products"]),
                                  extent=job.get("extent"))
            cpu = time.process_time()
            result = predict(job["model"], job["raster"], out, opts)
            seconds, cpu = result.seconds, time.process_time() - cpu
            mp = result.grid.width * result.grid.height / 1e6
    return {"seconds": seconds, "mp": mp, "mp_per_s": mp / seconds, "mp_per_cpu_s": mp / cpu,
            "torch_imported": "torch" in sys.modules,
            "peak_rss_mib": peak_rss_mib()}


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM). Not ru_maxrss: Linux carries that over fork and exec,
    so a child would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def run(job: dict) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def extent_of(raster: Path, pixels: int) -> tuple[float, float, float, float]:
    from osgeo import gdal

    x0, dx, _, y0, _, dy = gdal.Open(str(raster)).GetGeoTransform()
    return (x0, y0 + pixels * dy, x0 + pixels * dx, y0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=8192, help="side of the large raster in pixels (default 8192)")
    p.add_argument("--small", type=int, default=1024, help="side of the small raster for memory (default 1024)")
    p.add_argument("--products-size", type=int, default=2048, help="side of the raster for per-product costs")
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--overlap", type=int, default=16)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backends", nargs="+", default=["torch", "onnx", "onnx-int8"],
                   choices=["torch", "onnx", "onnx-int8"], help="onnx-int8: the int8-quantised ONNX export")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--deepness-src", type=Path,
                   help="the src folder of a Deepness 0.6.5 checkout: also run bench/deepness.py on the same size "
                        "(bundled default model), so the lead over Deepness prints in this run too")
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    raster = build_mosaic(args.size)
    models = build_model(args.tile, raster)
    default = ["main", "confidence", "entropy", "aux"]
    print(f"raster {raster.name} ({args.size}^2 px, ZSTD GeoTIFF), tile {args.tile}, overlap {args.overlap}, "
          f"batch {args.batch}, {args.threads} threads; U-Net/ResNet-18 (depth 5), 4 bands, 7 classes + 2-band "
          "reconstruction; end to end writes main + confidence + entropy + reconstruction")
    for backend in args.backends:
        base = {"model": str(models[backend]), "raster": str(raster), "tile": args.tile, "overlap": args.overlap,
                "batch": args.batch, "threads": args.threads, "backend": backend, "engine": backend.split("-")[0]}
        # This machine's speed drifts by several per cent from minute to minute: the bare pass is measured
        # before and after the end-to-end run, and the ratio uses the faster of the two (the stricter one).
        bare_runs = [run({**base, "kind": "bare", "repeats": max(8, 64 // args.batch)})]
        plan_runs = [run({**base, "kind": "bare-plan"})]
        large = run({**base, "kind": "predict", "products": default})
        plan_runs.append(run({**base, "kind": "bare-plan"}))
        bare_runs.append(run({**base, "kind": "bare", "repeats": max(8, 64 // args.batch)}))
        bare = max(bare_runs, key=lambda r: r["mp_per_s"])
        small = run({**base, "kind": "predict", "products": default, "extent": extent_of(raster, args.small)})
        runs = ", ".join(f"{r['mp_per_s']:.3f}" for r in bare_runs)
        print(f"[{backend}] bare forward pass:        {bare['mp_per_s']:.3f} MP/s (runs: {runs})")
        print(f"[{backend}] end to end {args.size}^2:      {large['mp_per_s']:.3f} MP/s ({large['seconds']:.1f} s)"
              f"{'' if large['torch_imported'] else ', torch never imported'}")
        print(f"[{backend}] throughput ratio:         {large['mp_per_s'] / bare['mp_per_s']:.3f}  (target >= 0.85; "
              f"overlap alone caps it at {(args.tile - args.overlap) ** 2 / args.tile ** 2:.3f})")
        cpu_bare = max(r["mp_per_cpu_s"] for r in bare_runs)
        print(f"[{backend}] per CPU-second:           end to end {large['mp_per_cpu_s']:.3f} MP, bare "
              f"{cpu_bare:.3f} MP: ratio {large['mp_per_cpu_s'] / cpu_bare:.3f}  (counts the overlap's cost)")
        # The engine's own cost: the same forward passes (the plan's tiles, overlaps and edge tiles included) with
        # nothing around them, against the whole run; both count the raster's megapixels.
        wall_plan, cpu_plan = (max(r[k] for r in plan_runs) for k in ("mp_per_s", "mp_per_cpu_s"))
        runs = ", ".join(f"{r['mp_per_cpu_s']:.3f}" for r in plan_runs)
        print(f"[{backend}] bare pass over the run's own tiles: {wall_plan:.3f} MP/s, {cpu_plan:.3f} MP per "
              f"CPU-second (runs: {runs})")
        print(f"[{backend}] end to end / that pass:  wall {large['mp_per_s'] / wall_plan:.3f}, per CPU-second "
              f"{large['mp_per_cpu_s'] / cpu_plan:.3f}  (target >= 0.85)")
        print(f"[{backend}] peak RSS {args.size}^2 / {args.small}^2: {large['peak_rss_mib']:.0f} / "
              f"{small['peak_rss_mib']:.0f} MiB = {large['peak_rss_mib'] / small['peak_rss_mib']:.3f}  "
              "(target <= 1.3)")
        print(f"[{backend}] seconds per megapixel on {args.products_size}^2, products added one at a time:")
        extent = extent_of(raster, args.products_size)
        previous, chosen = 0.0, []
        for product in ["main", "confidence", "entropy", "aux", "probabilities", "sensitivity"]:
            chosen.append(product)
            r = run({**base, "kind": "predict", "products": chosen, "extent": extent})
            s_per_mp = r["seconds"] / r["mp"]
            print(f"[{backend}]   + {product:<14} {s_per_mp:7.3f} s/MP in all, {s_per_mp - previous:+7.3f} s/MP "
                  "for this product")
            previous = s_per_mp
            if chosen == default:
                middle = r["peak_rss_mib"]
        print(f"[{backend}] peak RSS {args.small}^2 / {args.products_size}^2 / {args.size}^2: "
              f"{small['peak_rss_mib']:.0f} / {middle:.0f} / {large['peak_rss_mib']:.0f} MiB (the same products)")
    if args.deepness_src:  # Deepness runs inside QGIS's Python stack: its own process, as a measurement does
        done = subprocess.run([sys.executable, str(Path(__file__).with_name("deepness.py")), "--deepness-src",
                               str(args.deepness_src), "--size", str(args.size), "--threads", str(args.threads),
                               "--repeats", "1"], capture_output=True, text=True, check=False)
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith(("  ", "Class maps", f"{args.size}"))]
        for line in lines or [f"bench/deepness.py failed: {done.stderr.strip()[-500:]}"]:
            print(f"[deepness] {line}")


if __name__ == "__main__":
    main()
