"""The method's claims measured on the real sample: baselines vs mtl, and which reconstruction errors detect errors.

Trains ``unimodal``, ``multimodal`` and ``mtl`` on the same dataset configuration (same encoder, budget
and spatial block split; only the model seed changes) for several seeds, then reports on the held-out
test blocks: mIoU and overall accuracy (mean ± std), reconstruction RMSE, and how well each
formulation of reconstruction error detects main-task errors (AUROC), next to the baselines softmax
entropy and 1 - confidence and to combinations fitted on the **validation** blocks only. Every
choice (which formulation is "selected", the combination weights) is made on validation blocks; the
test blocks are only scored.

Not a test. Usage (about 15-25 min on 2 CPU cores with the defaults)::

    .venv/bin/python bench/paper_table.py [--config CONFIG] [--steps 400] [--seeds 0 1 2] [--threads N]
        [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mtl_core.config import load_config
from mtl_core.training.data import SampleReader, Scene, block_split
from mtl_core.explain.scores import error_score, fit_error_model
from mtl_core.model import create_model, padded_size
from mtl_core.explain.stats import LogisticDetector, auroc
from mtl_core.training.train import TrainOptions, train

log = logging.getLogger("mtl_core")

#: Reconstruction-error formulations compared (each a per-pixel detector: higher = more likely wrong).
RECON = [
    "err_mean", "err_band1", "err_band2", "err_max", "cdf_mean", "cdf_max", "residual_mahalanobis",
    "err_mean_box5", "err_mean_box9", "cdf_mean_box9",
]
BASELINES = ["entropy", "one_minus_confidence"]
DESCRIPTIONS = {
    "entropy": "softmax entropy (baseline)",
    "one_minus_confidence": "1 − max probability (baseline)",
    "err_mean": "plain error abs(recon − truth), mean over SWIR bands",
    "err_band1": "plain error, band swir1 only",
    "err_band2": "plain error, band swir2 only",
    "err_max": "plain error, max over bands",
    "cdf_mean": "class-conditional CDF of the error, mean over bands",
    "cdf_max": "class-conditional CDF of the error, max over bands (= shipped `error_score`)",
    "residual_mahalanobis": "Mahalanobis distance of the signed residual under the predicted class (train)",
    "err_mean_box5": "plain mean error averaged over a 5×5 window",
    "err_mean_box9": "plain mean error averaged over a 9×9 window",
    "cdf_mean_box9": "class-conditional CDF averaged over a 9×9 window",
    "selected_on_val": "the reconstruction formulation with the best validation AUROC",
    "combo_entropy_naive": "logistic(entropy, plain mean error), fitted on validation",
    "combo_entropy_selected": "logistic(entropy, val-selected formulation), fitted on validation",
    "combo_all": "logistic(entropy, 1−conf, all formulations), fitted on validation",
}


def box_mean(a: np.ndarray, size: int) -> np.ndarray:
    """Mean over a size x size window (odd size), edges extended by their nearest value; (h, w) -> (h, w)."""
    r = size // 2
    c = np.pad(np.cumsum(np.cumsum(np.pad(a, r, mode="edge"), 0), 1), ((1, 0), (1, 0)))
    return (c[size:, size:] - c[:-size, size:] - c[size:, :-size] + c[:-size, :-size]) / size ** 2


def block_arrays(model: torch.nn.Module, spec, reader: SampleReader, blocks) -> list[dict]:
    """Per block: probabilities, signed residual (normalised), reference and the pixels to score."""
    out = []
    model.eval()
    with torch.no_grad():
        for w in blocks:
            h, wd = w[3], w[2]
            s = reader.read(w, (padded_size(h, model.divisor), padded_size(wd, model.divisor)))
            o = model(s["image"][None])
            m = spec.aux[0]
            mask = s["mask"].numpy()[:h, :wd]
            keep = s["valid"].numpy()[:h, :wd] & s["aux_valid"][m.name].numpy()[:h, :wd] & (mask >= 0)
            probs = torch.softmax(o["main"][0], 0).numpy()[:, :h, :wd].astype(np.float64)
            res = (o["aux"][m.name][0].numpy() - s["aux"][m.name].numpy())[:, :h, :wd].astype(np.float64)
            out.append({"probs": probs, "res": res, "mask": mask, "keep": keep, "pred": probs.argmax(0)})
    return out


def fit_residual_gaussians(train_blocks: list[dict], n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and inverse covariance of the signed residual per predicted class, on training pixels."""
    res = np.concatenate([b["res"][:, b["keep"]] for b in train_blocks], axis=1)
    pred = np.concatenate([b["pred"][b["keep"]] for b in train_blocks])
    k = res.shape[0]
    mu, icov = np.zeros((n_classes, k)), np.zeros((n_classes, k, k))
    for c in range(n_classes):
        sel = res[:, pred == c] if (pred == c).sum() >= 50 else res
        mu[c] = sel.mean(axis=1)
        icov[c] = np.linalg.inv(np.atleast_2d(np.cov(sel)) + 1e-4 * np.eye(k))
    return mu, icov


def features(blocks: list[dict], error_model: dict, error_model_max: dict, gauss: tuple) -> dict[str, np.ndarray]:
    """Every detector's score on the kept pixels of the blocks, flattened, plus the 0/1 error."""
    mu, icov = gauss
    cols: dict[str, list[np.ndarray]] = {}
    for b in blocks:
        p, err, keep = b["probs"], np.abs(b["res"]), b["keep"]
        cdf_mean = error_score({"aux": err}, p, error_model)
        d = b["res"] - mu[b["pred"]].transpose(2, 0, 1)
        maps = {
            "wrong": (b["pred"] != b["mask"]).astype(np.float64),
            "entropy": -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(0),
            "one_minus_confidence": 1.0 - p.max(0),
            "err_mean": err.mean(0),
            "err_band1": err[0],
            "err_band2": err[min(1, err.shape[0] - 1)],
            "err_max": err.max(0),
            "cdf_mean": cdf_mean,
            "cdf_max": error_score({"aux": err}, p, error_model_max),
            "residual_mahalanobis": np.einsum("khw,hwkl,lhw->hw", d, icov[b["pred"]], d),
            "err_mean_box5": box_mean(err.mean(0), 5),
            "err_mean_box9": box_mean(err.mean(0), 9),
            "cdf_mean_box9": box_mean(cdf_mean.astype(np.float64), 9),
        }
        for k, v in maps.items():
            cols.setdefault(k, []).append(np.asarray(v, dtype=np.float64)[keep])
    return {k: np.concatenate(v) for k, v in cols.items()}


def detection_table(val: dict[str, np.ndarray], test: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """AUROC on validation and test of every formulation, the val-selected one and the combinations."""
    table = {k: {"val": auroc(val[k], val["wrong"]), "test": auroc(test[k], test["wrong"])}
             for k in BASELINES + RECON}
    best = max(RECON, key=lambda k: table[k]["val"])
    table["selected_on_val"] = dict(table[best], name=best)

    def combo(names: list[str]) -> dict[str, float]:
        det = LogisticDetector(names).fit(np.stack([val[n] for n in names], 1), val["wrong"])
        return {"val": auroc(det.score(np.stack([val[n] for n in names], 1)), val["wrong"]),
                "test": auroc(det.score(np.stack([test[n] for n in names], 1)), test["wrong"])}

    table["combo_entropy_naive"] = combo(["entropy", "err_mean"])
    table["combo_entropy_selected"] = combo(["entropy", best])
    table["combo_all"] = combo(BASELINES + RECON)
    return table


def run_seed(cfg_path: Path, seed: int, steps: int, batch_size: int) -> dict:
    """Train the three variants with one seed; evaluate them and the detectors on held-out blocks."""
    out: dict = {"seed": seed}
    for variant in ("unimodal", "multimodal", "mtl"):
        cfg = load_config(cfg_path)
        t0 = time.perf_counter()
        opts = TrainOptions(variant=variant, steps=steps, batch_size=batch_size, seed=seed,
                            eval_every=max(steps // 4, 1))
        result = train(cfg, opts, progress=False)
        test = result.test
        out[variant] = {"miou": test["miou"], "overall_accuracy": test["overall_accuracy"],
                        "recon_rmse": test["recon_rmse"], "seconds": time.perf_counter() - t0,
                        "per_class_iou": {k: v["iou"] for k, v in test["per_class"].items()}}
        log.info("seed %d %s: test mIoU %.4f OA %.4f (%.0f s)", seed, variant, test["miou"],
                 test["overall_accuracy"], out[variant]["seconds"])
        if variant != "mtl":
            continue
        spec = result.spec
        model = create_model(spec)
        model.load_state_dict(result.state_dict)
        scene = Scene(cfg)
        blocks = block_split(scene, cfg.split)
        reader = SampleReader(scene, "mtl", spec.inputs, spec.aux, spec.target)
        arrays = {k: block_arrays(model, spec, reader, blocks[k]) for k in ("train", "val", "test")}
        train_err = np.concatenate([np.abs(b["res"][:, b["keep"]]) for b in arrays["train"]], axis=1)
        train_p = np.concatenate([b["probs"][:, b["keep"]] for b in arrays["train"]], axis=1)
        em = fit_error_model({"aux": train_err}, train_p, reduce="mean")
        em_max = fit_error_model({"aux": train_err}, train_p, reduce="max")
        gauss = fit_residual_gaussians(arrays["train"], len(spec.classes))
        val, tst = (features(arrays[k], em, em_max, gauss) for k in ("val", "test"))
        out["detection"] = detection_table(val, tst)
        out["error_rate"] = {"val": float(val["wrong"].mean()), "test": float(tst["wrong"].mean())}
        stored = spec.training.get("error_model", {})
        out["stored_threshold"] = stored.get("threshold")
    return out


def _ms(values: list[float], digits: int = 3) -> str:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return "–"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1) if v.size > 1 else 0.0:.{digits}f}"


def markdown(runs: list[dict]) -> str:
    """The results tables in Markdown."""
    lines = ["| variant | test mIoU | test OA | recon RMSE swir1 (DN) | recon RMSE swir2 (DN) |",
             "|---|---|---|---|---|"]
    for v in ("unimodal", "multimodal", "mtl"):
        rm = [list(r[v]["recon_rmse"].values()) for r in runs]
        rmse = [_ms([x[i] for x in rm], 2) if rm and rm[0] else "–" for i in range(2)]
        lines.append(f"| {v} | {_ms([r[v]['miou'] for r in runs])} | {_ms([r[v]['overall_accuracy'] for r in runs])}"
                     f" | {rmse[0]} | {rmse[1]} |")
    lines += ["", "| main-task error detector (mtl model) | val AUROC | test AUROC |", "|---|---|---|"]
    keys = BASELINES + RECON + ["selected_on_val", "combo_entropy_naive", "combo_entropy_selected", "combo_all"]
    for k in keys:
        name = DESCRIPTIONS.get(k, k)
        if k == "selected_on_val":
            name += " (" + ", ".join(r["detection"][k]["name"] for r in runs) + ")"
        lines.append(f"| {name} | {_ms([r['detection'][k]['val'] for r in runs])} | "
                     f"{_ms([r['detection'][k]['test'] for r in runs])} |")
    rates = ", ".join(f"{r['error_rate']['test']:.3f}" for r in runs)
    lines += ["", f"Test error rate of the mtl model per seed: {rates}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", help="dataset configuration (default: the prepared Raleigh sample)")
    p.add_argument("--steps", type=int, default=400, help="optimiser steps per run (default: 400)")
    p.add_argument("--batch-size", type=int, default=16, help="patches per step (default: 16)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="model seeds (default: 0 1 2)")
    p.add_argument("--threads", type=int, help="CPU threads for PyTorch (default: PyTorch's choice)")
    p.add_argument("--out", default="paper_table.json", help="JSON file for every number (default: paper_table.json)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("mtl_core").setLevel(logging.INFO)
    if args.config:
        cfg_path = Path(args.config)
    else:
        from mtl_core.sample_data import prepare_sample

        cfg_path = prepare_sample("raleigh")
    runs = []
    for seed in args.seeds:
        runs.append(run_seed(cfg_path, seed, args.steps, args.batch_size))
        Path(args.out).write_text(json.dumps(runs, indent=2))
    table = markdown(runs)
    sys.stdout.write(f"Command: {' '.join(sys.argv)}\nSteps per run: {args.steps}, seeds: {args.seeds}\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
