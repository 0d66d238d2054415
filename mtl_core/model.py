"""The multitask network: one shared encoder-decoder, a main head and one head per auxiliary modality.

Every variant is assembled the same way, from a :class:`~mtl_core.spec.ModelSpec`:

* an encoder and decoder from segmentation-models-pytorch (any smp architecture and encoder name,
  built with ``encoder_weights=None``: nothing is downloaded);
* a **main head**: per-pixel class logits (``segmentation``), per-patch class logits pooled from the
  deepest encoder features (``classification``), or one per-pixel value (``regression``);
* one **reconstruction head** per auxiliary modality, per pixel, with as many channels as the
  modality has bands (``mtl`` variant only);
* optionally (``Architecture.spectral_channels``) a **spectral block**: two 1x1 convolutions on the input bands at
  full resolution whose per-pixel features each per-pixel head adds, through a 1x1 convolution of its own, to
  its output. A U-Net's decoder sees the bands only through its stride-2 stem; the block gives the heads each
  pixel's own spectrum, as a per-pixel classifier has it, for a few per cent of the step time (joining the
  features to the decoder's output before the heads' 3x3 convolutions cost 23 %). Every head goes through smp's
  ``initialize_head``.

``forward`` always returns a dict: ``{"main": (B, C, H, W) or (B, C), "aux": {name: (B, K, H, W)}}``.
Inputs must have a height and width divisible by :attr:`MultiTaskModel.divisor`;
:func:`padded_size` gives the size to pad to.
"""

from __future__ import annotations

from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from segmentation_models_pytorch.base import ClassificationHead, SegmentationHead
from segmentation_models_pytorch.base.initialization import initialize_decoder, initialize_head
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
    """A per-pixel head with the same input channels, kernel and upsampling as smp's own head, initialised as smp
    initialises its heads."""
    conv, upsample = template[0], template[1]
    scale = getattr(upsample, "scale_factor", None) or 1
    head = SegmentationHead(conv.in_channels, out_channels, kernel_size=conv.kernel_size[0], upsampling=int(scale))
    initialize_head(head)
    return head


def _projection(in_channels: int, out_channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, 1)
    initialize_head(conv)
    return conv


class SpectralBlock(nn.Sequential):
    """Per-pixel features of the input bands: (B, C, H, W) -> (B, S, H, W) through two 1x1 convolutions, each
    followed by batch norm and ReLU."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__(nn.Conv2d(in_channels, channels, 1, bias=False), nn.BatchNorm2d(channels),
                         nn.ReLU(inplace=True), nn.Conv2d(channels, channels, 1, bias=False),
                         nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        initialize_decoder(self)


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
            initialize_head(self.main_head)
        else:
            self.main_head = base.segmentation_head
        self.aux_heads = nn.ModuleDict({m.name: _head_like(base.segmentation_head, len(m.bands)) for m in spec.aux})
        # the spectral block feeds the per-pixel heads only: a patch classifier without reconstructions has none
        extra = spec.architecture.spectral_channels if spec.task != "classification" or spec.aux else 0
        self.spectral = SpectralBlock(spec.in_channels, extra) if extra else None
        if extra:
            self.spectral_main = _projection(extra, spec.out_channels) if spec.task != "classification" else None
            self.spectral_aux = nn.ModuleDict({m.name: _projection(extra, len(m.bands)) for m in spec.aux})
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
        aux = {name: head(decoded) for name, head in self.aux_heads.items()}
        if self.spectral is not None:
            pixels = self.spectral(x)
            if self.spectral_main is not None:
                main = main + self.spectral_main(pixels)
            aux = {name: out + self.spectral_aux[name](pixels) for name, out in aux.items()}
        return {"main": main, "aux": aux}


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


def load_encoder_weights(model: MultiTaskModel, spec: ModelSpec, source: str) -> None:
    """Start the encoder from pretrained weights: smp's ``imagenet`` weights (downloaded from the Hugging Face
    hub by smp, as safetensors) or a local ``.safetensors`` file holding the encoder's state dict for three input
    bands (keys as smp's encoder names them, with or without an ``encoder.`` prefix). The first convolution is
    adapted to the model's input bands as smp adapts it (the three bands' filters repeated and scaled).

    Raises:
        ConfigError: unknown weights, a file that is not safetensors or does not fit the encoder, or no network.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from segmentation_models_pytorch.encoders import get_encoder

    a = spec.architecture
    covered: set[str] | None = None  # the tensors a local file gave
    if source == "imagenet":
        try:
            encoder = get_encoder(a.encoder, in_channels=3, depth=a.encoder_depth, weights="imagenet")
        except KeyError as exc:
            raise ConfigError(f"smp has no ImageNet weights for the encoder {a.encoder!r} ({exc}); choose another "
                              "encoder or give a local .safetensors weights file") from None
        except OSError as exc:
            raise ConfigError(f"the ImageNet weights of {a.encoder!r} could not be downloaded from the Hugging Face "
                              f"hub ({str(exc)[:200]}); go online, or give a local .safetensors weights file") from None
    else:
        path = Path(source)
        if path.suffix != ".safetensors":
            raise ConfigError(f"encoder weights {source!r}: give 'imagenet' or a .safetensors file (weights are never "
                              "read from pickled .pth/.pt files)")
        if not path.is_file():
            raise ConfigError(f"encoder weights file {source!r} does not exist")
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ConfigError(f"encoder weights file {source!r} cannot be read as safetensors ({exc})") from None
        state = {k.removeprefix("encoder."): v for k, v in state.items()}
        encoder = get_encoder(a.encoder, in_channels=3, depth=a.encoder_depth, weights=None)
        try:
            encoder.load_state_dict(state, strict=False)
        except RuntimeError as exc:
            raise ConfigError(f"encoder weights file {source!r} does not fit the {a.encoder!r} encoder "
                              f"({str(exc).splitlines()[0][:200]})") from None
        covered = set(state)
    encoder.set_in_channels(spec.in_channels, pretrained=True)
    wanted = model.encoder.state_dict()
    given = {k: v for k, v in encoder.state_dict().items() if k in wanted}
    missing = sorted(k for k in wanted if k not in given or (covered is not None and k not in covered))
    if missing:
        raise ConfigError(f"encoder weights {source!r} lack {len(missing)} of the encoder's tensors (e.g. "
                          f"{missing[0]}); they were made for another encoder or depth")
    model.encoder.load_state_dict(given)
