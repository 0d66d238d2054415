"""Jobs: one plain, JSON-serialisable description of a predict, explain, train or export run, and running it.

The CLI, the QGIS panel, the Processing algorithms and the worker process (:mod:`mtl_core.worker`) all
describe work as a :class:`Job` and run it with :func:`run_job`, so an option one of them sets is never
dropped on the way to the engine. A job holds only strings, numbers, lists and dicts: it travels as
JSON to the worker process and back into logs unchanged.

Kinds and the fields they read:

* ``predict`` — ``model``, ``raster``, ``out`` (output folder) and the engine fields (``bands``,
  ``extent``, ``mask``, ``tile``, ``overlap``, ``chunk``, ``batch_size``, ``device``, ``backend``,
  ``threads``, ``products``, ``cog``, ``float32``, ``workers``, ``scheduler``, ``vrt``);
* ``explain`` — as ``predict``, plus ``aux_truth`` and/or ``labels``; the explanation products are
  added to ``products``;
* ``train`` — ``config`` (dataset configuration file) or ``dataset`` (the configuration itself), ``out``
  (model file; the configuration used is written beside it as ``<model>.dataset.yaml``; a forest baseline is
  scored, not saved, and needs none), ``train`` (options of :class:`~mtl_core.training.options.TrainOptions`;
  ``architecture`` as a dict) and ``half``;
* ``export`` — ``model`` (safetensors), ``out`` (``.onnx`` file), ``opset``, and for an int8 export
  ``int8`` with ``raster`` as the calibration raster and ``bands``.

Only ``train`` and ``export`` (and the torch backend) import PyTorch; ``predict`` and ``explain`` with
the ONNX backend run on numpy, GDAL and ONNX Runtime alone.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigError
from .io.fileio import check_writable, json_safe

JobKind = Literal["predict", "explain", "train", "export"]
KINDS = ("predict", "explain", "train", "export")
#: where a job runs: ``auto`` (CUDA when PyTorch sees a GPU), ``cpu`` or ``cuda``
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")


def _default_products() -> list[str]:
    """Products of a job that names none: the registry's defaults that need no ground truth (imported late, so
    a worker without numpy can still say what is missing)."""
    from .engine.products import default_names

    return list(default_names(with_truth=False))


def _is_a(value: Any, hint: Any) -> bool:
    """Whether a value parsed from JSON has the type a :class:`Job` field declares."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_is_a(value, a) for a in args)
    if origin is Literal:
        return value in args
    if origin is list:
        return isinstance(value, list) and all(_is_a(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(_is_a(k, args[0]) and _is_a(v, args[1]) for k, v in value.items())
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is type(None):
        return value is None
    return isinstance(value, hint)


@dataclass
class Job:
    """One unit of work (see the module docstring for which fields each kind reads).

    Attributes:
        kind: ``predict``, ``explain``, ``train`` or ``export``.
        model: model file read by predict, explain and export.
        raster: input raster (predict, explain) or calibration raster (int8 export).
        out: output folder (predict, explain) or file (train: model file; export: ``.onnx``).
        bands: 1-based raster band feeding each model input band; None: by description, else 1..N.
        extent: (xmin, ymin, xmax, ymax) in the raster's CRS; None: the whole raster.
        mask: polygon layer or raster (non-zero inside) restricting the run.
        tile, overlap, chunk, batch_size, device, backend, threads: tiling and runtime (as ``mtl predict``).
        products: products to write (``mtl predict --products``).
        cog: write Cloud Optimized GeoTIFFs.
        float32: write continuous layers as float32 instead of packed integers with scale/offset.
        overwrite: replace existing outputs (never the job's inputs); without it they are refused.
        workers, scheduler: run predict or explain as shards on a Dask LocalCluster of ``workers`` processes or on
            the running scheduler at ``scheduler`` (:mod:`mtl_core.engine.distributed`).
        vrt: with ``workers`` or ``scheduler``: each layer a VRT over its shards' files instead of one file.
        aux_truth: modality name -> raster of the real auxiliary bands (explain).
        labels: reference labels (explain): a raster, or a vector layer of polygons.
        labels_band: the raster's band with the labels (default: the band the model was trained on).
        labels_field: the polygons' class field (default: the field the model was trained on).
        aux_bands: modality name -> bands of its ``aux_truth`` raster (1-based, in the modality's order); default
            by band description, else 1..K.
        split: which labelled pixels an explain job scores: ``all``, or the ``train``, ``val`` or ``test`` blocks of
            the model's own split (the raster must be its training raster).
        config: dataset configuration file (train).
        dataset: the dataset configuration itself, as the mapping a configuration file holds (train; instead of
            ``config``; relative paths are taken from the model file's folder).
        train: :class:`~mtl_core.training.options.TrainOptions` fields (train).
        half: store trained weights as float16 (train).
        int8, opset: export settings.
        name: display name of the input (used by the plugin for run folders and layer groups).
    """

    kind: JobKind
    model: str = ""
    raster: str = ""
    out: str = ""
    bands: list[int] | None = None
    extent: list[float] | None = None
    mask: str | None = None
    tile: int | None = None
    overlap: int | None = None
    chunk: int = 2048
    batch_size: int = 4
    device: str = "auto"
    backend: str = "auto"
    threads: int | None = None
    products: list[str] = field(default_factory=_default_products)
    cog: bool = False
    float32: bool = False
    overwrite: bool = False
    workers: int | None = None
    scheduler: str | None = None
    vrt: bool = False
    aux_truth: dict[str, str] = field(default_factory=dict)
    labels: str | None = None
    labels_band: int | None = None
    labels_field: str | None = None
    aux_bands: dict[str, list[int]] = field(default_factory=dict)
    split: str = "all"
    config: str = ""
    dataset: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    half: bool = False
    int8: bool = False
    opset: int = 17
    name: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown job kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        self.products = list(self.products)
        self.extent = list(self.extent) if self.extent is not None else None
        self.bands = list(self.bands) if self.bands is not None else None
        self.aux_truth = {str(k): str(v) for k, v in (self.aux_truth or {}).items()}

    @property
    def has_ground_truth(self) -> bool:
        return bool(self.aux_truth) or bool(self.labels)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        """A job from a dict; unknown keys are refused (a typo would otherwise be silently ignored)."""
        if not isinstance(data, dict) or "kind" not in data:
            raise ConfigError("a job must be a JSON object with at least a 'kind' key "
                              "(predict, explain, train or export)")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown job key(s) {unknown}; known keys: {', '.join(sorted(known))}")
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name in data and not _is_a(data[f.name], hints[f.name]):
                raise ConfigError(f"job key {f.name!r} must be {f.type}, not {json.dumps(data[f.name])[:60]}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> Job:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"the job is not valid JSON ({exc})") from exc
        return cls.from_dict(data)

    def predict_options(self):
        """The engine's :class:`~mtl_core.engine.PredictOptions` for a predict or explain job."""
        from .engine import PredictOptions
        from .engine.products import truth_names

        products = list(self.products)
        if self.kind == "explain":  # what its statistics and report need, on top of the chosen products
            products += [p for p in ("main", *truth_names()) if p not in products]
        return PredictOptions(
            tile=self.tile, overlap=self.overlap, chunk=self.chunk, batch_size=self.batch_size, device=self.device,
            backend=self.backend, threads=self.threads, extent=tuple(self.extent) if self.extent else None,
            mask=self.mask, bands=list(self.bands) if self.bands else None, products=tuple(products),
            aux_truth=dict(self.aux_truth) or None, labels=self.labels or None, cog=self.cog, float32=self.float32,
            aux_bands={k: list(v) for k, v in self.aux_bands.items()} or None,
            overwrite=self.overwrite, labels_band=self.labels_band, labels_field=self.labels_field,
            workers=self.workers, scheduler=self.scheduler, vrt=self.vrt,
        )


@dataclass
class JobResult:
    """What a job produced, as plain values.

    Attributes:
        outputs: product key (or ``model``) -> file written.
        report: the HTML report of an explain job, or None.
        device: where the model ran (``cpu``, ``cuda:0`` …).
        seconds: wall-clock time of the job.
        metrics: held-out metrics of a trained model, AUROC of the explanation detectors, or empty.
        spec: the model's spec as a dict (the trained or exported model's for train and export).
        warnings: what the user should know about the run (e.g. an input unlike the training data).
    """

    outputs: dict[str, str] = field(default_factory=dict)
    report: str | None = None
    device: str = ""
    seconds: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobResult:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


Progress = Callable[[float], None]


def _finite(metrics: dict[str, Any]) -> dict[str, Any]:
    """Scalar metrics only, valid as JSON (NaN as None)."""
    return json_safe({k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) or v is None})


def set_torch_threads(threads: int | None) -> None:
    """PyTorch's CPU threads, when given (on a busy machine one thread can be several times faster than two)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def _train(job: Job, progress: Progress | bool, cancelled: Callable[[], bool] | None,
           report: Callable[[dict], None] | None = None) -> JobResult:
    from .config import load_config, parse_config
    from .modelfile import save_model
    from .training.options import FOREST_VARIANTS, recipe_architecture
    from .training.train import TrainOptions, train

    opts = dict(job.train)
    forest = opts.get("variant") in FOREST_VARIANTS
    if not (job.config or job.dataset) or not (job.out or forest):
        raise ConfigError("a train job needs 'config' (dataset configuration file) or 'dataset' (the configuration), "
                          "and 'out' (model file to write; a forest baseline writes none)")
    known = {f.name for f in dataclasses.fields(TrainOptions)}
    unknown = sorted(set(opts) - known)
    if unknown:
        raise ConfigError(f"unknown training option(s) {unknown}; known: {', '.join(sorted(known))}")
    if isinstance(opts.get("architecture"), dict):
        opts["architecture"] = recipe_architecture(**opts["architecture"])
    opts.setdefault("device", job.device)
    set_torch_threads(job.threads)
    out = Path(job.out) if job.out and not forest else None
    if out is not None:
        if not out.parent.is_dir():
            raise ConfigError(f"folder {str(out.parent)!r} for the model file does not exist; create it first")
        if out.is_dir():
            raise ConfigError(f"{str(out)!r} is a folder; give the model file to write, "
                              f"e.g. {out / 'model.mtl.safetensors'}")
        check_writable(out.parent)  # refused now, not after the training
    base = out.parent.resolve() if out is not None else Path(job.config or ".").resolve().parent
    cfg = parse_config(job.dataset, base) if job.dataset else load_config(job.config)
    names = [s.name for s in cfg.aux]
    unknown = sorted(set(opts.get("aux_weights") or {}) - set(names))
    if unknown:
        raise ConfigError(f"aux weights (--aux-weight) name {unknown}, which the configuration does not have; its "
                          f"auxiliary modalities are {names or 'none'}")
    result = train(cfg, TrainOptions(**opts), progress=progress, cancelled=cancelled, report=report)
    device = str(result.spec.training.get("device", opts["device"]))
    if not result.test:  # not rank 0 under torchrun: nothing to write
        return JobResult(device=str(opts["device"]))
    if out is None:  # a forest: scored, not saved
        return JobResult(device=device, metrics=_finite(result.test), spec=result.spec.to_dict())
    if report is not None:
        report({"kind": "phase", "phase": "writing the model"})
    save_model(out, result.spec, result.state_dict, half=job.half)
    try:
        outputs = {"model": str(out), "dataset": str(write_dataset(cfg, out))}
    except BaseException:  # a model is its file and its configuration: keep neither
        out.unlink(missing_ok=True)
        raise
    return JobResult(outputs=outputs, device=device, metrics=_finite(result.test), spec=result.spec.to_dict())


def baseline_variants(chosen: str) -> list[str]:
    """What "train the baselines too" trains besides ``chosen``: the forests first (seconds), then the other
    networks."""
    from .training.options import FOREST_VARIANTS, TRAIN_VARIANTS

    networks = [v for v in TRAIN_VARIANTS if v not in FOREST_VARIANTS and v != chosen]
    return [v for v in FOREST_VARIANTS if v != chosen] + networks


def model_file(out: str | os.PathLike, variant: str, chosen: str) -> str:
    """Where a variant's model is written: ``out`` for the chosen one (``.mtl.safetensors`` added when it names
    neither a safetensors file nor a folder), ``<stem>.<variant>.safetensors`` beside it for a network trained
    with it as a baseline (``model.mtl.safetensors`` -> ``model.unimodal.safetensors``), nothing ("") for a
    forest."""
    from .training.options import FOREST_VARIANTS

    if variant in FOREST_VARIANTS:
        return ""
    out = str(out)
    if not out.endswith(".safetensors") and not Path(out).is_dir():  # a folder is refused by the job, not renamed
        out += ".mtl.safetensors"
    if variant == chosen:
        return out
    path = Path(out)
    stem = path.name.removesuffix(".safetensors").removesuffix(f".{chosen}").removesuffix(".mtl")
    return str(path.with_name(f"{stem}.{variant}.safetensors"))


def train_jobs(variant: str, out: str, *, minutes: float | None = None, steps: int | None = None,
               baselines: bool = False, device: str = "auto", config: str = "", dataset: dict | None = None,
               name: str = "", **options: Any) -> list[Job]:
    """The train jobs of a form (the panel's Train page, Processing › Train, ``mtl train``): the chosen variant,
    then its baselines when asked, each with the same budget, data and device.

    Args:
        variant: the variant to train (:data:`~mtl_core.training.options.TRAIN_VARIANTS`).
        out: its model file (see :func:`model_file`); unused for a forest.
        minutes, steps: the budget (at most one; neither: the default budget in minutes).
        baselines: also train :func:`baseline_variants` on the same blocks.
        device, config, dataset, name: as the :class:`Job` fields.
        options: further :class:`~mtl_core.training.options.TrainOptions` fields.

    Raises:
        ConfigError: an unknown variant or an impossible budget (checked now, not in the worker).
    """
    from .training.options import TrainOptions, recipe_architecture

    if isinstance(options.get("architecture"), dict):  # partial: the recipe's network with these changes
        options["architecture"] = dataclasses.asdict(recipe_architecture(**options["architecture"]))
    budget = {"minutes": minutes} if minutes is not None else {"steps": steps} if steps is not None else {}
    TrainOptions(variant=variant, **budget)  # refuses an unknown variant or budget with its message
    defaults = dataclasses.asdict(TrainOptions())
    # only what differs from the recipe's defaults: two forms that mean the same run give the same job
    options = {k: v for k, v in options.items() if k not in defaults or v != defaults[k]}
    variants = [variant] + (baseline_variants(variant) if baselines else [])
    return [Job(kind="train", config=config, dataset=dict(dataset or {}), out=model_file(out, v, variant),
                device=device, name=name, train={"variant": v, **budget, **options}) for v in variants]


def dataset_path(model: str | os.PathLike) -> Path:
    """``<model>.dataset.yaml``: the configuration a model was trained on, beside it."""
    model = Path(model)
    stem = model.name.removesuffix(".safetensors").removesuffix(".mtl")
    return model.with_name(f"{stem}.dataset.yaml")


def write_dataset(cfg, model: str | os.PathLike) -> Path:
    """Write the configuration a model was trained on beside it (absolute paths), atomically."""
    import yaml

    from .config import config_to_dict
    from .io.fileio import atomic_path

    path = dataset_path(model)
    with atomic_path(path) as tmp:
        tmp.write_text("# The dataset configuration this model was trained on: mtl train " + path.name
                       + " --out MODEL reproduces the run.\n" + yaml.safe_dump(config_to_dict(cfg), sort_keys=False),
                       encoding="utf-8")
    return path


def _export(job: Job) -> JobResult:
    from .engine.runtime import read_spec
    from .training.export import export_onnx

    if not job.model or not job.out:
        raise ConfigError("an export job needs 'model' (safetensors model file) and 'out' (.onnx file to write)")
    if job.int8 and not job.raster:
        raise ConfigError("an int8 export needs a calibration raster: a raster holding the model's input bands, "
                          "whose tiles set the int8 ranges (e.g. the training input raster)")
    out = export_onnx(job.model, job.out, opset=job.opset, calibration=job.raster if job.int8 else None,
                      bands=job.bands if job.int8 else None)
    return JobResult(outputs={"model": str(out)}, device="cpu", spec=read_spec(out).to_dict())


def run_job(job: Job, progress: Progress | bool = False, cancelled: Callable[[], bool] | None = None,
            report: Callable[[dict], None] | None = None) -> JobResult:
    """Run a job to the end and return what it wrote.

    Args:
        job: the job.
        progress: True for a progress bar, or a callback receiving the fraction done (0..1).
        cancelled: polled between tile batches / training steps; when it returns True the job stops with
            :class:`~mtl_core.errors.CancelledError`, leaving no output behind.
        report: a train job's live record (phases, each step's losses, each validation's metrics; see
            :func:`mtl_core.training.train.train`).

    Raises:
        mtl_core.errors.MtlError: anything the job refuses, with the reason and the fix.
    """
    start = time.perf_counter()
    if job.kind == "train":
        result = _train(job, progress, cancelled, report)
    elif job.kind == "export":
        result = _export(job)
    else:
        if not job.model or not job.raster or not job.out:
            raise ConfigError(f"a {job.kind} job needs 'model', 'raster' and 'out' (output folder)")
        if job.kind == "explain":
            from .engine import explain

            if not job.has_ground_truth:
                raise ConfigError("an explain job needs ground truth: the real auxiliary rasters ('aux_truth') "
                                  "and/or reference labels ('labels'); without them run a predict job")
            done = explain(job.model, job.raster, job.out, job.predict_options(), progress=progress,
                           cancelled=cancelled, split=job.split)
            metrics = {f"auroc {k}": d.get("auroc") for k, d in done.stats.get("detectors", {}).items()}
            result = JobResult(outputs={k: str(v) for k, v in done.outputs.items()},
                               report=str(done.report["html"]) if done.report.get("html") else None,
                               device=done.device, metrics=_finite(metrics), spec=done.spec.to_dict(),
                               warnings=list(done.warnings))
        else:
            from .engine import predict

            done = predict(job.model, job.raster, job.out, job.predict_options(), progress=progress,
                           cancelled=cancelled)
            result = JobResult(outputs={k: str(v) for k, v in done.outputs.items()}, device=done.device,
                               spec=done.spec.to_dict() if done.spec else {}, warnings=list(done.warnings))
    result.seconds = time.perf_counter() - start
    return result
