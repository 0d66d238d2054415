"""Train the plugin's bundled default model on the real sample scene, reproducibly.

Run by ``make default-model``. It prepares the Raleigh sample (``mtl sample-data``), trains the
``mtl`` variant with a shallow encoder on the CPU with a fixed seed, stores the weights in float16
and exports them to ONNX with the full spec: ``resources/default_model.mtl.onnx`` (QGIS runs models on
ONNX Runtime only, so the bundled model is an ``.onnx`` file). ``--keep-safetensors`` also keeps the
PyTorch model file beside it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

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
    if not args.keep_safetensors:
        weights.unlink()
    metrics = {k: round(v, 3) for k, v in result.spec.training["metrics"].items()}
    logging.info("wrote %s (%.1f MB); held-out test metrics %s", args.out, args.out.stat().st_size / 1e6, metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())
