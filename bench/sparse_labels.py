"""Sparse polygon labels against full raster labels, on the real sample, scored on the same held-out blocks.

Not a test: it prints a table measured in one run. Usage (about 3 min per seed on 2 CPU cores at 300 steps)::

    .venv/bin/python bench/sparse_labels.py [--steps 300] [--keep 0.1] [--seeds 0 1 2] [--out results.json]

For each seed:

* **full**: the sample's land-cover raster as labels (every pixel of the scene labelled);
* **sparse**: polygons made from that raster as a user would digitise them (polygonised in 32 px squares, then
  a seeded ``--keep`` fraction of each class's polygons kept), written as a GeoPackage in WGS 84 with a text
  class field, and trained from through the vector-label path. Polygons are taken only outside the full run's
  validation and test blocks, so neither model has seen a test pixel;
* both with the same steps, batch size, network and seed, then scored with training's own ``evaluate`` on the
  **full run's test blocks with the complete raster labels** (the same pixels for both).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from osgeo import gdal

from mtl_core.config import load_config
from mtl_core.io.labels import polygons_from_raster
from mtl_core.model import create_model
from mtl_core.sample_data import prepare_sample
from mtl_core.training.data import SampleReader, Scene, block_split
from mtl_core.training.train import TrainOptions, evaluate, train


def _masked_labels(cfg, blocks: list, out: Path) -> Path:
    """The label raster with ``blocks`` set to nodata: polygons drawn from it never touch them."""
    gdal.Translate(str(out), str(cfg.labels.path))
    ds = gdal.Open(str(out), gdal.GA_Update)
    band = ds.GetRasterBand(1)
    arr = band.ReadAsArray()
    for x, y, w, h in blocks:
        arr[y:y + h, x:x + w] = band.GetNoDataValue() or 0
    band.WriteArray(arr)
    ds = None
    return out


def run_seed(config: Path, seed: int, steps: int, keep: float, batch_size: int, folder: Path) -> dict:
    cfg = load_config(config)
    cfg.split.seed = seed
    scene = Scene(cfg)
    blocks = block_split(scene, cfg.split)
    classes = {c.value: c.name for c in scene.classes}
    masked = _masked_labels(cfg, blocks["val"] + blocks["test"], folder / f"masked_{seed}.tif")
    gpkg = polygons_from_raster(masked, folder / f"sparse_{seed}.gpkg", classes, keep=keep, seed=seed, epsg=4326)
    raw = yaml.safe_load(config.read_text())
    for group in ("inputs", "aux"):
        for m in raw[group].values():
            m["path"] = str((config.parent / m["path"]).resolve())
    raw["labels"] = {"path": str(gpkg), "field": "class", "task": "segmentation",  # the raster's class order
                     "classes": {c.name: c.color for c in scene.classes}}
    raw["split"]["seed"] = seed
    sparse_config = folder / f"sparse_{seed}.yaml"
    sparse_config.write_text(yaml.safe_dump(raw, sort_keys=False))
    opts = TrainOptions(variant="mtl", steps=steps, batch_size=batch_size, eval_every=max(steps // 4, 1), seed=seed,
                        device="cpu")
    row = {"seed": seed}
    reader_full = None
    for name, c in (("full", cfg), ("sparse", load_config(sparse_config))):
        start = time.perf_counter()
        result = train(c, opts, progress=False)
        model = create_model(result.spec)
        model.load_state_dict(result.state_dict)
        if reader_full is None:
            reader_full = SampleReader(scene, "mtl", result.spec.inputs, result.spec.aux)
        metrics = evaluate(model, result.spec, reader_full, blocks["test"], torch.device("cpu"))
        labelled = result.spec.training["data"]["labelled_pixels"]
        row[name] = {"miou": metrics["miou"], "overall_accuracy": metrics["overall_accuracy"],
                     "train_labelled_px": labelled["train"], "blocks": result.spec.training["data"]["blocks"],
                     "seconds": time.perf_counter() - start}
    return row


def markdown(rows: list[dict], steps: int, keep: float) -> str:
    def ms(values: list[float]) -> str:
        return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 \
            else f"{values[0]:.3f}"

    lines = [f"| labels ({steps} steps, {len(rows)} seed(s)) | training pixels labelled | test mIoU | test OA |",
             "| --- | --- | --- | --- |"]
    for name, what in (("full", "full land-cover raster"),
                       ("sparse", f"polygons, {keep:.0%} of each class's, WGS 84 GeoPackage")):
        px = [r[name]["train_labelled_px"] for r in rows]
        lines.append(f"| {what} | {int(np.mean(px)):,} | {ms([r[name]['miou'] for r in rows])} | "
                     f"{ms([r[name]['overall_accuracy'] for r in rows])} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=None, help="dataset configuration (default: the sample)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--keep", type=float, default=0.1)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    config = args.config or prepare_sample("raleigh")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run_seed(config, s, args.steps, args.keep, args.batch_size, Path(tmp)) for s in args.seeds]
    for r in rows:
        print(json.dumps(r))
    print(markdown(rows, args.steps, args.keep))
    print(f"wall time {time.perf_counter() - start:.0f} s")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
