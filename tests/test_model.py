"""The model factory: every task x variant builds, returns the dict contract, and trains every head."""

import pytest
import torch

from mtl_core.errors import ConfigError
from mtl_core.training.losses import classification_loss, masked_regression_loss
from mtl_core.model import create_model, padded_size
from mtl_core.spec import Architecture

from .conftest import make_spec


@pytest.mark.parametrize("spectral", [0, 16])
@pytest.mark.parametrize("variant", ["mtl", "unimodal", "multimodal"])
@pytest.mark.parametrize("task", ["segmentation", "classification", "regression"])
def test_shapes_and_gradients_reach_every_head(task, variant, spectral):
    torch.manual_seed(0)
    spec = make_spec(task, variant)
    spec.architecture.spectral_channels = spectral
    model = create_model(spec)
    x = torch.randn(2, spec.in_channels, 32, 32)
    out = model(x)
    assert set(out) == {"main", "aux"}
    expected_main = (2, spec.out_channels) if task == "classification" else (2, spec.out_channels, 32, 32)
    assert tuple(out["main"].shape) == expected_main
    assert set(out["aux"]) == ({"swir"} if variant == "mtl" else set())
    for name, rec in out["aux"].items():
        assert tuple(rec.shape) == (2, 2, 32, 32)

    if task == "regression":
        loss = masked_regression_loss(out["main"], torch.zeros_like(out["main"]), torch.ones(2, 32, 32, dtype=bool))
    elif task == "classification":
        loss = classification_loss(out["main"], torch.tensor([0, 2]))
    else:
        loss = classification_loss(out["main"], torch.randint(0, 3, (2, 32, 32)))
    for rec in out["aux"].values():
        loss = loss + rec.abs().mean()
    loss.backward()
    heads = {"main_head": model.main_head, **{f"aux:{n}": h for n, h in model.aux_heads.items()}}
    if spectral and (task != "classification" or variant == "mtl"):  # it feeds every per-pixel head
        heads["spectral"] = model.spectral
        heads.update({f"spectral:{n}": h for n, h in model.spectral_aux.items()})
        if task != "classification":
            heads["spectral:main"] = model.spectral_main
    else:
        assert model.spectral is None
    for name, head in {**heads, "encoder": model.encoder}.items():
        grads = [p.grad for p in head.parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads), name
        assert any(g.abs().sum() > 0 for g in grads), name


def test_input_channels_follow_the_variant():
    assert make_spec("segmentation", "mtl").in_channels == 4
    assert make_spec("segmentation", "unimodal").in_channels == 4
    assert make_spec("segmentation", "multimodal").in_channels == 6


def test_indivisible_input_gets_the_padded_size_in_the_error():
    model = create_model(make_spec())
    with pytest.raises(ValueError, match="pad it to 40x32"):
        model(torch.zeros(1, 4, 33, 32))
    assert padded_size(33, 8) == 40 and padded_size(32, 8) == 32


def test_unknown_encoder_and_architecture_are_named_with_alternatives():
    spec = make_spec()
    spec.architecture = Architecture(encoder="resnet9000", encoder_depth=3)
    with pytest.raises(ConfigError, match=r"unknown encoder 'resnet9000'; choose one of .*resnet18"):
        create_model(spec)
    spec.architecture = Architecture(arch="nonet", encoder_depth=3)
    with pytest.raises(ConfigError, match=r"unknown architecture 'nonet'; choose one of .*unet"):
        create_model(spec)
