"""Where to label next, measured: do sites proposed from the explanation layers make labelling cheaper than random
or entropy sites?

A simulated user on each real sample scene. The eastern 30 % of the scene (whole 64 px cells) is the test area:
never labelled, never proposed, scored at every round against the scene's full reference. In the western 70 %,
the user starts from ``--start`` labelled squares drawn at random (the seed's own draw, the same for every
strategy), trains an ``mtl`` model (the product's default recipe, or with ``--recipe 2026-12-05`` the one the
published table used: depth-3 encoder, batch 16, 64 px crops, learning rate 1e-3, no class balance), then for
``--rounds`` rounds asks the product (``mtl_core.explain.sites``: the same code as ``mtl propose-sites``) for
``--count`` new sites with one strategy, labels them from the full
reference (what a user would digitise there: the reference's pixels in the square) and trains again from scratch
with the same budget. Strategies: ``random``, ``entropy``, ``error`` (the model's stored error detector: entropy,
confidence and reconstruction error) and ``mix`` (entropy and "confident but reconstruction unusual" in turn);
the last two read the real auxiliary rasters, as a user with them would. Sites are the model's patch size
(64 px), at least two site sizes apart, and only where the reference labels at least a quarter of the square.

Test mIoU (and overall accuracy) on the test area after each round, per strategy, mean ± sd over seeds; the JSON
lines hold every run, and ``--plot`` draws mIoU against labelled pixels.

Not a test. Usage::

    .venv/bin/python bench/where_to_label.py [--scenes raleigh berlin] [--seeds 0 1 2] [--rounds 3]
        [--start 8] [--count 8] [--steps 300] [--recipe product] [--threads 2] [--out where_to_label.json]
        [--plot docs/images/x.png]

A run resumes by (scene, seed) from ``--out``: give each recipe or step count its own file.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

STRATEGIES = ["random", "entropy", "error", "mix"]
CELL = 64
TEST_SHARE = 0.3
MIN_LABELLED = 0.25


def reference(scene: str) -> tuple[dict, Path, np.ndarray, list[tuple[int, str, str]]]:
    """The scene's configuration, its input raster, its full reference as an array of class values (0 =
    unlabelled) on the input grid, and its classes (value, name, colour)."""
    import yaml
    from osgeo import gdal

    from mtl_core.config import load_config
    from mtl_core.io.labels import PolygonLabels
    from mtl_core.io.raster import Grid
    from mtl_core.sample_data import prepare_sample

    config = prepare_sample(scene)
    raw = yaml.safe_load(config.read_text())
    cfg = load_config(config)
    raster = Path(cfg.inputs[0].path)
    ds = gdal.Open(str(raster))
    grid = Grid.of(ds)
    if cfg.labels.is_vector:
        poly = PolygonLabels(cfg.labels.path, cfg.labels.field_name, grid, "segmentation",
                             declared=raw["labels"].get("classes"), ignore=cfg.labels.ignore)
        values, labelled = poly.read((0, 0, grid.width, grid.height))
        ref = np.where(labelled, values, 0).astype(np.int32)
        classes = [(c.value, c.name, c.color) for c in poly.classes]
    else:
        lab_ds = gdal.Open(str(cfg.labels.path))
        lab = lab_ds.GetRasterBand(1)
        ref = lab.ReadAsArray().astype(np.int32)
        nodata = lab.GetNoDataValue()
        if nodata is not None:
            ref[ref == int(nodata)] = 0
        classes = [(c.value, c.name, c.color) for c in cfg.labels.classes]
        ref[~np.isin(ref, [v for v, _, _ in classes])] = 0
    return raw, raster, ref, classes


def write_labels(path: Path, raster: Path, ref: np.ndarray, cells: set[tuple[int, int]],
                 classes: list[tuple[int, str, str]]) -> None:
    """A label raster holding the reference inside the labelled cells, 0 (nodata) elsewhere."""
    from osgeo import gdal

    from mtl_core.io.raster import Grid, create_geotiff, set_classes

    grid = Grid.of(gdal.Open(str(raster)))
    out = np.zeros_like(ref, dtype=np.uint8)
    for r, c in cells:
        sl = (slice(r * CELL, (r + 1) * CELL), slice(c * CELL, (c + 1) * CELL))
        out[sl] = ref[sl]
    ds = create_geotiff(path, grid, 1, gdal.GDT_Byte, 0)
    ds.GetRasterBand(1).WriteArray(out)
    set_classes(ds.GetRasterBand(1), classes)
    ds = None


def test_score(main: Path, ref: np.ndarray, test_cols: int, classes: list[tuple[int, str, str]]) -> dict:
    """mIoU and overall accuracy of the prediction on the test area (cells from column ``test_cols`` on)."""
    from osgeo import gdal

    from mtl_core.metrics import ConfusionMatrix

    ds = gdal.Open(str(main))
    pred = ds.GetRasterBand(1).ReadAsArray()
    x0 = test_cols * CELL
    values = np.array([v for v, _, _ in classes])
    r, p = ref[:, x0:], pred[:, x0:]
    keep = (r > 0) & np.isin(p, values)
    cm = ConfusionMatrix(len(values))
    cm.update(np.searchsorted(values, r[keep]), np.searchsorted(values, p[keep]))
    s = cm.scores([n for _, n, _ in classes])
    return {"miou": s["miou"], "overall_accuracy": s["overall_accuracy"]}


#: the recipe of the table in docs/results.md (2026-12-05), before the product's recipe changed
OLD_RECIPE = {"batch_size": 16, "crop": None, "lr": 1e-3, "class_balance": "none"}


def train_and_run(raw: dict, labels: Path, classes: list[tuple[int, str, str]], folder: Path, seed: int, steps: int,
                  threads: int, raster: Path, recipe: str = "product") -> tuple:
    """Train mtl on the labelled cells; run it on the whole scene with the real auxiliary rasters."""
    import torch
    import yaml

    from mtl_core.config import load_config
    from mtl_core.engine import PredictOptions, predict
    from mtl_core.explain.sites import PRODUCTS
    from mtl_core.modelfile import save_model
    from mtl_core.spec import Architecture
    from mtl_core.training.train import TrainOptions, train

    torch.set_num_threads(threads)
    cfg_raw = {**raw, "labels": {"path": str(labels), "task": "segmentation",
                                 "classes": {v: {"name": n, "color": c} for v, n, c in classes}},
               "split": {"block_size": CELL, "val_fraction": 0.1, "test_fraction": 0.05, "seed": 0}}
    for section in ("inputs", "aux"):
        for m in cfg_raw[section].values():
            m["path"] = str(raster.parent / Path(m["path"]).name)
    (folder / "cfg.yaml").write_text(yaml.safe_dump(cfg_raw, sort_keys=False))
    old = {**OLD_RECIPE, "architecture": Architecture(encoder_depth=3)} if recipe != "product" else {}
    result = train(load_config(folder / "cfg.yaml"), TrainOptions(
        variant="mtl", steps=steps, eval_every=50, device="cpu", seed=seed, **old), progress=False)
    model = folder / "model.mtl.safetensors"
    save_model(model, result.spec, result.state_dict)
    out = folder / "run"
    out.mkdir()
    truth = {name: str(raster.parent / Path(m["path"]).name) for name, m in raw["aux"].items()}
    bands = {name: m["bands"] for name, m in raw["aux"].items()}
    run = predict(model, raster, out, PredictOptions(aux_truth=truth, aux_bands=bands, products=PRODUCTS,
                                                     threads=threads))
    return run, result.spec


def run_seed(scene: str, seed: int, args: argparse.Namespace, log) -> list[dict]:
    from mtl_core.explain.sites import propose_from_outputs

    raw, raster, ref, classes = reference(scene)
    rows_n, cols_n = math.ceil(ref.shape[0] / CELL), math.ceil(ref.shape[1] / CELL)
    test_cols = int(cols_n * (1 - TEST_SHARE))
    share = np.zeros((rows_n, cols_n))
    for r in range(rows_n):
        for c in range(cols_n):
            block = ref[r * CELL:(r + 1) * CELL, c * CELL:(c + 1) * CELL]
            share[r, c] = (block > 0).sum() / (CELL * CELL)
    pool = (share >= MIN_LABELLED)
    pool[:, test_cols:] = False
    rng = np.random.default_rng(1000 + seed)
    cells = [tuple(int(v) for v in rc) for rc in np.argwhere(pool)]
    start = {cells[i] for i in rng.choice(len(cells), size=args.start, replace=False)}
    out_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)

        def step(name: str, labelled: set, rnd: int) -> tuple:
            folder = tmp / f"{name}_{rnd}"
            folder.mkdir()
            labels = folder / "labels.tif"
            write_labels(labels, raster, ref, labelled, classes)
            t = time.perf_counter()
            run, spec = train_and_run(raw, labels, classes, folder, seed, args.steps, args.threads, raster,
                                      args.recipe)
            score = test_score(run.outputs["main"], ref, test_cols, classes)
            pixels = int(sum((ref[r * CELL:(r + 1) * CELL, c * CELL:(c + 1) * CELL] > 0).sum() for r, c in labelled))
            row = {"scene": scene, "seed": seed, "recipe": args.recipe, "round": rnd, "strategy": name,
                   "cells": len(labelled),
                   "labelled_pixels": pixels, "seconds": time.perf_counter() - t, **score}
            log(row)
            return run, spec, row

        run0, spec0, row0 = step("start", start, 0)
        for name in STRATEGIES:
            labelled, run, spec = set(start), run0, spec0
            out_rows.append({**row0, "strategy": name, "used": "start"})
            for rnd in range(1, args.rounds + 1):
                candidate = pool.copy()
                for r, c in labelled:
                    candidate[r, c] = False
                sites_file = tmp / f"sites_{name}_{rnd}.gpkg"
                result = propose_from_outputs(run.outputs, spec, sites_file, count=args.count, strategy=name,
                                              size=CELL, seed=seed * 100 + rnd, candidate=candidate)
                labelled |= {(s.cell.window[1] // CELL, s.cell.window[0] // CELL) for s in result.sites}
                run, spec, row = step(name, labelled, rnd)
                row["used"] = result.strategy
                out_rows.append(row)
    return out_rows


def table(rows: list[dict]) -> str:
    lines = []
    for scene in sorted({r["scene"] for r in rows}, reverse=True):
        sub = [r for r in rows if r["scene"] == scene]
        rounds = sorted({r["round"] for r in sub})
        seeds = sorted({r["seed"] for r in sub})
        lines += [f"**{scene}**: test-area mIoU (overall accuracy) after each round, mean ± sd over seeds "
                  f"{' '.join(map(str, seeds))}; labelled pixels in brackets", "",
                  "| strategy | " + " | ".join(f"round {k}" for k in rounds) + " |", "|---" * (len(rounds) + 1) + "|"]
        for name in STRATEGIES:
            cells = []
            for k in rounds:
                rs = [r for r in sub if r["strategy"] == name and r["round"] == k]
                if not rs:
                    cells.append("–")
                    continue
                m = np.array([r["miou"] for r in rs])
                a = np.array([r["overall_accuracy"] for r in rs])
                px = np.mean([r["labelled_pixels"] for r in rs])
                sd = (lambda v: v.std(ddof=1) if len(v) > 1 else 0.0)
                cells.append(f"{m.mean():.3f} ± {sd(m):.3f} ({a.mean():.3f}) [{px:,.0f}]")
            fell = {r["used"] for r in sub if r["strategy"] == name and r["round"] > 0} - {name}
            lines.append(f"| {name}{' (fell back to ' + ', '.join(sorted(fell)) + ')' if fell else ''} | "
                         + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenes = sorted({r["scene"] for r in rows}, reverse=True)
    fig, axes = plt.subplots(1, len(scenes), figsize=(5.5 * len(scenes), 4), squeeze=False)
    for ax, scene in zip(axes[0], scenes):
        for name in STRATEGIES:
            sub = [r for r in rows if r["scene"] == scene and r["strategy"] == name]
            rounds = sorted({r["round"] for r in sub})
            x = [np.mean([r["labelled_pixels"] for r in sub if r["round"] == k]) for k in rounds]
            y = np.array([[r["miou"] for r in sub if r["round"] == k] for k in rounds], dtype=object)
            mean = [np.mean(v) for v in y]
            sd = [np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in y]
            ax.errorbar(x, mean, yerr=sd, marker="o", capsize=3, label=name)
        ax.set_title(f"{scene}: test-area mIoU")
        ax.set_xlabel("labelled pixels")
        ax.set_ylabel("mIoU (mean ± sd over seeds)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenes", nargs="+", default=["raleigh", "berlin"], choices=["raleigh", "berlin"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--start", type=int, default=8, help="labelled squares to start from (default 8)")
    p.add_argument("--count", type=int, default=8, help="sites added per round (default 8)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--recipe", choices=["product", "2026-12-05"], default="product",
                   help="the training recipe: the product's defaults, or the one of the published table")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="where_to_label.json", help="JSON lines of every run (appended; resumable)")
    p.add_argument("--plot", help="PNG of mIoU against labelled pixels")
    p.add_argument("--table", action="store_true", help="only print the table (and plot) of --out")
    args = p.parse_args()
    out = Path(args.out)
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    if not args.table:
        start = time.perf_counter()
        for scene in args.scenes:
            for seed in args.seeds:
                if any(r["scene"] == scene and r["seed"] == seed for r in rows):
                    continue
                new = run_seed(scene, seed, args, lambda r: print(json.dumps(r), flush=True))
                rows += new
                with out.open("a") as f:
                    f.writelines(json.dumps(r) + "\n" for r in new)
        print(f"wall time {time.perf_counter() - start:.0f} s")
    print(table(rows))
    if args.plot:
        plot(rows, Path(args.plot))


if __name__ == "__main__":
    main()
