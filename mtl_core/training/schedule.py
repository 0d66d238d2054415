"""How long a run trains and at which learning rate: a budget in steps or in minutes, the warm-up and cosine
schedule fitted to it."""

from __future__ import annotations

import math
import time

from ..errors import ConfigError
from .options import PROBE_STEPS, VALIDATIONS, TrainOptions


def lr_factor(step: int, total: int, warmup: int) -> float:
    """The learning rate of optimiser step ``step`` (1-based) of ``total``, as a fraction of the peak: a linear
    warm-up over ``warmup`` steps, then a cosine decay to 1 % of the peak. Defined for every ``total`` >= 1."""
    warmup = max(1, min(warmup, total))
    if step <= warmup:
        return step / warmup
    done = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * done))


class Budget:
    """When a run stops: after a number of steps, or when a wall-time budget is spent.

    A budget in minutes covers the whole run. Its first :data:`PROBE_STEPS` steps (the learning-rate warm-up)
    measure the step rate; one validation measures the evaluation rate, from which the test and the error
    model's fit are foreseen; the steps that fit in what is left become the run's length, so the cosine schedule
    ends when the budget does. Every validation measures again and fits the length to what is left.
    """

    def __init__(self, opts: TrainOptions, started: float) -> None:
        self.minutes = opts.budget_minutes
        self.started = started
        self.total = opts.steps or PROBE_STEPS  # known from the start, or fitted after the probe
        self.warmup = PROBE_STEPS if self.minutes else max(1, round(0.05 * self.total))
        self.eval_every = opts.eval_every
        self.fitted = self.minutes is None
        self.step_seconds = 0.0
        self.fits = 0
        self.next_validation = self.every

    @property
    def seconds(self) -> float | None:
        return None if self.minutes is None else self.minutes * 60.0

    @property
    def every(self) -> int:
        """Steps between validations when ``eval_every`` is not given: :data:`VALIDATIONS` in the run."""
        return max(1, math.ceil(self.total / VALIDATIONS))

    def validates(self, step: int) -> bool:
        """Whether step ``step`` ends with a validation: every ``eval_every`` steps, else :data:`VALIDATIONS`
        times spread over the run; always the last step and, for a budget, the end of the probe."""
        if step >= self.total or (not self.fitted and step == PROBE_STEPS):
            return True
        if self.eval_every:
            return step % self.eval_every == 0
        if self.fitted and step >= self.next_validation:
            self.next_validation = step + self.every
            return True
        return False

    def fit(self, step: int, step_seconds: float, validation_seconds: float, tail_seconds: float) -> None:
        """Fit the run's length to the time left (budget runs only; the length stays at least ``step``).

        Args:
            step: steps done.
            step_seconds: measured seconds per training step.
            validation_seconds: the last validation's seconds.
            tail_seconds: foreseen seconds of the test, the error model and writing the model.

        Raises:
            ConfigError: the budget cannot hold the data reading, the probe, one validation and the test.
        """
        if self.minutes is None:
            return
        self.step_seconds = step_seconds
        elapsed = time.perf_counter() - self.started
        left = self.seconds - elapsed - tail_seconds
        if not self.fitted and left < 0:
            need = elapsed + tail_seconds + validation_seconds
            raise ConfigError(
                f"a training budget of {self.minutes:g} min is too short for this data: reading it and the first "
                f"{step} steps took {elapsed:.0f} s, a validation takes {validation_seconds:.1f} s and the test and "
                f"error model about {tail_seconds:.0f} s; give at least --minutes {_round_up(need * 2):g}")
        step_seconds = max(step_seconds, 1e-6)
        more = max(0.0, left) / step_seconds  # steps that fit, validations left out
        every = self.eval_every or max(1, int(step + more) // VALIDATIONS)
        self.total = max(step, step + int(max(0.0, left) / (step_seconds + validation_seconds / every)))
        if not self.fitted:
            self.next_validation = step + self.every
        self.fitted = True
        self.fits += 1


def _round_up(seconds: float) -> float:
    """Seconds as minutes, rounded up to the next half minute."""
    return max(0.5, math.ceil(seconds / 30.0) / 2.0)
