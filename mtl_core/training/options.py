"""Training options: what a train job may set, its budget, and the chosen recipe's defaults (no PyTorch here, so
the command line and the QGIS side can read them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..errors import ConfigError
from ..spec import VARIANTS, Architecture

#: The budget of a train run that names neither steps nor minutes (chosen by measurement: docs/results.md).
DEFAULT_MINUTES = 5.0
#: The longest budget accepted (a week): a larger number is a typo, not a plan.
MAX_MINUTES = 7 * 24 * 60.0
#: Steps of the learning-rate warm-up of a budget run, which also measure the step rate.
PROBE_STEPS = 20
#: Validations in a run whose ``eval_every`` is not given.
VALIDATIONS = 10
#: The network of the chosen recipe (docs/results.md, "Training recipes"): three encoder levels and the per-pixel
#: spectral block. Model files keep their own architecture; :class:`~mtl_core.spec.Architecture`'s defaults stay
#: those of older files.
RECIPE_ARCHITECTURE = {"encoder_depth": 3, "spectral_channels": 16}
CLASS_BALANCES: tuple[str, ...] = ("none", "sqrt", "inverse")
#: the per-pixel forest baselines (:mod:`.forest`), and the network variant whose bands each reads
FOREST_VARIANTS: dict[str, str] = {"forest": "unimodal", "forest-multimodal": "multimodal"}
#: what ``mtl train --variant`` trains: the three networks, then the two forests
TRAIN_VARIANTS: tuple[str, ...] = VARIANTS + tuple(FOREST_VARIANTS)


@dataclass
class TrainOptions:
    """How to train; the same budget for every variant makes the baselines comparable.

    The budget is ``steps`` optimiser steps or ``minutes`` of wall time for the whole run (reading the data,
    training, validations, the test and the error model); with neither, :data:`DEFAULT_MINUTES`.
    """

    variant: Literal["mtl", "unimodal", "multimodal", "forest", "forest-multimodal"] = "mtl"
    steps: int | None = None
    minutes: float | None = None
    batch_size: int = 32
    #: the side of the training crops of a per-pixel task, in pixels (None: the configuration's patch_size;
    #: patch classification always trains on its patches); a multiple of the network's input step
    crop: int | None = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    #: validate every N steps (None: :data:`VALIDATIONS` times in the run)
    eval_every: int | None = None
    device: str = "auto"
    seed: int = 0
    architecture: Architecture = field(default_factory=lambda: recipe_architecture())
    aux_loss: Literal["l1", "mse"] = "l1"
    main_weight: float = 1.0
    aux_weights: dict[str, float] = field(default_factory=dict)
    uncertainty_weighting: bool = False
    #: classes weighted in the main loss by (1 / share) ** 0.5 (``sqrt``), 1 / share (``inverse``) or not at all
    class_balance: Literal["none", "sqrt", "inverse"] = "sqrt"
    #: random flips and quarter turns of the training patches
    augment: bool = True
    #: encoder weights to start from: ``imagenet`` (smp's weights, downloaded) or a .safetensors file of the
    #: encoder's state dict (3-band first convolution, adapted to the input bands as smp does); None: random
    encoder_weights: str | None = None
    #: mtl only: a multimodal model file trained on the same configuration whose main-task outputs the mtl model
    #: also learns to match (distillation of privileged information); it reads the auxiliary modalities the mtl
    #: model reconstructs, during training only.
    distil_from: str | None = None
    distil_weight: float = 1.0
    distil_temperature: float = 2.0
    #: forest variants: trees, and the most labelled pixels drawn from the training and validation blocks
    trees: int = 100
    forest_pixels: int = 250_000

    def __post_init__(self) -> None:
        if self.variant not in TRAIN_VARIANTS:
            raise ConfigError(f"unknown variant {self.variant!r}; choose one of {', '.join(TRAIN_VARIANTS)}")
        if self.steps is not None and self.minutes is not None:
            raise ConfigError(f"give a budget in steps ({self.steps}) or in minutes ({self.minutes:g}), not both")
        if self.steps is not None and (not isinstance(self.steps, int) or isinstance(self.steps, bool)
                                       or self.steps < 1):
            raise ConfigError(f"steps {self.steps!r} must be a whole number of at least 1")
        if self.minutes is not None:
            check_minutes(self.minutes)
        if self.eval_every is not None and (not isinstance(self.eval_every, int) or self.eval_every < 1):
            raise ConfigError(f"eval_every {self.eval_every!r} must be a whole number of at least 1 (or null)")
        if self.crop is not None and (not isinstance(self.crop, int) or isinstance(self.crop, bool)
                                      or self.crop < 8 or self.crop % 8):
            raise ConfigError(f"crop {self.crop!r} must be a whole number of pixels, a multiple of 8 and at least 8")
        if self.class_balance not in CLASS_BALANCES:
            raise ConfigError(f"unknown class_balance {self.class_balance!r}; choose one of "
                              f"{', '.join(CLASS_BALANCES)}")

    @property
    def budget_minutes(self) -> float | None:
        """The wall-time budget, or None for a budget in steps."""
        if self.steps is not None:
            return None
        return DEFAULT_MINUTES if self.minutes is None else float(self.minutes)


def check_minutes(minutes: float) -> float:
    """A training budget in minutes, or ConfigError naming the range."""
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not 0 < minutes <= MAX_MINUTES:
        raise ConfigError(f"a training budget of {minutes!r} minutes is not possible: give a number of minutes above "
                          f"0 and at most {MAX_MINUTES:g} (a week), e.g. --minutes {DEFAULT_MINUTES:g}")
    return float(minutes)


def recipe_architecture(**given) -> Architecture:
    """The recipe's network with what ``given`` changes (a job's partial ``architecture``): the decoder's widths
    follow the encoder's depth unless given."""
    return Architecture(**{**RECIPE_ARCHITECTURE, **given})
