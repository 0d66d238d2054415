"""The method's second and third claims on both real sample scenes, and the attempts to close the multimodal gap.

For each scene and setup (which bands go in, which are reconstructed) and each seed it trains, on the same
blocks and budget, the ``unimodal``, ``multimodal`` and ``mtl`` variants and the attempts to make ``mtl`` as
accurate as ``multimodal``, and scores them on the held-out test blocks (claim 2: mIoU, overall accuracy). Every
mtl-type model is then run by ``mtl explain`` on the test blocks with the real auxiliary rasters, and the
report's detector statistics are kept (claim 3): AUROC of reconstruction error, entropy and 1 - confidence for
"the class is wrong", over all labelled pixels and among the confident half, and the share of confident errors
each catches at 10 % false alarms (chance 0.10).

Setups::

    raleigh vnir   Landsat 7 blue, green, red, NIR in; SWIR1, SWIR2 reconstructed (the sample's model)
    raleigh rgb    blue, green, red in; NIR and SWIR1, SWIR2 reconstructed
    berlin 10m     Sentinel-2 10 m bands (B02, B03, B04, B08) in; the six 20 m bands reconstructed
    berlin rgb     B02, B03, B04 in; B08 and the six 20 m bands reconstructed

Attempts (``--attempts``): ``mtl-uw`` (task weights learned by homoscedastic uncertainty, Kendall et al. 2018),
``mtl-distil`` (the mtl model also matches the same seed's multimodal model's softened class probabilities on
every valid pixel, labelled or not: distillation of privileged information, Lopez-Paz et al. 2016), ``mtl-long``
(twice the steps), ``multimodal-long`` (its reference at twice the steps).

Not a test. Usage::

    .venv/bin/python bench/claims.py [--setups raleigh/vnir raleigh/rgb berlin/10m berlin/rgb] [--seeds 0 1 2]
        [--steps 300] [--attempts mtl-uw mtl-distil] [--threads 2] [--out claims.json]

Results are appended to ``--out`` (JSON lines) as each model ends, so a long run can be resumed: a run already in
the file is not trained again. The markdown tables are printed at the end (``--table`` prints them from the file).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

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
BASE = ["unimodal", "multimodal", "mtl"]
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


def run_variant(setup: str, variant: str, seed: int, steps: int, threads: int, folder: Path) -> dict:
    """Train one variant (or attempt) and score it; mtl-type models are also explained on the test blocks."""
    import torch

    from mtl_core.config import load_config
    from mtl_core.engine import PredictOptions, explain
    from mtl_core.modelfile import save_model
    from mtl_core.spec import Architecture
    from mtl_core.training.train import TrainOptions, train

    torch.set_num_threads(threads)
    cfg = load_config(setup_config(setup, folder))
    base = variant.split("-")[0]
    extra: dict = {}
    if variant.endswith("-uw"):
        extra["uncertainty_weighting"] = True
    if variant.endswith("-distil"):
        teacher = folder / f"{setup.replace('/', '_')}_multimodal_{seed}.mtl.safetensors"
        if not teacher.exists():
            raise SystemExit(f"mtl-distil needs the multimodal model of seed {seed}: run 'multimodal' first")
        extra["distil_from"] = str(teacher)
    start = time.perf_counter()
    result = train(cfg, TrainOptions(variant=base, steps=steps * (2 if variant.endswith("-long") else 1),
                                     batch_size=16, eval_every=50, device="cpu", seed=seed,
                                     architecture=Architecture(encoder_depth=3), **extra), progress=False)
    row = {"setup": setup, "variant": variant, "seed": seed, "steps": steps, "train_s": time.perf_counter() - start,
           "miou": result.test["miou"], "overall_accuracy": result.test["overall_accuracy"]}
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


def _ms(rows: list[dict], key: str) -> str:
    v = np.array([r[key] for r in rows], dtype=float)
    return f"{np.nanmean(v):.3f} ± {np.nanstd(v, ddof=1) if len(v) > 1 else 0.0:.3f}"


def tables(rows: list[dict]) -> str:
    """Markdown: claim 2 (variants and attempts per setup) and claim 3 (detectors of the mtl model per setup)."""
    setups = [s for s in SETUPS if any(r["setup"] == s for r in rows)]
    variants = [v for v in BASE + ATTEMPTS if any(r["variant"] == v for r in rows)]
    by = {(s, v): [r for r in rows if r["setup"] == s and r["variant"] == v] for s in setups for v in variants}
    seeds = sorted({r["seed"] for r in rows})
    lines = [f"Test mIoU (overall accuracy), mean ± sd over seeds {' '.join(map(str, seeds))}:", "",
             "| variant | " + " | ".join(setups) + " |", "|---" * (len(setups) + 1) + "|"]
    for v in variants:
        cells = [f"{_ms(by[s, v], 'miou')} ({_ms(by[s, v], 'overall_accuracy')})" if by[s, v] else "–" for s in setups]
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
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
    p.add_argument("--steps", type=int, default=300, help="training steps per model (default 300)")
    p.add_argument("--attempts", nargs="*", choices=ATTEMPTS, default=["mtl-uw", "mtl-distil"],
                   help="attempts to close the multimodal gap (default: mtl-uw mtl-distil)")
    p.add_argument("--attempts-only", action="store_true",
                   help="train only the attempts (the base variants of these setups are in --out already, or are "
                        "being trained by another run; mtl-distil then needs them in this run)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="claims.json", help="JSON lines of every run (appended; resumable)")
    p.add_argument("--table", action="store_true", help="only print the tables of --out")
    args = p.parse_args()
    out = Path(args.out)
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    if not args.table:
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            for setup in args.setups:
                for seed in args.seeds:
                    for variant in ([] if args.attempts_only else BASE) + args.attempts:
                        done = any(r["setup"] == setup and r["variant"] == variant and r["seed"] == seed
                                   and r["steps"] == args.steps for r in rows)
                        teacher = variant == "multimodal" and "mtl-distil" in args.attempts
                        if done and not teacher:
                            continue
                        row = run_variant(setup, variant, seed, args.steps, args.threads, Path(tmp))
                        if done:
                            continue  # a teacher trained again for distillation; its first row is kept
                        rows.append(row)
                        with out.open("a") as f:
                            f.write(json.dumps(row) + "\n")
                        print(f"{setup} {variant} seed {seed}: mIoU {row['miou']:.3f} OA "
                              f"{row['overall_accuracy']:.3f} ({row['train_s']:.0f} s)", flush=True)
        print(f"\nwall time {time.perf_counter() - start:.0f} s")
    print(tables([r for r in rows if r["steps"] == args.steps]))


if __name__ == "__main__":
    main()
