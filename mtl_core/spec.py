"""The model specification: everything needed to run a trained model later, kept as JSON.

A :class:`ModelSpec` travels inside every model file next to the weights. It names the input bands
and their normalisation, the auxiliary modalities the model reconstructs, the main task with its
classes and colours, the architecture, and how the model was trained (metrics and data provenance).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import ConfigError, ModelFileError

FORMAT = "mtl-explain-model"
FORMAT_VERSION = 1

Task = Literal["segmentation", "classification", "regression"]
Variant = Literal["mtl", "unimodal", "multimodal"]
TASKS: tuple[str, ...] = ("segmentation", "classification", "regression")
VARIANTS: tuple[str, ...] = ("mtl", "unimodal", "multimodal")

#: Class value written for pixels with no prediction (input nodata) in class maps.
CLASS_NODATA = 0
#: Value written for pixels with no prediction in floating-point outputs.
FLOAT_NODATA = -9999.0
#: Nodata of the main-task error layer of a classifier (0 and 1 are "correct" and "wrong").
ERROR_NODATA = 255

_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
#: Modality and band names reach file names, layer names and network module names: letters, digits and
#: ``_ . + -`` only, never a path.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
MAX_CLASSES = 1024
MAX_PATCH = 4096
MAX_SPECTRAL = 256


@dataclass
class Band:
    """One band of a modality with its normalisation statistics (in the band's own units)."""

    name: str
    mean: float = 0.0
    std: float = 1.0


@dataclass
class Modality:
    """A group of bands read from one source, e.g. ``optical`` (4 bands) or ``swir`` (2 bands)."""

    name: str
    bands: list[Band]
    units: str = ""

    @property
    def band_names(self) -> list[str]:
        return [b.name for b in self.bands]


@dataclass
class ClassInfo:
    """One class of a segmentation or classification task."""

    value: int
    name: str
    color: str = "#808080"


@dataclass
class Target:
    """The main-task target of a regression model, with its normalisation."""

    name: str
    units: str = ""
    mean: float = 0.0
    std: float = 1.0


@dataclass
class Architecture:
    """How the network is assembled: an smp architecture and encoder, plus the heads' sizes.

    ``spectral_channels`` > 0 adds the per-pixel spectral block of :mod:`mtl_core.model` (that many features).
    """

    arch: str = "unet"
    encoder: str = "resnet18"
    encoder_depth: int = 4
    decoder_channels: list[int] | None = None
    spectral_channels: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.encoder_depth, int) or not 3 <= self.encoder_depth <= 5:
            raise ConfigError(f"encoder_depth {self.encoder_depth} must be 3, 4 or 5; choose --encoder-depth 3, 4 or 5")
        if not isinstance(self.spectral_channels, int) or isinstance(self.spectral_channels, bool) \
                or not 0 <= self.spectral_channels <= MAX_SPECTRAL:
            raise ConfigError(f"spectral_channels {self.spectral_channels!r} must be a whole number in "
                              f"0..{MAX_SPECTRAL} (0: no spectral block)")
        if self.decoder_channels is None:  # smp's U-Net widths, one per encoder level
            self.decoder_channels = [256, 128, 64, 32, 16][5 - self.encoder_depth:]


@dataclass
class ModelSpec:
    """Everything needed to run a model, stored as JSON in the model file.

    ``inputs`` are the modalities the network reads, concatenated in order; ``aux`` are the
    modalities it reconstructs (empty for the ``unimodal`` and ``multimodal`` baselines).
    """

    name: str
    task: Task
    variant: Variant
    inputs: list[Modality]
    aux: list[Modality] = field(default_factory=list)
    classes: list[ClassInfo] = field(default_factory=list)
    target: Target | None = None
    architecture: Architecture = field(default_factory=Architecture)
    patch_size: int = 64
    input_nodata: float | None = None
    training: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        self.validate()

    @property
    def input_bands(self) -> list[Band]:
        return [b for m in self.inputs for b in m.bands]

    @property
    def in_channels(self) -> int:
        return len(self.input_bands)

    @property
    def out_channels(self) -> int:
        """Channels of the main head: one per class, or one value for regression."""
        return 1 if self.task == "regression" else len(self.classes)

    def aux_modality(self, name: str) -> Modality:
        for m in self.aux:
            if m.name == name:
                return m
        raise ConfigError(f"the model reconstructs no modality {name!r}; it has {[m.name for m in self.aux]}")

    def validate(self) -> None:
        """Raise :class:`ModelFileError` if the spec is inconsistent. A model file is untrusted data: types,
        ranges and names are checked before anything uses them."""
        self._check_types()
        if self.task not in TASKS:
            raise ModelFileError(f"unknown task {self.task!r}; expected one of {', '.join(TASKS)}")
        if self.variant not in VARIANTS:
            raise ModelFileError(f"unknown variant {self.variant!r}; expected one of {', '.join(VARIANTS)}")
        if not self.input_bands:
            raise ModelFileError("the model spec names no input bands")
        if self.variant == "mtl" and not self.aux:
            raise ModelFileError("an 'mtl' model needs at least one auxiliary modality to reconstruct")
        if self.variant != "mtl" and self.aux:
            raise ModelFileError(f"a {self.variant!r} model reconstructs nothing, but aux modalities are listed")
        if self.task == "regression":
            if self.target is None:
                raise ModelFileError("a regression model needs a 'target' (name, units, normalisation)")
        elif len(self.classes) < 2:
            raise ModelFileError(f"a {self.task} model needs at least two classes, got {len(self.classes)}")
        if len(self.classes) > MAX_CLASSES:
            raise ModelFileError(f"the model lists {len(self.classes)} classes; MTL Explain handles at most "
                                 f"{MAX_CLASSES}. The file is damaged or not a land-cover model")
        values = [c.value for c in self.classes]
        if len(set(values)) != len(values):
            repeated = sorted({v for v in values if values.count(v) > 1})
            raise ModelFileError(f"class values must be unique; repeated: {repeated[:10]}"
                                 + (" …" if len(repeated) > 10 else ""))
        for c in self.classes:
            if not 1 <= c.value <= 65535:
                raise ModelFileError(f"class {c.name!r} has value {c.value}; values must lie in 1..65535 (0 is nodata)")
            if not _COLOR.match(c.color):
                raise ModelFileError(f"class {c.name!r} has colour {c.color!r}; write colours as '#rrggbb'")
        names = [m.name for m in self.inputs + self.aux]
        if len(set(names)) != len(names):
            raise ModelFileError(f"modality names must be unique, got {names}")
        for m in self.inputs + self.aux:
            for b in m.bands:
                if not b.std > 0:
                    raise ModelFileError(f"band {b.name!r} of {m.name!r} has std {b.std}; it must be positive")

    def _check_types(self) -> None:
        def number(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        if not isinstance(self.name, str) or not isinstance(self.task, str) or not isinstance(self.variant, str):
            raise ModelFileError("the spec's name, task and variant must be text")
        if not isinstance(self.patch_size, int) or not 1 <= self.patch_size <= MAX_PATCH:
            raise ModelFileError(f"patch_size {self.patch_size!r} must be a whole number of pixels in 1..{MAX_PATCH}")
        if self.input_nodata is not None and not number(self.input_nodata):
            raise ModelFileError(f"input_nodata {self.input_nodata!r} must be a number or null")
        if not isinstance(self.training, dict):
            raise ModelFileError("the spec's 'training' entry must be a mapping")
        for m in self.inputs + self.aux:
            if not isinstance(m.name, str) or not _NAME.match(m.name):
                raise ModelFileError(f"modality name {m.name!r} is not allowed: use letters, digits and _ . + - "
                                     "(at most 64), no path separators")
            if not m.bands:
                raise ModelFileError(f"modality {m.name!r} has no bands")
            for b in m.bands:
                if not isinstance(b.name, str) or not _NAME.match(b.name):
                    raise ModelFileError(f"band name {b.name!r} of {m.name!r} is not allowed: use letters, digits "
                                         "and _ . + - (at most 64)")
                if not number(b.mean) or not number(b.std):
                    raise ModelFileError(f"band {b.name!r} of {m.name!r}: mean and std must be finite numbers, got "
                                         f"{b.mean!r} and {b.std!r}")
        for c in self.classes:
            if not isinstance(c.value, int) or isinstance(c.value, bool) or not isinstance(c.name, str) \
                    or not isinstance(c.color, str) or len(c.name) > 200:
                raise ModelFileError(f"class {str(c.name)[:40]!r}: value must be a whole number, name text of at "
                                     "most 200 characters, colour '#rrggbb'")
        if self.target is not None and (not number(self.target.mean) or not number(self.target.std)
                                        or not isinstance(self.target.name, str) or not _NAME.match(self.target.name)):
            raise ModelFileError(f"target {self.target.name!r}: name like a band name, finite mean and std")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        """Build a spec from its JSON form, refusing other formats and newer versions."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ModelFileError("this is not an MTL Explain model (its metadata has no 'mtl-explain-model' spec)")
        version = d.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise ModelFileError(f"the model file's format version {version!r} is not a whole number; the file is "
                                 "damaged: export or train it again")
        if version > FORMAT_VERSION:
            raise ModelFileError(
                f"the model file has format version {version!r}, newer than this MTL Explain "
                f"understands ({FORMAT_VERSION}); update MTL Explain to open it"
            )
        try:
            return cls(
                name=d["name"],
                task=d["task"],
                variant=d["variant"],
                inputs=[_modality(m) for m in d["inputs"]],
                aux=[_modality(m) for m in d.get("aux", [])],
                classes=[ClassInfo(**c) for c in d.get("classes", [])],
                target=Target(**d["target"]) if d.get("target") else None,
                architecture=Architecture(**d.get("architecture", {})),
                patch_size=d.get("patch_size", 64),
                input_nodata=d.get("input_nodata"),
                training=d.get("training", {}),
                format_version=version,
            )
        except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
            raise ModelFileError(f"the model spec is incomplete or malformed ({str(exc)[:200]}); the file is damaged "
                                 "or was not written by MTL Explain") from exc


def _modality(d: dict[str, Any]) -> Modality:
    return Modality(name=d["name"], bands=[Band(**b) for b in d["bands"]], units=d.get("units", ""))


def reconstructs(spec: ModelSpec) -> str:
    """What a model reconstructs, in words (the same for ``mtl info`` and the panel)."""
    if not spec.aux:
        return "nothing (a baseline model: no explanation layers)"
    return "; ".join(f"{m.name} [{m.units or 'no units'}]: {', '.join(m.band_names)}" for m in spec.aux)


def held_out_score(spec: ModelSpec) -> tuple[str, float] | None:
    """The model's main held-out score (test mIoU, else R², else overall accuracy), if it was recorded."""
    metrics = spec.training.get("metrics", {})
    for key, name in (("test_miou", "mIoU"), ("test_r2", "R²"), ("test_overall_accuracy", "overall accuracy")):
        if isinstance(metrics.get(key), float):
            return name, metrics[key]
    return None


def describe(spec: ModelSpec) -> str:
    """Return the spec in human form, as ``mtl info`` prints it."""
    a = spec.architecture
    lines = [
        f"Model:         {spec.name}",
        f"Format:        {spec.format} v{spec.format_version}",
        f"Task:          {spec.task} ({spec.variant} variant)",
        f"Architecture:  {a.arch} / {a.encoder} (depth {a.encoder_depth}"
        f"{f', spectral block {a.spectral_channels}' if a.spectral_channels else ''}), patch {spec.patch_size} px",
        f"Input nodata:  {spec.input_nodata}",
        "Input bands (in this order):",
    ]
    i = 1
    for m in spec.inputs:
        for b in m.bands:
            lines.append(f"  {i:>2}. {m.name}/{b.name:<12} mean {b.mean:10.4g}  std {b.std:10.4g} {m.units}")
            i += 1
    lines.append(f"Auxiliary modalities (reconstructed, not needed at deployment): {reconstructs(spec)}"
                 if spec.aux else "Auxiliary modalities: none")
    if spec.task == "regression" and spec.target:
        lines.append(f"Target:        {spec.target.name} [{spec.target.units}]")
    else:
        lines.append("Classes:")
        lines += [f"  {c.value:>3}  {c.color}  {c.name}" for c in spec.classes]
    metrics = spec.training.get("metrics", {})
    if metrics:
        lines.append("Held-out metrics:")
        for k, v in metrics.items():
            if isinstance(v, float):
                lines.append(f"  {k}: {v:.4f}")
            elif not isinstance(v, (dict, list)):
                lines.append(f"  {k}: {v}")
    data = spec.training.get("data", {})
    if data:
        lines.append(f"Trained on:    {data.get('config', '?')} ({data.get('name', '')})")
    quant = spec.training.get("quantization")
    if quant:
        cal = quant.get("calibration", {})
        lines.append(f"Quantised:     {quant.get('dtype', '?')}, calibrated on {cal.get('tiles', '?')} tiles of "
                     f"{cal.get('tile_size', '?')} px from {cal.get('raster', '?')}"
                     + (" (the held-out metrics are the float model's)" if metrics else ""))
    return "\n".join(lines)
