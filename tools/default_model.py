"""Train the plugin's bundled default model on the real sample scene, reproducibly.

Run by ``make default-model``. It prepares the Raleigh sample (``mtl sample-data``), trains the
``mtl`` variant with a shallow encoder on the CPU with a fixed seed, stores the weights in float16
and exports them to ONNX with the full spec: ``resources/default_model.mtl.onnx`` (QGIS runs models on
ONNX Runtime only, so the bundled model is an ``.onnx`` file), then as int8 (``default_model.int8.mtl.onnx``,
calibrated on the sample's input raster): the panel's and Processing's "fast" choice. The int8 file's spec
records what was measured here against the float file on the sample scene (share of pixels with the same class,
speed-up of the forward pass), which the panel shows. ``--keep-safetensors`` also keeps the PyTorch model file
beside them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import torch

from mtl_core.training.export import export_onnx
from mtl_core.config import load_config
from mtl_core.modelfile import save_model
from mtl_core.sample_data import prepare_sample
from mtl_core.spec import Architecture
from mtl_core.training.train import TrainOptions, train

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "resources" / "default_model.mtl.onnx"


def main(argv: list[str] | None = None) -> int:
    """Train and write the default model; returns the process exit status."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"model file to write (default: {DEFAULT_OUT})")
    p.add_argument("--steps", type=int, default=300, help="optimiser steps (default: 300)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (default: 2)")
    p.add_argument("--keep-safetensors", action="store_true", help="also keep the .safetensors model file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    cfg = load_config(prepare_sample("raleigh"))
    opts = TrainOptions(variant="mtl", steps=args.steps, batch_size=16, eval_every=50, device="cpu", seed=0,
                        architecture=Architecture(encoder_depth=3))
    result = train(cfg, opts, progress=False)
    result.spec.name = "Default model: Raleigh land cover, VNIR in, SWIR reconstructed"
    weights = args.out.with_name(args.out.name.replace(".onnx", "") + ".safetensors")
    save_model(weights, result.spec, result.state_dict, half=True)
    export_onnx(weights, args.out)
    int8 = args.out.with_name(args.out.name.replace(".mtl.onnx", ".int8.mtl.onnx"))
    raster = cfg.inputs[0].path
    export_onnx(weights, int8, calibration=raster)
    if not args.keep_safetensors:
        weights.unlink()
    measured = measure_int8(args.out, int8, raster, args.threads)
    set_quantization_measurement(int8, measured)
    metrics = {k: round(v, 3) for k, v in result.spec.training["metrics"].items()}
    logging.info("wrote %s (%.1f MB); held-out test metrics %s", args.out, args.out.stat().st_size / 1e6, metrics)
    logging.info("wrote %s (%.1f MB); against float32: %s", int8, int8.stat().st_size / 1e6, measured)
    return 0


def measure_int8(float_path: Path, int8_path: Path, raster: Path, threads: int) -> dict:
    """Class-map agreement of the int8 model with the float one through the engine on ``raster``, and the speed-up
    of the bare forward pass (batch 4 of 256 px tiles, median of 5)."""
    from osgeo import gdal

    from mtl_core.engine import PredictOptions, predict
    from mtl_core.engine.runtime import open_runner

    maps = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, path in enumerate((float_path, int8_path)):
            out = Path(tmp) / str(i)
            out.mkdir()
            result = predict(path, raster, out, PredictOptions(products=("main",), backend="onnx", threads=threads))
            maps.append(gdal.Open(str(result.outputs["main"])).ReadAsArray())
    valid = maps[0] > 0
    seconds = []
    x = np.random.default_rng(0).normal(size=(4, 4, 256, 256)).astype(np.float32)
    for path in (float_path, int8_path):
        _, runner = open_runner(path, "onnx", "cpu", threads)
        runner(x)
        times = []
        for _ in range(5):
            start = time.perf_counter()
            runner(x)
            times.append(time.perf_counter() - start)
        seconds.append(float(np.median(times)))
    return {"same_class": round(float((maps[0] == maps[1])[valid].mean()), 4),
            "speedup": round(seconds[0] / seconds[1], 2),
            "on": f"{raster.name}, {int(valid.sum())} pixels; forward pass, {threads} threads"}


def set_quantization_measurement(path: Path, measured: dict) -> None:
    """Record ``measured`` under ``training.quantization.measured`` in an ONNX model file's spec."""
    import onnx

    from mtl_core.io.fileio import atomic_path
    from mtl_core.modelfile import SPEC_KEY

    proto = onnx.load(str(path))
    for entry in proto.metadata_props:
        if entry.key == SPEC_KEY:
            spec = json.loads(entry.value)
            spec["training"]["quantization"]["measured"] = measured
            entry.value = json.dumps(spec)
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))


if __name__ == "__main__":
    sys.exit(main())
