"""Equal wall time made repeatable for the benches: the steps ``mtl train --minutes M`` fits for a recipe, measured
alone on this machine, then given to every seed as a step count.

The product's budget logic runs alone with ``threads`` threads: its warm-up measures the step and validation rates
and fits the number of steps the budget allows (reading the data, the validations, the test and the error model
included); every validation fits it again. The length fitted at the fourth validation (about 30 % of the budget: a
rate measured over ~100 steps, not the warm-up's 18) is kept. Each seed then trains for exactly that many steps,
with one thread, several at a time: the machine's load changes how long a bench takes, never what a model gets.
This machine's speed drifts by ±15 % from minute to minute, so a calibration is the mean of a few.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

FITS = 4


def calibrate(config: Callable[[Path], object], options, threads: int) -> dict:
    """Steps and seconds per step that ``options`` (a :class:`TrainOptions` with ``minutes``) fits, run alone with
    ``threads`` threads on the configuration ``config(folder)`` returns."""
    import torch

    from mtl_core.errors import CancelledError
    from mtl_core.training.train import Trainer

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config(Path(tmp)), options, progress=False)
        trainer.cancelled = lambda: trainer.budget.fits >= FITS  # stop once the length has been fitted again
        for step in (trainer.configure_data, trainer.configure_model, trainer.configure_losses,
                     trainer.configure_optimizer):
            step()
        try:
            trainer.fit()
        except CancelledError:
            pass
    return {"steps": trainer.budget.total, "step_s": round(trainer.budget.step_seconds, 4)}


def calibrated(key: dict, measure: Callable[[], dict], cals: list[dict], cal_file: Path, repeats: int) -> int:
    """The mean steps of the first ``repeats`` calibrations in ``cals`` that match ``key``; the missing ones are
    measured (``measure()``: the record's other fields, ``steps`` among them) and appended to ``cal_file``, so an
    interrupted bench resumes."""
    found = [c for c in cals if all(c.get(k) == v for k, v in key.items())]
    while len(found) < repeats:
        found.append({**key, **measure()})
        cals.append(found[-1])
        with cal_file.open("a") as f:
            f.write(json.dumps(found[-1]) + "\n")
        print(f"calibrated {key}: {found[-1]['steps']} steps", flush=True)
    return round(sum(c["steps"] for c in found[:repeats]) / repeats)
