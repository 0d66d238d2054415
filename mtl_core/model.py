"""The multitask network: one shared encoder-decoder, a main head and one head per auxiliary modality.

Every variant is assembled the same way, from a :class:`~mtl_core.spec.ModelSpec`:

* an encoder and decoder from segmentation-models-pytorch (any smp architecture and encoder name,
  built with ``encoder_weights=None``: nothing is downloaded);
* a **main head**: per-pixel class logits (``segmentation``), per-patch class logits pooled from the
  deepest encoder features (``classification``), or one per-pixel value (``regression``);
* one **reconstruction head** per auxiliary modality, per pixel, with as many channels as the
  modality has bands (``mtl`` variant only).

``forward`` always returns a dict: ``{"main": (B, C, H, W) or (B, C), "aux": {name: (B, K, H, W)}}``.
Inputs must have a height and width divisible by :attr:`MultiTaskModel.divisor`;
:func:`padded_size` gives the size to pad to.
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
from segmentation_models_pytorch.base import ClassificationHead, SegmentationHead
from torch import nn

from .errors import ConfigError
from .io.raster import padded_size
from .spec import ModelSpec


def _build_base(spec: ModelSpec) -> nn.Module:
    a = spec.architecture
    if a.arch not in smp.MODEL_ARCHITECTURES_MAPPING:
        raise ConfigError(
            f"unknown architecture {a.arch!r}; choose one of {', '.join(smp.MODEL_ARCHITECTURES_MAPPING)}"
        )
    encoders = smp.encoders.get_encoder_names()
    if a.encoder not in encoders:
        raise ConfigError(f"unknown encoder {a.encoder!r}; choose one of {', '.join(sorted(encoders))}")
    kwargs = {"encoder_depth": a.encoder_depth}
    if a.arch in ("unet", "unetplusplus", "manet"):
        if len(a.decoder_channels) != a.encoder_depth:
            raise ConfigError(
                f"decoder_channels {a.decoder_channels} must have one entry per encoder level "
                f"(encoder_depth={a.encoder_depth})"
            )
        kwargs["decoder_channels"] = list(a.decoder_channels)
    return smp.create_model(
        a.arch,
        encoder_name=a.encoder,
        encoder_weights=None,
        in_channels=spec.in_channels,
        classes=spec.out_channels,
        **kwargs,
    )


def _prune_unused(encoder: nn.Module, in_channels: int) -> None:
    """Replace encoder stages the chosen depth never runs (smp keeps them) by ``nn.Identity``.

    Which modules are unused is found with one small forward and backward pass, so the model file
    carries no dead weights and every remaining parameter receives a gradient.
    """
    size = 2 * int(encoder.output_stride)
    was_training = encoder.training
    encoder.eval()  # leave batch-norm running statistics untouched
    sum(f.sum() for f in encoder(torch.zeros(2, in_channels, size, size))[1:]).backward()

    def prune(module: nn.Module) -> None:
        for name, child in module.named_children():
            params = list(child.parameters())
            if params and all(p.grad is None for p in params):
                setattr(module, name, nn.Identity())
            else:
                prune(child)

    prune(encoder)
    encoder.zero_grad(set_to_none=True)
    encoder.train(was_training)


def _head_like(template: nn.Sequential, out_channels: int) -> SegmentationHead:
    """A per-pixel head with the same input channels, kernel and upsampling as smp's own head."""
    conv, upsample = template[0], template[1]
    scale = getattr(upsample, "scale_factor", None) or 1
    return SegmentationHead(conv.in_channels, out_channels, kernel_size=conv.kernel_size[0], upsampling=int(scale))


class MultiTaskModel(nn.Module):
    """Shared encoder-decoder with a main head and one reconstruction head per auxiliary modality."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        base = _build_base(spec)
        self.task = spec.task
        self.encoder = base.encoder
        _prune_unused(self.encoder, spec.in_channels)
        self.decoder = base.decoder
        if spec.task == "classification":
            self.main_head: nn.Module = ClassificationHead(self.encoder.out_channels[-1], spec.out_channels)
        else:
            self.main_head = base.segmentation_head
        self.aux_heads = nn.ModuleDict({m.name: _head_like(base.segmentation_head, len(m.bands)) for m in spec.aux})
        self.divisor = int(self.encoder.output_stride)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | dict[str, torch.Tensor]]:
        """Run every head.

        Args:
            x: normalised input bands, (B, C, H, W), H and W divisible by :attr:`divisor`.

        Returns:
            ``{"main": logits or values, "aux": {name: reconstruction (B, K, H, W)}}``.
        """
        h, w = x.shape[-2:]
        if not torch.jit.is_tracing() and (h % self.divisor or w % self.divisor):
            raise ValueError(
                f"input size {h}x{w} is not divisible by {self.divisor}; pad it to "
                f"{padded_size(h, self.divisor)}x{padded_size(w, self.divisor)}"
            )
        features = self.encoder(x)
        decoded = self.decoder(features)
        if self.task == "classification":
            main = self.main_head(features[-1])
        else:
            main = self.main_head(decoded)
        return {"main": main, "aux": {name: head(decoded) for name, head in self.aux_heads.items()}}


def create_model(spec: ModelSpec) -> MultiTaskModel:
    """Build the network a spec describes (random weights)."""
    return MultiTaskModel(spec)


def resolve_device(device: str = "auto") -> torch.device:
    """Turn ``auto|cpu|cuda`` into a device, refusing ``cuda`` where no GPU is visible."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but PyTorch sees no CUDA GPU; use --device cpu or auto")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"unknown device {device!r}; choose auto, cpu or cuda")
    return torch.device(device)
