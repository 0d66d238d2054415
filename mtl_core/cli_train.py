"""``mtl train``: a network, or the forest baseline, from a dataset configuration, with a budget in minutes or
steps."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from .cli_args import at_least_0, at_least_0_float, minutes, out_folder, positive, positive_float
from .errors import MtlError
from .jobs import run_job, train_jobs
from .metrics import held_out_caveats
from .training.options import (CLASS_BALANCES, DEFAULT_MINUTES, FOREST_VARIANTS, PROBE_STEPS, TRAIN_VARIANTS,
                               VALIDATIONS, TrainOptions)


def metrics_table(metrics: dict) -> str:
    """Held-out metrics as aligned lines: the scalars, then per class, then reconstruction RMSE."""
    lines = []
    for k, v in metrics.items():
        if isinstance(v, float):
            lines.append(f"  {k:<28} {v:.4f}")
    for name, d in metrics.get("per_class", {}).items():
        lines.append(f"  {'IoU/F1 ' + name:<28} {d['iou']:.4f} / {d['f1']:.4f}  ({d['pixels']} px)")
    for name, v in metrics.get("recon_rmse", {}).items():
        lines.append(f"  {'recon RMSE ' + name:<28} {v:.4f}")
    return "\n".join(lines)


def cmd_train(args: argparse.Namespace) -> int:
    aux_weights = {}
    for item in args.aux_weight or []:
        name, _, w = item.partition("=")
        try:
            aux_weights[name] = float(w)
        except ValueError:
            raise MtlError(f"--aux-weight {item!r} must look like NAME=WEIGHT with a number, "
                           "e.g. swir=0.5") from None
        if not name or not aux_weights[name] >= 0:
            raise MtlError(f"--aux-weight {item!r} must look like NAME=WEIGHT with a weight of at least 0")
    options = {"batch_size": args.batch_size, "crop": args.crop,
               "lr": args.lr, "eval_every": args.eval_every, "seed": args.seed, "aux_loss": args.aux_loss,
               "main_weight": args.main_weight, "aux_weights": aux_weights,
               "uncertainty_weighting": args.uncertainty_weighting, "class_balance": args.class_balance,
               "augment": not args.no_augment, "encoder_weights": args.encoder_weights,
               "forest_pixels": args.forest_pixels,
               "architecture": {"arch": args.arch, "encoder": args.encoder, "encoder_depth": args.encoder_depth,
                                "spectral_channels": args.spectral_channels}}
    forest = args.variant in FOREST_VARIANTS
    if forest and args.out:
        raise MtlError(f"--variant {args.variant} is a baseline to compare with: it is scored on the test blocks and "
                       "never saved, so it takes no --out; leave --out away")
    if not forest and not args.out:
        raise MtlError("give --out MODEL, the model file to write (e.g. --out model.mtl.safetensors)")
    job, = train_jobs(args.variant, args.out or "", minutes=args.minutes, steps=args.steps, device=args.device,
                      config=args.config, **options)
    job.threads, job.half = args.threads, args.half
    with contextlib.nullcontext() if forest else out_folder(Path(args.out).parent):
        result = run_job(job, progress=not args.quiet)
    if result.spec:  # rank 0 only under torchrun
        training = result.spec["training"]
        if forest:
            f = training["forest"]
            print(f"Forest of {f['trees']} trees on {f['pixels']:,} labelled pixels (of {f['labelled_pixels']:,}) "
                  "scored; no model file is written for a forest")
            budget = f"fitted in {f['fit_seconds']:.1f} s"
        else:
            print(f"Model written to {result.outputs['model']} (its dataset configuration: "
                  f"{result.outputs['dataset']})")
            budget = (f"{training['steps']} steps in {training['train_seconds']:.0f} s"
                      + (f" (budget {training['budget_minutes']:g} min)" if training.get("budget_minutes") else ""))
        print(f"Held-out test blocks ({training['data']['blocks']['test']}); {budget}:")
        print(metrics_table(training["test"]))
        for line in held_out_caveats(training):
            print(f"  Note: {line}")
    return 0


def add_train(sub) -> None:
    """The ``train`` sub-command; its defaults are the training recipe's (:class:`TrainOptions`)."""
    defaults = TrainOptions()
    arch = defaults.architecture
    t = sub.add_parser("train", help="train a model on a dataset configuration",
                       description="Train one variant on the training blocks of a dataset configuration for a "
                                   "budget in minutes (or steps), keep the best checkpoint by validation score, "
                                   "report held-out test metrics and write a model file (safetensors weights + JSON "
                                   "spec). The forest variants are the per-pixel baseline: trained in seconds on the "
                                   "same blocks and scored on the same test pixels, never saved. Runs under "
                                   "torchrun for multi-GPU (DDP).")
    t.add_argument("config", help="dataset configuration (.yaml or .toml)")
    t.add_argument("--out", help="model file to write (e.g. model.mtl.safetensors; needed for the networks)")
    t.add_argument("--variant", choices=TRAIN_VARIANTS, default="mtl",
                   help="mtl: aux modalities reconstructed; unimodal: inputs only; multimodal: aux stacked as "
                        "input; forest / forest-multimodal: a per-pixel random forest (scikit-learn, 100 trees) on "
                        "the input bands / on the input and aux bands, the baseline GIS plugins offer: trained in "
                        "seconds, scored on the same test pixels, never saved (no --out) (default: mtl)")
    budget = t.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=minutes, metavar="M",
                        help=f"wall-time budget of the whole run, in minutes: the first {PROBE_STEPS} steps measure "
                             "the step rate and the learning-rate schedule is fitted to the steps that fit "
                             f"(default: {DEFAULT_MINUTES:g}, which the recipe was chosen for on 2 CPU cores)")
    budget.add_argument("--steps", type=positive, help="a fixed number of optimiser steps instead of --minutes")
    t.add_argument("--batch-size", type=positive, default=defaults.batch_size,
                   help=f"crops per step (default: {defaults.batch_size})")
    t.add_argument("--crop", type=positive, default=defaults.crop,
                   help="side of the training crops in pixels, a multiple of the network's input step (default: "
                        f"{defaults.crop or 'the configuration’s patch_size'}; patch classification trains on its "
                        "patches)")
    t.add_argument("--lr", type=positive_float, default=defaults.lr,
                   help=f"peak learning rate: linear warm-up, then cosine decay (default: {defaults.lr:g})")
    t.add_argument("--eval-every", type=positive,
                   help=f"validate every N steps (default: {VALIDATIONS} validations spread over the run)")
    t.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    t.add_argument("--seed", type=int, default=0, help="random seed for weights and patches (default: 0)")
    t.add_argument("--arch", default=arch.arch, help=f"smp architecture (default: {arch.arch})")
    t.add_argument("--encoder", default=arch.encoder, help=f"smp encoder name (default: {arch.encoder})")
    t.add_argument("--encoder-depth", type=int, default=arch.encoder_depth,
                   help=f"encoder levels, 3 to 5 (default: {arch.encoder_depth})")
    t.add_argument("--spectral-channels", type=at_least_0, default=arch.spectral_channels,
                   help="features of the per-pixel spectral block joining the decoder's output (0: none; "
                        f"default: {arch.spectral_channels})")
    t.add_argument("--encoder-weights", metavar="WEIGHTS",
                   help="start the encoder from 'imagenet' (smp's weights, downloaded: needs internet) or from a "
                        ".safetensors file of the encoder's weights (default: random)")
    t.add_argument("--class-balance", choices=CLASS_BALANCES, default=defaults.class_balance,
                   help="weight classes in the main loss by (1/share)^0.5 (sqrt) or 1/share (inverse) "
                        f"(default: {defaults.class_balance})")
    t.add_argument("--no-augment", action="store_true", help="no random flips and quarter turns of the patches")
    t.add_argument("--forest-pixels", type=positive, default=defaults.forest_pixels,
                   help="forest variants: the most labelled pixels drawn from the training and validation blocks "
                        f"(default: {defaults.forest_pixels:,})")
    t.add_argument("--aux-loss", choices=["l1", "mse"], default="l1", help="reconstruction loss (default: l1)")
    t.add_argument("--main-weight", type=at_least_0_float, default=1.0,
                   help="weight of the main-task loss (default: 1)")
    t.add_argument("--aux-weight", action="append", metavar="NAME=W",
                   help="weight of one reconstruction loss (default 1; repeatable)")
    t.add_argument("--uncertainty-weighting", action="store_true",
                   help="learn task weights by homoscedastic uncertainty (Kendall et al., 2018)")
    t.add_argument("--half", action="store_true", help="store weights as float16 (half the file size)")
    t.add_argument("--threads", type=positive, help="CPU threads for PyTorch (default: PyTorch's choice)")
    t.set_defaults(func=cmd_train)
