"""Benchmark of training speed: ``mtl train``'s steps per second against a bare loop over the same patches in memory.

Not a test: it prints figures measured in one run on this machine. Usage::

    .venv/bin/python bench/training.py [--steps 60] [--batch-size 32] [--repeat 2] [--threads 2]

On the real sample scene (Raleigh) with the training recipe's network and crops (:class:`TrainOptions` defaults;
docs/performance.md's table was measured with the previous recipe: depth 4, batch 16, 64 px patches):

* ``mtl train``: :func:`mtl_core.training.train.train` as the CLI runs it; the rate is taken between the first
  and the last step's progress calls, so start-up, the final evaluation and the error-model fit are left out
  (validation every ``--eval-every`` steps is included, as in a real run);
* the bare loop: the same smp network, AdamW, learning-rate schedule, losses and batch size, over the very patches
  the run drew, read into memory beforehand: the limit for this network on this machine;
* reading alone: the run's DataLoader without the network (patches per second), to tell whether data reading is
  the bottleneck.

The ratio ``mtl train`` / bare loop is what docs/performance.md reports; the runs alternate, median of
``--repeat``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mtl_core.config import load_config
from mtl_core.model import create_model
from mtl_core.sample_data import prepare_sample
from mtl_core.training.data import SampleReader, Scene, TrainPatches, block_split, modalities
from mtl_core.training.schedule import lr_factor
from mtl_core.training.train import TrainOptions, _losses, seed_everything, train


def run_train(cfg, opts: TrainOptions) -> float:
    """Steps per second of ``train`` between its first and last step."""
    marks: list[float] = []
    train(cfg, opts, progress=lambda f: marks.append(time.perf_counter()))
    return (len(marks) - 1) / (marks[-1] - marks[0])


def setup(cfg, opts: TrainOptions):
    """The run's spec, reader and patches, as ``train`` builds them."""
    from mtl_core.spec import ModelSpec

    scene = Scene(cfg)
    blocks = block_split(scene, cfg.split)
    inputs, aux = modalities(scene.inputs, scene, blocks["train"]), modalities(scene.aux, scene, blocks["train"])
    spec = ModelSpec(name="bench", task="segmentation", variant="mtl", inputs=inputs, aux=aux,
                     classes=list(scene.classes), architecture=opts.architecture, patch_size=cfg.patch_size)
    reader = SampleReader(scene, "mtl", inputs, aux)
    patches = TrainPatches(reader, blocks["train"], opts.crop or cfg.patch_size, opts.steps * opts.batch_size,
                           opts.seed, augment=opts.augment)
    return spec, patches


def run_reading(patches, batch_size: int) -> float:
    """Patches per second of the run's DataLoader alone."""
    loader = torch.utils.data.DataLoader(patches, batch_size=batch_size, num_workers=0)
    start = time.perf_counter()
    n = sum(len(b["image"]) for b in loader)
    return n / (time.perf_counter() - start)


def run_bare(spec, batches: list[dict], opts: TrainOptions) -> float:
    """Steps per second of a plain loop over batches already in memory (same network, optimiser, losses)."""
    seed_everything(opts.seed)
    model = create_model(spec)
    optimizer = torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    warmup = max(1, round(0.05 * len(batches)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: lr_factor(k + 1, len(batches), warmup))
    model.train()
    marks = []
    for batch in batches:
        losses = _losses(model(batch["image"]), batch, "segmentation", opts.aux_loss)
        total = losses["main"] + sum(v for k, v in losses.items() if k.startswith("aux/"))
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        scheduler.step()
        marks.append(time.perf_counter())
    return (len(marks) - 1) / (marks[-1] - marks[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=TrainOptions().batch_size)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(prepare_sample("raleigh"))
    opts = TrainOptions(steps=args.steps, batch_size=args.batch_size, eval_every=args.eval_every, device="cpu")
    spec, patches = setup(cfg, opts)
    loader = torch.utils.data.DataLoader(patches, batch_size=opts.batch_size, num_workers=0)
    batches = list(loader)
    rates: dict[str, list[float]] = {"mtl train": [], "bare loop": [], "reading": []}
    for _ in range(args.repeat):
        rates["mtl train"].append(run_train(cfg, opts))
        rates["bare loop"].append(run_bare(spec, batches, opts))
        rates["reading"].append(run_reading(patches, opts.batch_size) / opts.batch_size)
    print(f"torch threads {torch.get_num_threads()}, {args.steps} steps of {args.batch_size} patches of "
          f"{opts.crop or cfg.patch_size} px, validation every {args.eval_every} steps, median of {args.repeat}")
    med = {k: statistics.median(v) for k, v in rates.items()}
    for k, v in rates.items():
        print(f"  {k:<10} {med[k]:7.2f} steps/s   (runs: {', '.join(f'{x:.2f}' for x in v)})")
    print(f"mtl train / bare loop: {med['mtl train'] / med['bare loop']:.3f}")
    print(f"reading alone is {med['reading'] / med['bare loop']:.1f}x as fast as the bare loop's steps")


if __name__ == "__main__":
    main()
