"""Training and evaluation of the three variants (mtl, unimodal, multimodal) with one code path.

Under ``torchrun`` the same code trains with PyTorch DistributedDataParallel: each process draws its
own patches, gradients are averaged, and rank 0 evaluates and keeps the best checkpoint.
"""

from __future__ import annotations

import copy
import datetime
import logging
import os
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from .. import __version__
from ..config import DatasetConfig
from .data import (
    SampleReader,
    Scene,
    TrainPatches,
    block_split,
    denormalise,
    eval_windows,
    labelled_pixels,
    modalities,
    regression_target,
)
from ..errors import CancelledError, ConfigError
from .losses import UncertaintyWeighting, classification_loss, distillation_loss, masked_regression_loss
from ..metrics import ConfusionMatrix, RegressionErrors
from ..model import MultiTaskModel, create_model, padded_size, resolve_device
from ..io.raster import Window
from ..spec import Architecture, ModelSpec

log = logging.getLogger(__name__)


@dataclass
class TrainOptions:
    """How to train; the same budget for every variant makes the baselines comparable."""

    variant: Literal["mtl", "unimodal", "multimodal"] = "mtl"
    steps: int = 600
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    eval_every: int = 100
    device: str = "auto"
    seed: int = 0
    architecture: Architecture = field(default_factory=Architecture)
    aux_loss: Literal["l1", "mse"] = "l1"
    main_weight: float = 1.0
    aux_weights: dict[str, float] = field(default_factory=dict)
    uncertainty_weighting: bool = False
    #: mtl only: a multimodal model file trained on the same configuration whose main-task outputs the mtl model
    #: also learns to match (distillation of privileged information); it reads the auxiliary modalities the mtl
    #: model reconstructs, during training only.
    distil_from: str | None = None
    distil_weight: float = 1.0
    distil_temperature: float = 2.0


@dataclass
class TrainResult:
    spec: ModelSpec
    state_dict: dict[str, torch.Tensor]
    val: dict[str, Any]
    test: dict[str, Any]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def _distributed() -> tuple[int, int]:
    """(rank, world size); starts the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if "LOCAL_RANK" in os.environ and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if dist.is_initialized() else (0, 1)


def _rank_spread(model: torch.nn.Module, world: int) -> float:
    """Under DDP, the largest difference between any rank's last weights and rank 0's (0: in step, as DDP
    promises); logged as a warning when they differ. 0 for a single process."""
    if world < 2:
        return 0.0
    flat = torch.cat([p.detach().float().flatten() for p in model.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    spread = max(float((g - gathered[0]).abs().max()) for g in gathered)
    if spread > 0:
        log.warning("the %d DDP processes ended with different weights (largest difference %.3g)", world, spread)
    return spread


def _to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    return batch.to(device, non_blocking=True)


def _losses(out: dict, batch: dict, task: str, aux_loss: str) -> dict[str, torch.Tensor]:
    """One loss per task: ``main`` and ``aux/<name>``."""
    if task == "segmentation":
        main = classification_loss(out["main"], batch["mask"])
    elif task == "classification":
        main = classification_loss(out["main"], batch["label"])
    else:
        main = masked_regression_loss(out["main"], batch["target"], batch["target_valid"], "mse")
    losses = {"main": main}
    for name, pred in out["aux"].items():
        losses[f"aux/{name}"] = masked_regression_loss(pred, batch["aux"][name], batch["aux_valid"][name], aux_loss)
    return losses


class Teacher(torch.nn.Module):
    """The multimodal model an mtl model is distilled from, fed from the mtl batch: the mtl model's inputs then
    its auxiliary modalities, renormalised from the mtl model's band statistics to the teacher's."""

    def __init__(self, path: str, spec: ModelSpec, device: torch.device) -> None:
        from ..modelfile import load_model

        super().__init__()
        if spec.variant != "mtl":
            raise ConfigError(f"distillation trains an mtl model from a multimodal one, not a {spec.variant} model")
        teacher_spec, self.net = load_model(path, device)
        bands = [b for m in spec.inputs + spec.aux for b in m.bands]
        got = teacher_spec.input_bands
        if (teacher_spec.variant != "multimodal" or teacher_spec.task != spec.task
                or [c.value for c in teacher_spec.classes] != [c.value for c in spec.classes]
                or [b.name for b in got] != [b.name for b in bands]):
            raise ConfigError(
                f"{path} cannot teach this model: give a multimodal model trained on the same dataset configuration "
                f"(it is a {teacher_spec.variant} model reading {', '.join(b.name for b in got)}; this run's inputs "
                f"and auxiliary bands are {', '.join(b.name for b in bands)})")
        std = torch.tensor([[b.std, t.std] for b, t in zip(bands, got)], dtype=torch.float32, device=device)
        mean = torch.tensor([[b.mean, t.mean] for b, t in zip(bands, got)], dtype=torch.float32, device=device)
        self.scale = (std[:, 0] / std[:, 1])[None, :, None, None]
        self.shift = ((mean[:, 0] - mean[:, 1]) / std[:, 1])[None, :, None, None]
        self.net.eval()

    @torch.no_grad()
    def forward(self, image: torch.Tensor, aux: list[torch.Tensor]) -> torch.Tensor:
        return self.net(torch.cat([image] + aux, dim=1) * self.scale + self.shift)["main"]


@torch.no_grad()
def evaluate(
    model: MultiTaskModel, spec: ModelSpec, reader: SampleReader, blocks: list[Window], device: torch.device
) -> dict[str, Any]:
    """Main-task metrics and per-band reconstruction RMSE (in the modality's units) over blocks.

    Only pixels where every modality of the dataset is valid are scored, so the variants (which read
    different bands) are compared on the same pixels.
    """
    model.eval()
    task = spec.task
    confusion = ConfusionMatrix(len(spec.classes)) if task != "regression" else None
    reg = RegressionErrors(1) if task == "regression" else None
    recon = {m.name: RegressionErrors(len(m.bands)) for m in spec.aux}
    for w in eval_windows(blocks, task, spec.patch_size):
        size = (padded_size(w[3], model.divisor), padded_size(w[2], model.divisor))
        if task == "classification":
            size = (max(size[0], spec.patch_size), max(size[1], spec.patch_size))
        s = reader.read(w, size, every_source_valid=True)
        out = model(s["image"][None].to(device))
        h, wd = w[3], w[2]
        if task == "segmentation":
            pred = out["main"][0].argmax(0).cpu().numpy()[:h, :wd]
            confusion.update(s["mask"].numpy()[:h, :wd], pred)
        elif task == "classification":
            confusion.update(s["label"].numpy()[None], out["main"][0].argmax(0).cpu().numpy()[None])
        else:
            t = spec.target
            pred = out["main"][0].cpu().numpy()[:, :h, :wd] * t.std + t.mean
            ref = s["target"].numpy()[:, :h, :wd] * t.std + t.mean
            reg.update(ref, pred, s["target_valid"].numpy()[:h, :wd])
        for m in spec.aux:
            pred = denormalise(out["aux"][m.name][0].cpu().numpy()[:, :h, :wd], m.bands)
            ref = denormalise(s["aux"][m.name].numpy()[:, :h, :wd], m.bands)
            recon[m.name].update(ref, pred, s["aux_valid"][m.name].numpy()[:h, :wd])
    result: dict[str, Any] = confusion.scores([c.name for c in spec.classes]) if confusion else reg.scores()
    result["recon_rmse"] = {
        f"{m.name}/{b.name}": float(v) for m in spec.aux for b, v in zip(m.bands, recon[m.name].rmse())
    }
    return result


def score(metrics: dict[str, Any], task: str) -> float:
    """The model-selection score: higher is better (mIoU, or minus RMSE for regression)."""
    return -metrics["rmse"] if task == "regression" else metrics["miou"]


def summary(metrics: dict[str, Any]) -> dict[str, float]:
    """The scalar metrics of an evaluation, flattened for display and the spec."""
    flat = {k: v for k, v in metrics.items() if isinstance(v, float)}
    flat.update({f"recon_rmse/{k}": v for k, v in metrics.get("recon_rmse", {}).items()})
    return flat


def train(
    cfg: DatasetConfig,
    opts: TrainOptions,
    progress: bool | Callable[[float], None] = True,
    cancelled: Callable[[], bool] | None = None,
    report: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train one variant on a dataset configuration and evaluate it on the held-out test blocks.

    Args:
        cfg: the dataset configuration.
        opts: variant, budget, architecture and loss settings.
        progress: True for a progress bar, or a callback receiving the fraction of steps done.
        cancelled: polled before every step; when it returns True, training stops with CancelledError.
        report: receives what a live view draws, as plain dicts: ``{"kind": "phase", "phase": …}`` (reading data,
            training, validating, testing, fitting the error model), ``{"kind": "step", "step": k, "steps": n,
            "losses": {"main": …, "aux/<name>": …, "total": …}}`` after every step and ``{"kind": "validation",
            "step": k, "metrics": {…}}`` after every validation (rank 0 only).

    Returns:
        The spec (with normalisation, metrics and provenance) and the best weights by validation score.
    """
    rank, world = _distributed()

    def say(kind: str, **fields) -> None:
        if report is not None and rank == 0:
            report({"kind": kind, **fields})

    say("phase", phase="reading data")
    seed_everything(opts.seed + rank)
    device = resolve_device(opts.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    scene = Scene(cfg)
    blocks = block_split(scene, cfg.split)
    per_block = scene.census().blocks(cfg.split.block_size)
    in_src, aux_src = scene.sources(opts.variant)
    inputs = modalities(in_src, scene, blocks["train"])
    aux = modalities(aux_src, scene, blocks["train"])
    task = cfg.labels.task
    target = regression_target(scene, blocks["train"]) if task == "regression" else None
    nodata = in_src[0].ds.GetRasterBand(in_src[0].bands[0]).GetNoDataValue()
    spec = ModelSpec(
        name=f"{cfg.name} — {opts.variant}",
        task=task,
        variant=opts.variant,
        inputs=inputs,
        aux=aux,
        classes=list(scene.classes),
        target=target,
        architecture=opts.architecture,
        patch_size=cfg.patch_size,
        input_nodata=nodata,
    )
    reader = SampleReader(scene, opts.variant, inputs, aux, target)
    patches = TrainPatches(reader, blocks["train"], cfg.patch_size, opts.steps * opts.batch_size, opts.seed + rank)
    loader = torch.utils.data.DataLoader(patches, batch_size=opts.batch_size, shuffle=False, num_workers=0)

    model = create_model(spec).to(device)
    net: torch.nn.Module = model
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    teacher = Teacher(opts.distil_from, spec, device) if opts.distil_from else None
    weighting = UncertaintyWeighting(["main"] + [f"aux/{m.name}" for m in aux]).to(device)
    params = list(net.parameters()) + (list(weighting.parameters()) if opts.uncertainty_weighting else [])
    optimizer = torch.optim.AdamW(params, lr=opts.lr, weight_decay=opts.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=opts.lr, total_steps=opts.steps, pct_start=0.1)

    def _step(batch: dict, stage: str) -> dict[str, torch.Tensor]:
        net.train(stage == "train")
        out = net(batch["image"])
        losses = _losses(out, batch, task, opts.aux_loss)
        if opts.uncertainty_weighting:
            losses["total"] = weighting(losses)
        else:
            losses["total"] = opts.main_weight * losses["main"] + sum(
                opts.aux_weights.get(k.split("/", 1)[1], 1.0) * v for k, v in losses.items() if k.startswith("aux/")
            )
        if teacher is not None:
            taught = teacher(batch["image"], [batch["aux"][m.name] for m in aux])
            valid = batch["valid"]
            for v in batch["aux_valid"].values():
                valid = valid & v
            losses["distil"] = distillation_loss(out["main"], taught, valid if task != "classification" else None,
                                                 task, opts.distil_temperature)
            losses["total"] = losses["total"] + opts.distil_weight * losses["distil"]
        return losses

    best_score, best_state, best_step, best_val = -float("inf"), None, 0, {}
    bar = tqdm(total=opts.steps, desc=f"train {opts.variant}", disable=progress is not True or rank != 0, unit="step")
    say("phase", phase="training")
    for step, batch in enumerate(loader, start=1):
        if cancelled is not None and cancelled():
            raise CancelledError(f"training cancelled at step {step} of {opts.steps}; no model was written")
        batch = _to(batch, device)
        losses = _step(batch, "train")
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        optimizer.step()
        scheduler.step()
        bar.update(1)
        bar.set_postfix({k: f"{v.item():.3f}" for k, v in losses.items()}, refresh=False)
        say("step", step=step, steps=opts.steps, losses={k: float(v.item()) for k, v in losses.items()})
        if callable(progress):
            progress(step / opts.steps)
        if step % opts.eval_every == 0 or step == opts.steps:
            if rank == 0:
                say("phase", phase="validating")
                val = evaluate(model, spec, reader, blocks["val"], device)
                say("validation", step=step, metrics=summary(val))
                say("phase", phase="training")
                if score(val, task) > best_score:
                    best_score, best_step, best_val = score(val, task), step, val
                    best_state = copy.deepcopy(model.state_dict())
                log.info("step %d: validation %s", step, {k: round(v, 4) for k, v in summary(val).items()})
            if world > 1:
                dist.barrier()
    bar.close()
    spread = _rank_spread(model, world)
    model.load_state_dict(best_state or model.state_dict())
    say("phase", phase="testing")
    test = evaluate(model, spec, reader, blocks["test"], device) if rank == 0 else {}
    spec.training = {
        "metrics": {f"test_{k}": v for k, v in summary(test).items()},
        "test": test,
        "validation": best_val,
        "best_step": best_step,
        "options": {**asdict(opts), "architecture": None},
        "device": str(device),
        "world_size": world,
        **({"ranks_weight_spread": spread} if world > 1 else {}),
        "mtl_explain_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "data": {
            "name": cfg.name,
            "config": str(cfg.path) if cfg.path else None,
            "sources": {s.name: str(s.path) for s in scene.inputs + scene.aux},
            "labels": str(cfg.labels.path),
            "labels_band": None if cfg.labels.is_vector else cfg.labels.band,
            **({"labels_field": cfg.labels.field_name, "labels_layer": cfg.labels.layer,
                "label_values": scene.label_values, "labels_ignore": list(cfg.labels.ignore),
                "polygons": asdict(scene.polygons)}
               if cfg.labels.is_vector else {}),
            "extent": cfg.extent,
            "split": asdict(cfg.split),
            "blocks": {k: len(v) for k, v in blocks.items()},
            "labelled_pixels": {k: labelled_pixels(per_block, v, cfg.split.block_size) for k, v in blocks.items()},
            "pixel_size_m": scene.grid.pixel_size_m(),
        },
    }
    if opts.uncertainty_weighting:
        spec.training["task_weights"] = weighting.weights()
    if spec.aux and task != "classification" and rank == 0:
        from .errormodel import fit_on_blocks  # reconstruction-error distribution of the training blocks

        say("phase", phase="fitting the error model")

        spec.training["error_model"] = fit_on_blocks(model, spec, reader, blocks["train"], blocks["val"], device)
    return TrainResult(spec, {k: v.detach().cpu() for k, v in model.state_dict().items()}, best_val, test)
