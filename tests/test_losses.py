"""Loss masking: unlabelled pixels and nodata targets contribute nothing; class weights of the balanced loss."""

import numpy as np
import pytest
import torch

from mtl_core.training.losses import (
    IGNORE_INDEX,
    UncertaintyWeighting,
    class_weights,
    classification_loss,
    distillation_loss,
    masked_regression_loss,
)


def test_cross_entropy_ignores_unlabelled_pixels():
    logits = torch.randn(1, 3, 4, 4)
    target = torch.randint(0, 3, (1, 4, 4))
    masked = target.clone()
    masked[0, :2] = IGNORE_INDEX
    # Changing logits where the target is ignored must not change the loss.
    other = logits.clone()
    other[0, 0, :2] += 100.0  # favour class 0 in the first two rows
    assert torch.isclose(classification_loss(logits, masked), classification_loss(other, masked))
    assert not torch.isclose(classification_loss(logits, target), classification_loss(other, target))


def test_all_unlabelled_gives_zero_not_nan():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = classification_loss(logits, torch.full((1, 4, 4), IGNORE_INDEX))
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None


def test_reconstruction_loss_is_masked_where_the_target_is_nodata():
    pred = torch.zeros(1, 2, 2, 2)
    target = torch.tensor([[[[1.0, 1000.0], [1.0, 1.0]], [[2.0, -1000.0], [2.0, 2.0]]]])
    valid = torch.tensor([[[True, False], [True, True]]])
    assert masked_regression_loss(pred, target, valid, "l1").item() == 1.5
    assert masked_regression_loss(pred, target, valid, "mse").item() == 2.5


def test_uncertainty_weighting_learns_lower_weight_for_the_noisier_task():
    w = UncertaintyWeighting(["main", "aux/swir"])
    opt = torch.optim.SGD(w.parameters(), lr=0.1)
    for _ in range(200):
        opt.zero_grad()
        w({"main": torch.tensor(0.1), "aux/swir": torch.tensor(5.0)}).backward()
        opt.step()
    weights = w.weights()
    assert weights["aux/swir"] < weights["main"]


def test_distillation_matches_the_teacher_on_valid_pixels_only():
    torch.manual_seed(0)
    teacher = torch.randn(2, 4, 8, 8)
    valid = torch.zeros(2, 8, 8, dtype=torch.bool)
    valid[:, :4] = True
    assert distillation_loss(teacher.clone(), teacher, valid, "segmentation").item() == pytest.approx(0, abs=1e-6)
    student = teacher.clone()
    student[:, :, 4:] = torch.randn(2, 4, 4, 8)  # differs only where nothing is valid
    assert distillation_loss(student, teacher, valid, "segmentation").item() == pytest.approx(0, abs=1e-6)
    student = torch.randn(2, 4, 8, 8, requires_grad=True)
    loss = distillation_loss(student, teacher, valid, "segmentation")
    loss.backward()
    assert loss.item() > 0 and student.grad[:, :, 4:].abs().sum() == 0
    assert distillation_loss(student, teacher, torch.zeros_like(valid), "segmentation").item() == 0
    assert distillation_loss(torch.zeros(3, 4), torch.zeros(3, 4), None, "classification").item() == 0
    reg = distillation_loss(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), None, "regression")
    assert reg.item() == pytest.approx(1.0)


def test_class_weights_favour_rare_classes_and_keep_the_average_pixel_at_one():
    counts = np.array([9000, 900, 100, 0])
    share = counts / counts.sum()
    assert class_weights(counts, "none") is None
    for kind, power in (("sqrt", 0.5), ("inverse", 1.0)):
        w = class_weights(counts, kind).numpy()
        assert w[3] == 0  # a class without pixels weighs nothing
        assert w[0] < w[1] < w[2]
        assert float((w * share).sum()) == pytest.approx(1.0, rel=1e-5)
        assert w[2] / w[0] == pytest.approx((share[0] / share[2]) ** power, rel=1e-5)
    capped = class_weights(np.array([10 ** 7, 1]), "inverse").numpy()
    assert capped[1] == pytest.approx(50.0)
