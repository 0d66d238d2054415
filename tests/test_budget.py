"""A training budget in steps or minutes, the learning-rate schedule at every small count, the forest baseline and
starting the encoder from a weights file."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from mtl_core.config import load_config
from mtl_core.errors import ConfigError
from mtl_core.jobs import Job, run_job
from mtl_core.spec import Architecture
from mtl_core.training.options import PROBE_STEPS, VALIDATIONS, TrainOptions
from mtl_core.training.schedule import Budget, lr_factor
from mtl_core.training.train import Trainer, train

SMALL = Architecture(encoder_depth=3)


def test_the_schedule_is_defined_for_every_count():
    for total in range(1, 200):
        for warmup in {1, max(1, round(0.05 * total)), PROBE_STEPS}:
            factors = [lr_factor(k, total, warmup) for k in range(1, total + 1)]
            assert all(math.isfinite(f) and 0 < f <= 1 for f in factors), (total, warmup)
            assert max(factors) == 1.0  # the peak is reached
            peak = factors.index(1.0)
            assert all(a >= b for a, b in zip(factors[peak:], factors[peak + 1:]))  # then it only decays
    assert lr_factor(10, 10, 1) == pytest.approx(0.01)  # the last step ends at 1 % of the peak


def test_a_step_budget_validates_ten_times_and_at_the_end():
    for steps in (1, 2, 9, 10, 11, 37, 600):
        budget = Budget(TrainOptions(steps=steps), 0.0)
        done = [s for s in range(1, steps + 1) if budget.validates(s)]
        assert done[-1] == steps and len(done) <= VALIDATIONS and len(done) >= min(steps, VALIDATIONS // 2)
    budget = Budget(TrainOptions(steps=600), 0.0)
    assert [s for s in range(1, 601) if budget.validates(s)] == list(range(60, 601, 60))
    fixed = Budget(TrainOptions(steps=25, eval_every=10), 0.0)
    assert [s for s in range(1, 26) if fixed.validates(s)] == [10, 20, 25]


def test_options_refuse_budgets_that_cannot_be():
    for bad in (0, -1, 1e9, float("nan"), True):
        with pytest.raises(ConfigError, match="minutes"):
            TrainOptions(minutes=bad)
    with pytest.raises(ConfigError, match="not both"):
        TrainOptions(steps=10, minutes=1)
    with pytest.raises(ConfigError, match="steps 0"):
        TrainOptions(steps=0)
    with pytest.raises(ConfigError, match="forest"):
        TrainOptions(variant="tree")
    assert TrainOptions().budget_minutes > 0 and TrainOptions(steps=5).budget_minutes is None


@pytest.mark.parametrize("steps", [1, 2, 3, 10, 21])
def test_small_step_counts_train_and_write_a_model(crop_dir, tmp_path, steps):
    """A quick 10-step run crashed in OneCycleLR (one warm-up step); every small count trains to the end."""
    out = tmp_path / "m.mtl.safetensors"
    result = run_job(Job(kind="train", config=str(crop_dir / "crop.yaml"), out=str(out), device="cpu",
                         train={"steps": steps, "batch_size": 2, "architecture": {"encoder_depth": 3}}))
    assert out.is_file() and result.spec["training"]["steps"] == steps
    assert 1 <= result.spec["training"]["best_step"] <= steps


def test_a_budget_in_minutes_fits_its_steps(crop_dir):
    records = []
    result = train(load_config(crop_dir / "crop.yaml"), TrainOptions(minutes=1.0, batch_size=2, device="cpu",
                                                                     architecture=SMALL),
                   progress=False, report=records.append)
    steps = [r for r in records if r["kind"] == "step"]
    validations = [r for r in records if r["kind"] == "validation"]
    t = result.spec.training
    assert t["budget_minutes"] == 1.0 and t["steps"] == len(steps) > PROBE_STEPS
    assert steps[0]["steps"] == PROBE_STEPS  # the run's length is fitted after the probe…
    # …and again at each validation: the last one may end the run before the length the last step announced
    assert steps[-1]["step"] == t["steps"] <= steps[-1]["steps"]
    assert validations[0]["step"] == PROBE_STEPS and validations[-1]["step"] == t["steps"]
    # spread over the run, not every few steps: each refit respaces them, so a machine whose speed changes during
    # the run (a busy one) validates somewhat more often than VALIDATIONS times
    assert len(validations) <= 2 * VALIDATIONS


def test_a_budget_too_short_is_one_clear_error_and_writes_nothing(crop_dir, tmp_path):
    out = tmp_path / "m.mtl.safetensors"
    with pytest.raises(ConfigError, match=r"too short for this data.*give at least --minutes"):
        run_job(Job(kind="train", config=str(crop_dir / "crop.yaml"), out=str(out), device="cpu",
                    train={"minutes": 0.001, "batch_size": 2, "architecture": {"encoder_depth": 3}}))
    assert list(tmp_path.iterdir()) == []


def _mtl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mtl_core.cli", "-q", *args], capture_output=True, text=True,
                          check=False, timeout=600)


def test_cli_refuses_bad_budgets_in_one_line(crop_dir, tmp_path):
    config = str(crop_dir / "crop.yaml")
    for bad in ("0", "-1", "1e9", "nan", "five"):
        done = _mtl("train", config, "--out", str(tmp_path / "m.mtl.safetensors"), "--minutes", bad)
        assert done.returncode == 2 and "--minutes" in done.stderr and "Traceback" not in done.stderr, bad
    both = _mtl("train", config, "--out", str(tmp_path / "m.mtl.safetensors"), "--minutes", "1", "--steps", "5")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
    forest = _mtl("train", config, "--variant", "forest", "--out", str(tmp_path / "f.onnx"))
    assert forest.returncode == 2 and "never saved" in forest.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_forest_is_trained_on_the_same_blocks_and_scored_not_saved(crop_dir, tmp_path):
    done = _mtl("train", str(crop_dir / "crop.yaml"), "--variant", "forest-multimodal", "--forest-pixels", "3000")
    assert done.returncode == 0, done.stderr
    assert "no model file is written" in done.stdout and "miou" in done.stdout
    assert list(tmp_path.iterdir()) == []
    cfg = load_config(crop_dir / "crop.yaml")
    forest = train(cfg, TrainOptions(variant="forest", forest_pixels=3000, device="cpu"), progress=False)
    net = train(cfg, TrainOptions(variant="unimodal", steps=2, batch_size=2, device="cpu", architecture=SMALL),
                progress=False)
    f, n = forest.spec.training, net.spec.training
    assert f["data"]["blocks"] == n["data"]["blocks"]  # the same split
    assert sum(d["pixels"] for d in forest.test["per_class"].values()) == \
        sum(d["pixels"] for d in net.test["per_class"].values())  # scored on the same test pixels
    assert f["forest"]["pixels"] <= 3000 < f["forest"]["labelled_pixels"]
    assert [b.name for b in forest.spec.input_bands] == [b.name for b in net.spec.input_bands]
    assert 0 < forest.test["miou"] <= 1


def test_encoder_weights_from_a_safetensors_file(crop_dir, tmp_path):
    from safetensors.torch import save_file
    from segmentation_models_pytorch.encoders import get_encoder

    encoder = get_encoder("resnet18", in_channels=3, depth=3, weights=None)
    torch.manual_seed(123)
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in encoder.state_dict().items()}
    weights = tmp_path / "resnet18.safetensors"
    save_file({f"encoder.{k}": v.contiguous() for k, v in state.items()}, str(weights))
    trainer = Trainer(load_config(crop_dir / "crop.yaml"),
                      TrainOptions(steps=1, device="cpu", encoder_weights=str(weights), architecture=SMALL),
                      progress=False)
    trainer.configure_data()
    trainer.configure_model()
    got = trainer.model.encoder.state_dict()
    assert torch.equal(got["layer1.0.conv1.weight"], state["layer1.0.conv1.weight"])
    first = got["conv1.weight"]  # 3 bands' filters repeated over the crop's 4 input bands and scaled, as smp does
    c = trainer.spec.in_channels
    assert first.shape[1] == c
    np.testing.assert_allclose(first[:, 3].numpy(), (state["conv1.weight"][:, 0] * 3 / c).numpy(), rtol=1e-6)

    pickled = tmp_path / "resnet18.pth"
    torch.save(state, pickled)
    for source, message in ((str(pickled), "never read from pickled"), (str(tmp_path / "none.safetensors"),
                                                                        "does not exist")):
        with pytest.raises(ConfigError, match=message):
            train(load_config(crop_dir / "crop.yaml"), TrainOptions(steps=1, device="cpu", encoder_weights=source,
                                                                    architecture=SMALL), progress=False)
    partial = tmp_path / "partial.safetensors"
    save_file({"conv1.weight": state["conv1.weight"]}, str(partial))
    with pytest.raises(ConfigError, match="lack"):
        train(load_config(crop_dir / "crop.yaml"), TrainOptions(steps=1, device="cpu", encoder_weights=str(partial),
                                                                architecture=SMALL), progress=False)
