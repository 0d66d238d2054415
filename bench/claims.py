"""The method's second and third claims on both real sample scenes, against the per-pixel forest and at a budget
in minutes.

For each scene and setup (which bands go in, which are reconstructed) and each seed it trains, on the same
blocks, the random forests on the input bands (``forest``) and on every band (``forest-multimodal``), and the
``unimodal``, ``multimodal`` and ``mtl`` networks with the product's default recipe at an equal wall-time budget
(``--minutes``: the steps ``mtl train --minutes`` fits, calibrated alone on the machine, :mod:`budget`), and scores
them on the held-out test blocks (claim 2: mIoU, overall accuracy; the mtl model against the strongest all-band
reference, forest or network). Every mtl-type model is then run by ``mtl explain`` on the test blocks with the
real auxiliary rasters, and the report's detector statistics are kept (claim 3): AUROC of reconstruction error,
entropy and 1 - confidence for "the class is wrong", over all labelled pixels and among the confident half, and
the share of confident errors each catches at 10 % false alarms (chance 0.10).

Setups::

    raleigh vnir   Landsat 7 blue, green, red, NIR in; SWIR1, SWIR2 reconstructed (the sample's model)
    raleigh rgb    blue, green, red in; NIR and SWIR1, SWIR2 reconstructed
    berlin 10m     Sentinel-2 10 m bands (B02, B03, B04, B08) in; the six 20 m bands reconstructed
    berlin rgb     B02, B03, B04 in; B08 and the six 20 m bands reconstructed

The multimodal models of an rgb setup read the same bands, in the same order, as its scene's other setup: they are
trained once. Attempts (``--attempts``): ``mtl-uw`` (task weights learned by homoscedastic uncertainty, Kendall et
al. 2018), ``mtl-distil`` (the mtl model also matches the same seed's multimodal model's softened class
probabilities on every valid pixel: distillation of privileged information, Lopez-Paz et al. 2016; ``--jobs 1``),
``mtl-long`` (twice the steps), ``multimodal-long`` (its reference at twice the steps).

Not a test. Usage::

    .venv/bin/python bench/claims.py [--setups raleigh/vnir raleigh/rgb berlin/10m berlin/rgb] [--seeds 0 1 2]
        [--minutes 5 | --steps N] [--variants ...] [--attempts ...] [--jobs 2] [--out claims.json]

Results are appended to ``--out`` (JSON lines) as each model ends, so a long run can be resumed: a run already in
the file is not trained again. The markdown tables are printed at the end (``--table`` prints them from the file).
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

#: scene/setup -> input raster and bands; auxiliary modality -> (raster, bands, band names)
SETUPS = {
    "raleigh/vnir": {"input": ("raleigh_vnir.tif", [1, 2, 3, 4]),
                     "aux": {"swir": ("raleigh_swir.tif", [1, 2], ["swir1", "swir2"])}},
    "raleigh/rgb": {"input": ("raleigh_vnir.tif", [1, 2, 3]),
                    "aux": {"nir": ("raleigh_vnir.tif", [4], ["nir"]),
                            "swir": ("raleigh_swir.tif", [1, 2], ["swir1", "swir2"])}},
    "berlin/10m": {"input": ("berlin_10m.tif", [1, 2, 3, 4]),
                   "aux": {"s2_20m": ("berlin_20m.tif", [1, 2, 3, 4, 5, 6],
                                      ["rededge1", "rededge2", "rededge3", "nir_narrow", "swir1", "swir2"])}},
    "berlin/rgb": {"input": ("berlin_10m.tif", [1, 2, 3]),
                   "aux": {"nir": ("berlin_10m.tif", [4], ["nir"]),
                           "s2_20m": ("berlin_20m.tif", [1, 2, 3, 4, 5, 6],
                                      ["rededge1", "rededge2", "rededge3", "nir_narrow", "swir1", "swir2"])}},
}
BASE = ["forest", "forest-multimodal", "unimodal", "multimodal", "mtl"]
ATTEMPTS = ["mtl-uw", "mtl-distil", "mtl-long", "multimodal-long"]
SCORES = {"recon_error_mean": "reconstruction error", "entropy": "entropy", "one_minus_confidence": "1 - confidence"}


def setup_config(setup: str, folder: Path) -> Path:
    """A dataset configuration for ``setup`` (absolute paths into the prepared sample) written in ``folder``."""
    import yaml

    from mtl_core.sample_data import prepare_sample

    scene = setup.split("/")[0]
    sample = prepare_sample(scene)
    raw = yaml.safe_load(sample.read_text())
    s = SETUPS[setup]
    names = raw["inputs"]["optical"]["names"]
    raw["inputs"]["optical"].update(path=str(sample.parent / s["input"][0]), bands=s["input"][1],
                                    names=[names[b - 1] for b in s["input"][1]])
    raw["aux"] = {name: {"path": str(sample.parent / f), "bands": bands, "names": bnames,
                         "units": raw["inputs"]["optical"].get("units", "")}
                  for name, (f, bands, bnames) in s["aux"].items()}
    raw["labels"]["path"] = str(sample.parent / raw["labels"]["path"])
    path = folder / f"{setup.replace('/', '_')}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run_variant(setup: str, variant: str, seed: int, steps: int | None, threads: int, folder: Path,
                budget: str = "") -> dict:
    """Train one variant (or attempt) for ``steps`` (a forest: none) with the product's default recipe and score it;
    mtl-type models are also explained on the test blocks."""
    import torch

    from mtl_core.config import load_config
    from mtl_core.engine import PredictOptions, explain
    from mtl_core.modelfile import save_model
    from mtl_core.training.train import train

    torch.set_num_threads(threads)
    cfg = load_config(setup_config(setup, folder))
    base = variant.split("-")[0] if not variant.startswith("forest") else variant
    start = time.perf_counter()
    result = train(cfg, options(setup, variant, seed, folder, steps=steps), progress=False)
    row = {"setup": setup, "variant": variant, "seed": seed, "steps": steps, "budget": budget,
           "train_s": time.perf_counter() - start, "miou": result.test["miou"],
           "overall_accuracy": result.test["overall_accuracy"],
           "per_class_iou": {k: v["iou"] for k, v in result.test["per_class"].items()}}
    if base.startswith("forest"):
        return row
    model = folder / f"{setup.replace('/', '_')}_{variant}_{seed}.mtl.safetensors"
    save_model(model, result.spec, result.state_dict)
    if base == "mtl":
        s = SETUPS[setup]
        sample = Path(cfg.inputs[0].path).parent
        out = folder / f"out_{model.stem}"
        out.mkdir()
        opts = PredictOptions(aux_truth={n: str(sample / f) for n, (f, _, _) in s["aux"].items()},
                              aux_bands={n: b for n, (_, b, _) in s["aux"].items()}, bands=s["input"][1],
                              labels=str(cfg.labels.path), threads=threads,
                              products=("main", "confidence", "entropy", "recon_error", "main_error"))
        stats = explain(model, sample / s["input"][0], out, opts, split="test").stats
        row["confident_wrong"] = stats["confident"]["wrong"]
        row["confident_pixels"] = stats["confident"]["pixels"]
        for key in SCORES:
            row[f"{key}/auroc"] = stats["detectors"][key]["auroc"]
            row[f"{key}/confident_auroc"] = stats["confident"]["detectors"][key]["auroc"]
            row[f"{key}/caught"] = stats["confident"]["detectors"][key]["caught"]
    return row


def options(setup: str, variant: str, seed: int, folder: Path, **budget):
    """The product's default training options for a variant or attempt (``mtl train`` with no option but these)."""
    from mtl_core.training.options import TrainOptions

    base = variant.split("-")[0] if not variant.startswith("forest") else variant
    extra: dict = {}
    if variant.endswith("-uw"):
        extra["uncertainty_weighting"] = True
    if variant.endswith("-distil"):
        teacher = folder / f"{setup.replace('/', '_')}_multimodal_{seed}.mtl.safetensors"
        if not teacher.exists():
            raise SystemExit(f"mtl-distil needs the multimodal model of seed {seed}: run 'multimodal' first")
        extra["distil_from"] = str(teacher)
    if variant.endswith("-long") and budget.get("steps"):
        budget = {"steps": 2 * budget["steps"]}
    if base.startswith("forest"):
        budget = {}
    return TrainOptions(variant=base, device="cpu", seed=seed, **budget, **extra)


def _run(task: tuple) -> dict:
    setup, variant, seed, steps, budget = task
    with tempfile.TemporaryDirectory() as tmp:
        return run_variant(setup, variant, seed, steps, 1, Path(tmp), budget)


def _ms(rows: list[dict], key: str) -> str:
    v = np.array([r[key] for r in rows], dtype=float)
    return f"{np.nanmean(v):.3f} ± {np.nanstd(v, ddof=1) if len(v) > 1 else 0.0:.3f}"


#: setups whose multimodal models read the same bands, in the same order, as another setup's: trained once
SHARED = {"raleigh/rgb": "raleigh/vnir", "berlin/rgb": "berlin/10m"}
MULTIMODAL = ("multimodal", "forest-multimodal", "multimodal-long")


def _rows(rows: list[dict], setup: str, variant: str) -> list[dict]:
    if variant in MULTIMODAL and setup in SHARED:
        setup = SHARED[setup]
    return [r for r in rows if r["setup"] == setup and r["variant"] == variant]


def _mean(rows: list[dict], key: str = "miou") -> float:
    return float(np.mean([r[key] for r in rows])) if rows else float("nan")


def tables(rows: list[dict]) -> str:
    """Markdown: claim 2 (variants, forests and attempts per setup, the strongest multimodal reference and the mtl
    model's distance to it) and claim 3 (detectors of the mtl model per setup)."""
    setups = [s for s in SETUPS if any(r["setup"] == s for r in rows)]  # an rgb setup reads its twin's multimodal
    variants = [v for v in BASE + ATTEMPTS if any(r["variant"] == v for r in rows)]
    by = {(s, v): _rows(rows, s, v) for s in setups for v in variants}
    seeds = sorted({r["seed"] for r in rows})
    lines = [f"Test mIoU (overall accuracy), mean ± sd over seeds {' '.join(map(str, seeds))}:", "",
             "| variant | " + " | ".join(setups) + " |", "|---" * (len(setups) + 1) + "|"]
    for v in variants:
        cells = [f"{_ms(by[s, v], 'miou')} ({_ms(by[s, v], 'overall_accuracy')})" if by[s, v] else "–" for s in setups]
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    if "mtl" in variants and {"multimodal", "forest-multimodal"} & set(variants):
        best = {s: max((v for v in ("multimodal", "forest-multimodal") if by.get((s, v))),
                       key=lambda v: _mean(by[s, v])) for s in setups}
        lines.append("| strongest all-band reference | " + " | ".join(
            f"{best[s]} {_mean(by[s, best[s]]):.3f}" for s in setups) + " |")
        lines.append("| mtl − strongest all-band reference | " + " | ".join(
            f"{_mean(by[s, 'mtl']) - _mean(by[s, best[s]]):+.3f}" for s in setups) + " |")
    if "mtl" in variants and "forest" in variants:
        lines.append("| mtl − forest on the same input bands | " + " | ".join(
            f"{_mean(by[s, 'mtl']) - _mean(by[s, 'forest']):+.3f}" for s in setups) + " |")
    if "multimodal" in variants and "forest-multimodal" in variants:
        lines.append("| multimodal U-Net − all-band forest | " + " | ".join(
            f"{_mean(by[s, 'multimodal']) - _mean(by[s, 'forest-multimodal']):+.3f}" for s in setups) + " |")
    steps = {(s, v): sorted({r["steps"] for r in by[s, v] if r.get("steps")}) for s in setups for v in variants}
    lines += ["", "Steps each network was given (the budget's, calibrated alone on 2 cores): " + "; ".join(
        f"{s} {v} {'/'.join(map(str, steps[s, v]))}" for s in setups for v in variants if steps[s, v]) + "."]
    lines += ["", "Errors of the mtl model on the test blocks: AUROC over all labelled pixels / among the confident "
              "half / confident errors caught at 10 % false alarms:", "",
              "| score | " + " | ".join(setups) + " |", "|---" * (len(setups) + 1) + "|"]
    for key, label in SCORES.items():
        cells = [" / ".join(_ms(by[s, "mtl"], f"{key}/{m}") for m in ("auroc", "confident_auroc", "caught"))
                 if by.get((s, "mtl")) else "–" for s in setups]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setups", nargs="+", choices=sorted(SETUPS), default=list(SETUPS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, default=5.0,
                        help="wall-time budget per network, calibrated alone (bench/budget.py) (default 5)")
    budget.add_argument("--steps", type=int, help="a fixed number of steps per network instead")
    p.add_argument("--variants", nargs="*", choices=BASE, default=BASE, help="variants (default: all)")
    p.add_argument("--attempts", nargs="*", choices=ATTEMPTS, default=[],
                   help="attempts to close the multimodal gap (mtl-distil needs --jobs 1) (default: none)")
    p.add_argument("--threads", type=int, default=2, help="threads of a calibration (and of --jobs 1) (default 2)")
    p.add_argument("--jobs", type=int, default=2, help="models trained at a time, one thread each (default 2)")
    p.add_argument("--repeats", type=int, default=1, help="calibrations averaged per setup and variant (default 1)")
    p.add_argument("--out", default="claims.json", help="JSON lines of every run (appended; resumable)")
    p.add_argument("--calibration", default="claims-calibration.json", help="JSON lines of the calibrations")
    p.add_argument("--table", action="store_true", help="only print the tables of --out")
    args = p.parse_args()
    label = f"{args.steps}steps" if args.steps else f"{args.minutes:g}min"
    out, cal_file = Path(args.out), Path(args.calibration)
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    cals = [json.loads(line) for line in cal_file.read_text().splitlines()] if cal_file.exists() else []
    if not args.table:
        if "mtl-distil" in args.attempts and args.jobs != 1:
            raise SystemExit("mtl-distil reads the same seed's multimodal model from the run's folder: use --jobs 1")
        start = time.perf_counter()
        tasks = []
        for setup in args.setups:
            for variant in args.variants + args.attempts:
                if variant in MULTIMODAL and setup in SHARED and SHARED[setup] in args.setups:
                    continue  # the same model as its twin setup's
                steps = None if variant.startswith("forest") else args.steps
                if steps is None and not variant.startswith("forest"):
                    steps = _calibrated(setup, variant, args, cals, cal_file)
                for seed in args.seeds:
                    if not any((r["setup"], r["variant"], r["seed"], r.get("budget")) == (setup, variant, seed, label)
                               for r in rows):
                        tasks.append((setup, variant, seed, steps, label))

        def keep(row: dict) -> None:
            rows.append(row)
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{row['setup']} {row['variant']} seed {row['seed']}: mIoU {row['miou']:.3f} OA "
                  f"{row['overall_accuracy']:.3f} ({row['steps'] or '–'} steps, {row['train_s']:.0f} s)", flush=True)

        if args.jobs == 1:
            with tempfile.TemporaryDirectory() as tmp:
                for task in tasks:
                    keep(run_variant(*task[:4], args.threads, Path(tmp), task[4]))
        else:
            with multiprocessing.get_context("spawn").Pool(args.jobs, maxtasksperchild=1) as pool:
                for row in pool.imap_unordered(_run, tasks):
                    keep(row)
        print(f"\nwall time {time.perf_counter() - start:.0f} s")
    print(tables([r for r in rows if r.get("budget") == label]))


def _calibrated(setup: str, variant: str, args, cals: list[dict], cal_file: Path) -> int:
    """The steps the budget allows this setup and variant (an attempt: its base variant's; -long: twice)."""
    from budget import calibrate, calibrated

    from mtl_core.config import load_config

    base = variant.split("-")[0]
    steps = calibrated({"setup": setup, "variant": base, "minutes": args.minutes},
                       lambda: {"threads": args.threads,
                                **calibrate(lambda folder: load_config(setup_config(setup, folder)),
                                            options(setup, base, 0, Path("."), minutes=args.minutes), args.threads)},
                       cals, cal_file, args.repeats)
    return 2 * steps if variant.endswith("-long") else steps


if __name__ == "__main__":
    main()
