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
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

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
    class_counts,
    denormalise,
    eval_windows,
    labelled_pixels,
    modalities,
    regression_target,
)
from ..errors import CancelledError, ConfigError
from .losses import (UncertaintyWeighting, class_weights, classification_loss, distillation_loss,
                     masked_regression_loss)
from ..metrics import ConfusionMatrix, RegressionErrors
from ..model import MultiTaskModel, create_model, load_encoder_weights, padded_size, resolve_device
from ..io.raster import Window
from ..spec import ModelSpec
from .schedule import Budget, lr_factor
from .options import FOREST_VARIANTS, TrainOptions  # TrainOptions: also imported from here by callers

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    spec: ModelSpec
    state_dict: dict[str, torch.Tensor]
    val: dict[str, Any]
    test: dict[str, Any]
    #: a forest variant's fitted scikit-learn forest (scored, not saved)
    forest: Any = None


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


def _losses(out: dict, batch: dict, task: str, aux_loss: str,
            class_weight: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """One loss per task: ``main`` and ``aux/<name>``."""
    if task == "segmentation":
        main = classification_loss(out["main"], batch["mask"], class_weight)
    elif task == "classification":
        main = classification_loss(out["main"], batch["label"], class_weight)
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


class Trainer:
    """One training run, in steps: :meth:`configure_data`, :meth:`configure_model`, :meth:`configure_optimizer`,
    :meth:`fit`, :meth:`finish` (:func:`train` runs them in order)."""

    def __init__(self, cfg: DatasetConfig, opts: TrainOptions, progress: bool | Callable[[float], None] = True,
                 cancelled: Callable[[], bool] | None = None, report: Callable[[dict], None] | None = None) -> None:
        self.cfg, self.opts, self.progress, self.cancelled, self._report = cfg, opts, progress, cancelled, report
        self.started = time.perf_counter()
        self.rank, self.world = _distributed()
        self.budget = Budget(opts, self.started)

    def say(self, kind: str, **fields) -> None:
        if self._report is not None and self.rank == 0:
            self._report({"kind": kind, **fields})

    def configure_data(self) -> None:
        """Open the scene, split it into blocks, describe the model (normalisation from the training blocks)."""
        cfg, opts = self.cfg, self.opts
        self.say("phase", phase="reading data")
        seed_everything(opts.seed + self.rank)
        device = resolve_device(opts.device)
        if device.type == "cuda" and self.world > 1:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        self.device = device
        self.scene = scene = Scene(cfg)
        self.blocks = block_split(scene, cfg.split)
        self.per_block = scene.census().blocks(cfg.split.block_size)
        bands = FOREST_VARIANTS.get(opts.variant, opts.variant)  # which bands the model reads
        in_src, aux_src = scene.sources(bands)
        inputs = modalities(in_src, scene, self.blocks["train"])
        aux = modalities(aux_src, scene, self.blocks["train"])
        task = cfg.labels.task
        target = regression_target(scene, self.blocks["train"]) if task == "regression" else None
        nodata = in_src[0].ds.GetRasterBand(in_src[0].bands[0]).GetNoDataValue()
        self.spec = ModelSpec(name=f"{cfg.name} — {opts.variant}", task=task, variant=bands, inputs=inputs,
                              aux=aux, classes=list(scene.classes), target=target, architecture=opts.architecture,
                              patch_size=cfg.patch_size, input_nodata=nodata)
        self.reader = SampleReader(scene, bands, inputs, aux, target)
        # the training crops: the options' size for per-pixel tasks, the configuration's patch (a cell) otherwise
        per_pixel = task != "classification" and opts.crop
        self.crop = min(opts.crop, cfg.split.block_size) if per_pixel else cfg.patch_size
        length = (opts.steps or 10 ** 8) * opts.batch_size  # drawn one by one: a budget run takes what it needs
        patches = TrainPatches(self.reader, self.blocks["train"], self.crop, length, opts.seed + self.rank,
                               augment=opts.augment)
        self.loader = torch.utils.data.DataLoader(patches, batch_size=opts.batch_size, shuffle=False, num_workers=0)

    def configure_model(self) -> None:
        """The network (on the device, wrapped for DDP), its starting encoder weights, and the teacher if any."""
        opts = self.opts
        self.model = create_model(self.spec)
        if self.crop % self.model.divisor:
            step = self.model.divisor
            lower, upper = max(step, self.crop // step * step), -(-self.crop // step) * step
            raise ConfigError(f"training crops of {self.crop} px do not fit the network, whose input step is {step} "
                              f"px: choose crop {lower} or {upper}")
        if opts.encoder_weights:
            load_encoder_weights(self.model, self.spec, opts.encoder_weights)
        self.model.to(self.device)
        self.net: torch.nn.Module = self.model
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.teacher = Teacher(opts.distil_from, self.spec, self.device) if opts.distil_from else None

    def configure_losses(self) -> None:
        """Task weighting and the main loss's class weights (from the training blocks' labelled pixels)."""
        self.weighting = UncertaintyWeighting(["main"] + [f"aux/{m.name}" for m in self.spec.aux]).to(self.device)
        self.class_counts = None
        self.class_weight = None
        if self.spec.task != "regression":
            self.class_counts = class_counts(self.scene, self.blocks["train"], len(self.spec.classes))
            weight = class_weights(self.class_counts, self.opts.class_balance)
            self.class_weight = None if weight is None else weight.to(self.device)

    def configure_optimizer(self) -> None:
        """AdamW, and the warm-up + cosine schedule over the run's (possibly fitted) length."""
        opts = self.opts
        params = list(self.net.parameters()) + (list(self.weighting.parameters()) if opts.uncertainty_weighting
                                                else [])
        self.optimizer = torch.optim.AdamW(params, lr=opts.lr, weight_decay=opts.weight_decay)
        budget = self.budget
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda done: lr_factor(done + 1, budget.total, budget.warmup))

    def _step(self, batch: dict) -> dict[str, torch.Tensor]:
        opts, task = self.opts, self.spec.task
        self.net.train()
        out = self.net(batch["image"])
        losses = _losses(out, batch, task, opts.aux_loss, self.class_weight)
        if opts.uncertainty_weighting:
            losses["total"] = self.weighting(losses)
        else:
            losses["total"] = opts.main_weight * losses["main"] + sum(
                opts.aux_weights.get(k.split("/", 1)[1], 1.0) * v for k, v in losses.items() if k.startswith("aux/")
            )
        if self.teacher is not None:
            taught = self.teacher(batch["image"], [batch["aux"][m.name] for m in self.spec.aux])
            valid = batch["valid"]
            for v in batch["aux_valid"].values():
                valid = valid & v
            losses["distil"] = distillation_loss(out["main"], taught, valid if task != "classification" else None,
                                                 task, opts.distil_temperature)
            losses["total"] = losses["total"] + opts.distil_weight * losses["distil"]
        return losses

    def _tail_seconds(self, validation_seconds: float) -> float:
        """The test and the error model's fit, foreseen from one validation's time (they read more blocks)."""
        blocks = {k: max(1, len(v)) for k, v in self.blocks.items()}
        tail = validation_seconds * blocks["test"] / blocks["val"]
        if self.spec.aux and self.spec.task != "classification":
            tail += 1.5 * validation_seconds * (blocks["train"] + blocks["val"]) / blocks["val"]
        return tail + 2.0  # writing the model

    def _fit_budget(self, step: int, timer: dict, validation_seconds: float) -> None:
        """Fit the budget run's length on rank 0 and share it with every DDP process."""
        if self.budget.minutes is None:
            return
        if self.rank == 0:
            steps = max(1, step - timer["from_step"])
            self.budget.fit(step, (time.perf_counter() - timer["from"] - timer["validating"]) / steps,
                            validation_seconds, self._tail_seconds(validation_seconds))
        if self.world > 1:
            total = torch.tensor([self.budget.total], device=self.device if self.device.type == "cuda" else "cpu")
            dist.broadcast(total, 0)
            self.budget.total, self.budget.fitted = int(total.item()), True

    def fit(self) -> None:
        """The training loop: a step per batch, validations on rank 0 keeping the best weights by score."""
        opts, budget = self.opts, self.budget
        self.best_score, self.best_state, self.best_step, self.best_val = -float("inf"), None, 0, {}
        self.validations = 0
        bar = tqdm(total=budget.total, desc=f"train {opts.variant}", unit="step",
                   disable=self.progress is not True or self.rank != 0)
        self.say("phase", phase="training")
        timer = {"from": time.perf_counter(), "from_step": 0, "validating": 0.0}
        shown = 0.0
        step = 0
        for step, batch in enumerate(self.loader, start=1):
            if self.cancelled is not None and self.cancelled():
                raise CancelledError(f"training cancelled at step {step} of {budget.total}; no model was written")
            if step == 3:  # the first steps pay for warming caches: the rate is measured from here
                timer.update({"from": time.perf_counter(), "from_step": 2, "validating": 0.0})
            batch = _to(batch, self.device)
            losses = self._step(batch)
            self.optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            self.optimizer.step()
            self.scheduler.step()
            bar.update(1)
            bar.set_postfix({k: f"{v.item():.3f}" for k, v in losses.items()}, refresh=False)
            self.say("step", step=step, steps=budget.total, losses={k: float(v.item()) for k, v in losses.items()})
            if budget.validates(step):
                seconds = 0.0
                if self.rank == 0:
                    begun = time.perf_counter()
                    self._validate(step)
                    seconds = time.perf_counter() - begun
                    timer["validating"] += seconds
                if self.world > 1:
                    dist.barrier()
                self._fit_budget(step, timer, seconds)
                if bar.total != budget.total:
                    bar.total = budget.total
                    bar.refresh()
            shown = max(shown, min(1.0, step / budget.total))
            if callable(self.progress):
                self.progress(shown)
            if step >= budget.total:
                break
        bar.close()
        self.steps_done = step
        self.train_seconds = time.perf_counter() - self.started

    def _validate(self, step: int) -> None:
        self.say("phase", phase="validating")
        val = evaluate(self.model, self.spec, self.reader, self.blocks["val"], self.device)
        self.validations += 1
        self.say("validation", step=step, metrics=summary(val))
        self.say("phase", phase="training")
        if score(val, self.spec.task) > self.best_score:
            self.best_score, self.best_step, self.best_val = score(val, self.spec.task), step, val
            self.best_state = copy.deepcopy(self.model.state_dict())
        log.info("step %d: validation %s", step, {k: round(v, 4) for k, v in summary(val).items()})

    def fit_forest(self) -> TrainResult:
        """A forest variant instead of a network: fitted on pixels of the same blocks, scored on the same test
        pixels (:mod:`.forest`)."""
        from .forest import ForestNet, fit_forest

        forest, info = fit_forest(self)
        self.steps_done, self.class_counts = 0, None
        self.train_seconds = time.perf_counter() - self.started
        self.say("phase", phase="testing")
        net = ForestNet(forest, len(self.spec.classes))
        test = evaluate(net, self.spec, self.reader, self.blocks["test"], torch.device("cpu"))
        self.spec.training = self.provenance(test, forest=info)
        return TrainResult(self.spec, {}, {}, test, forest=forest)

    def provenance(self, test: dict[str, Any], **extra: Any) -> dict[str, Any]:
        """``spec.training``: the scores, the budget, the options and where the data came from."""
        cfg, scene, blocks = self.cfg, self.scene, self.blocks
        return {
            "metrics": {f"test_{k}": v for k, v in summary(test).items()},
            "test": test,
            **extra,
            "steps": self.steps_done,
            "budget_minutes": self.budget.minutes,
            "train_seconds": round(self.train_seconds, 1),
            "options": {**asdict(self.opts), "architecture": None},
            "device": str(self.device),
            "world_size": self.world,
            **({"class_pixels": [int(n) for n in self.class_counts]} if self.class_counts is not None else {}),
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
                "labelled_pixels": {k: labelled_pixels(self.per_block, v, cfg.split.block_size)
                                    for k, v in blocks.items()},
                "pixel_size_m": scene.grid.pixel_size_m(),
            },
        }

    def finish(self) -> TrainResult:
        """The best weights, the test blocks' scores, the provenance and (mtl) the error model."""
        spec, model, blocks = self.spec, self.model, self.blocks
        spread = _rank_spread(model, self.world)
        model.load_state_dict(self.best_state or model.state_dict())
        self.say("phase", phase="testing")
        test = evaluate(model, spec, self.reader, blocks["test"], self.device) if self.rank == 0 else {}
        spec.training = self.provenance(test, validation=self.best_val, best_step=self.best_step,
                                        **({"ranks_weight_spread": spread} if self.world > 1 else {}))
        if self.opts.uncertainty_weighting:
            spec.training["task_weights"] = self.weighting.weights()
        if spec.aux and spec.task != "classification" and self.rank == 0:
            from .errormodel import fit_on_blocks  # reconstruction-error distribution of the training blocks

            self.say("phase", phase="fitting the error model")
            spec.training["error_model"] = fit_on_blocks(model, spec, self.reader, blocks["train"], blocks["val"],
                                                         self.device)
        return TrainResult(spec, {k: v.detach().cpu() for k, v in model.state_dict().items()}, self.best_val, test)


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
        opts: variant, budget (steps or minutes), architecture and loss settings.
        progress: True for a progress bar, or a callback receiving the fraction of the run done.
        cancelled: polled before every step; when it returns True, training stops with CancelledError.
        report: receives what a live view draws, as plain dicts: ``{"kind": "phase", "phase": …}`` (reading data,
            training, validating, testing, fitting the error model), ``{"kind": "step", "step": k, "steps": n,
            "losses": {"main": …, "aux/<name>": …, "total": …}}`` after every step (``steps``: the run's length,
            fitted to a budget in minutes once its step rate is known) and ``{"kind": "validation", "step": k,
            "metrics": {…}}`` after every validation (rank 0 only).

    Returns:
        The spec (with normalisation, metrics and provenance) and the best weights by validation score.

    Raises:
        ConfigError: a budget in minutes too short for the data (said after the first steps, nothing written).
    """
    trainer = Trainer(cfg, opts, progress, cancelled, report)
    trainer.configure_data()
    if opts.variant in FOREST_VARIANTS:
        return trainer.fit_forest()
    trainer.configure_model()
    trainer.configure_losses()
    trainer.configure_optimizer()
    trainer.fit()
    return trainer.finish()
