"""Training recipes compared at equal wall time on both real scenes, 3 seeds, with the per-pixel forest beside them.

A recipe is a set of training options (learning rate, batch and patch size, encoder depth, spectral block, class
balance, augmentation…). "Equal wall time" is made exact and repeatable in two phases:

1. ``calibrate``: for each recipe, setup and variant, the steps ``mtl train --minutes M`` fits, run alone with
   ``--threads`` (2 here) (:mod:`budget`; ``calibration.json``). Recipes that differ only in what costs no time
   (learning rate, class balance, augmentation) share a calibration; each is the mean of ``--repeats`` runs.
2. ``train``: each (recipe, setup, variant, seed) trains for exactly that many steps, one thread each, ``--jobs``
   at a time. The machine's load then changes only how long the bench takes, never what a model is given.

Every row is appended to ``--out`` as it ends (JSON lines): an interrupted run resumes where it stopped. The
forests (``forest``, ``forest-multimodal``) train in seconds and take no budget.

Not a test. Usage::

    .venv/bin/python bench/recipes.py --recipes old spectral balanced both --setups raleigh/vnir berlin/10m \\
        --variants mtl --minutes 2 [--seeds 0 1 2] [--jobs 2] [--out recipes.json] [--table]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from budget import calibrated  # noqa: E402
from claims import SETUPS, setup_config  # noqa: E402

#: what every recipe below starts from: the options of the round the recipes were measured in (2026-12-07), before
#: the winner became the product's default; ``patch`` (the configuration's patch size) then set the training crops
BASE = {"batch_size": 16, "crop": None, "lr": 1e-3, "class_balance": "none"}
#: recipe -> training options over :data:`BASE` (``architecture`` as a dict, ``patch`` the training patch size)
_D3S16 = {"encoder_depth": 3, "spectral_channels": 16}
RECIPES: dict[str, dict] = {
    # stage 1 (2 minutes, mtl): what the last round trained, then one change at a time
    "old": {"architecture": {"encoder_depth": 3}},  # the claims of the last round, at equal wall time
    "spectral": {"architecture": _D3S16},
    "balanced": {"architecture": {"encoder_depth": 3}, "class_balance": "sqrt"},
    "both": {"architecture": _D3S16, "class_balance": "sqrt"},
    "both-lr3e-3": {"architecture": _D3S16, "class_balance": "sqrt", "lr": 3e-3},
    "both-p32": {"architecture": _D3S16, "class_balance": "sqrt", "patch": 32, "batch_size": 32},
    # stage 2 (2 minutes, mtl): around the winner of stage 1, and what it holds taken out again
    "p32-lr3e-3": {"architecture": _D3S16, "class_balance": "sqrt", "patch": 32, "batch_size": 32, "lr": 3e-3},
    "p32-lr1e-2": {"architecture": _D3S16, "class_balance": "sqrt", "patch": 32, "batch_size": 32, "lr": 1e-2},
    "p32-b64-lr3e-3": {"architecture": _D3S16, "class_balance": "sqrt", "patch": 32, "batch_size": 64, "lr": 3e-3},
    "p16-b64-lr3e-3": {"architecture": _D3S16, "class_balance": "sqrt", "patch": 16, "batch_size": 64, "lr": 3e-3},
    "p32-lr3e-3-inverse": {"architecture": _D3S16, "class_balance": "inverse", "patch": 32, "batch_size": 32,
                           "lr": 3e-3},
    "p32-lr3e-3-nospectral": {"architecture": {"encoder_depth": 3}, "class_balance": "sqrt", "patch": 32,
                              "batch_size": 32, "lr": 3e-3},
    "p32-lr3e-3-nobalance": {"architecture": _D3S16, "patch": 32, "batch_size": 32, "lr": 3e-3},
}
FORESTS = ("forest", "forest-multimodal")


def _options(recipe: str, variant: str, seed: int, **budget):
    from mtl_core.spec import Architecture
    from mtl_core.training.train import TrainOptions

    r = {**BASE, **RECIPES[recipe]}
    r.pop("patch", None)
    arch = Architecture(**r.pop("architecture", {}))
    return TrainOptions(variant=variant, device="cpu", seed=seed, architecture=arch, **r, **budget)


def _config(setup: str, recipe: str, folder: Path):
    from mtl_core.config import load_config

    cfg = load_config(setup_config(setup, folder))
    cfg.patch_size = RECIPES[recipe].get("patch", cfg.patch_size)
    return cfg


def compute_key(recipe: str) -> str:
    """What sets a recipe's step time: the network and the batch (not the learning rate, balance or augmentation)."""
    r = RECIPES[recipe]
    return json.dumps([r.get("architecture", {}), r.get("batch_size", 16), r.get("patch", 64)], sort_keys=True)


def calibrate(recipe: str, setup: str, variant: str, minutes: float, threads: int) -> dict:
    """The steps ``mtl train --minutes`` fits for this recipe, measured alone with ``threads`` threads."""
    from budget import calibrate as measure

    return measure(lambda folder: _config(setup, recipe, folder), _options(recipe, variant, 0, minutes=minutes),
                   threads)


def run(task: tuple) -> dict:
    """Train one (recipe, setup, variant, seed) for ``steps`` (a forest: no steps) and score it."""
    recipe, setup, variant, seed, steps, minutes = task
    import torch

    from mtl_core.training.train import train

    torch.set_num_threads(1)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _config(setup, recipe, Path(tmp))
        opts = _options(recipe, variant, seed, **({} if variant in FORESTS else {"steps": steps}))
        result = train(cfg, opts, progress=False)
    test = result.test
    return {"recipe": recipe if variant not in FORESTS else "-", "setup": setup, "variant": variant, "seed": seed,
            "minutes": minutes if variant not in FORESTS else None, "steps": steps,
            "wall_s": time.perf_counter() - start,
            "miou": test["miou"], "overall_accuracy": test["overall_accuracy"],
            "per_class_iou": {k: v["iou"] for k, v in test["per_class"].items()}}


def _ms(values: list[float]) -> str:
    v = np.array(values, dtype=float)
    return f"{np.nanmean(v):.3f} ± {np.nanstd(v, ddof=1) if len(v) > 1 else 0.0:.3f}"


def table(rows: list[dict], minutes: float | None) -> str:
    """Markdown: test mIoU (mean ± sd over seeds) per recipe and variant (rows) and setup (columns)."""
    setups = [s for s in SETUPS if any(r["setup"] == s for r in rows)]
    keys = []
    for r in rows:
        if (r["minutes"] in (None, minutes)) and (r["recipe"], r["variant"]) not in keys:
            keys.append((r["recipe"], r["variant"]))
    lines = ["| recipe | variant | " + " | ".join(setups) + " |", "|---|---" + "|---" * len(setups) + "|"]
    for recipe, variant in keys:
        cells = []
        for s in setups:
            got = [r for r in rows if (r["recipe"], r["variant"], r["setup"]) == (recipe, variant, s)
                   and r["minutes"] in (None, minutes)]
            cells.append(f"{_ms([r['miou'] for r in got])} ({got[0]['steps'] or '–'} steps, n={len(got)})"
                         if got else "–")
        lines.append(f"| {recipe} | {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipes", nargs="+", choices=sorted(RECIPES), default=["old", "both"])
    p.add_argument("--setups", nargs="+", choices=sorted(SETUPS), default=list(SETUPS))
    p.add_argument("--variants", nargs="+", default=["mtl"],
                   choices=["mtl", "unimodal", "multimodal", *FORESTS])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--minutes", type=float, default=2.0, help="the wall-time budget per model (default 2)")
    p.add_argument("--threads", type=int, default=2, help="threads of the calibration, run alone (default 2)")
    p.add_argument("--repeats", type=int, default=2, help="calibrations averaged per network and setup (default 2)")
    p.add_argument("--jobs", type=int, default=2, help="models trained at a time, one thread each (default 2)")
    p.add_argument("--out", default="recipes.json", help="JSON lines of every model (appended; resumable)")
    p.add_argument("--calibration", default="calibration.json", help="JSON lines of the calibrations (appended)")
    p.add_argument("--table", action="store_true", help="only print the table of --out")
    args = p.parse_args()
    out, cal_file = Path(args.out), Path(args.calibration)
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    cals = [json.loads(line) for line in cal_file.read_text().splitlines()] if cal_file.exists() else []
    if not args.table:
        start = time.perf_counter()
        tasks = []
        for recipe in args.recipes:
            for setup in args.setups:
                for variant in args.variants:
                    steps = None
                    if variant not in FORESTS:
                        key = {"compute": compute_key(recipe), "setup": setup, "variant": variant,
                               "minutes": args.minutes, "threads": args.threads}
                        steps = calibrated(key, lambda: calibrate(recipe, setup, variant, args.minutes, args.threads),
                                           cals, cal_file, args.repeats)
                    for seed in args.seeds:
                        name = recipe if variant not in FORESTS else "-"
                        minutes = args.minutes if variant not in FORESTS else None
                        if any((r["recipe"], r["setup"], r["variant"], r["seed"], r["minutes"])
                               == (name, setup, variant, seed, minutes) for r in rows) \
                                or any(t[1:4] == (setup, variant, seed) and variant in FORESTS for t in tasks):
                            continue
                        tasks.append((recipe, setup, variant, seed, steps, args.minutes))
        with multiprocessing.get_context("spawn").Pool(args.jobs, maxtasksperchild=1) as pool:
            for row in pool.imap_unordered(run, tasks):
                rows.append(row)
                with out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"{row['recipe']} {row['setup']} {row['variant']} seed {row['seed']}: mIoU {row['miou']:.3f} "
                      f"({row['steps']} steps, {row['wall_s']:.0f} s)", flush=True)
        print(f"\nwall time {time.perf_counter() - start:.0f} s")
    print(table(rows, args.minutes))


if __name__ == "__main__":
    main()
