"""Reading and writing model files: safetensors weights with the JSON spec in the header.

A model file is a plain `safetensors <https://github.com/huggingface/safetensors>`_ file: tensors
plus a string metadata map in which ``mtl_spec`` holds the :class:`~mtl_core.spec.ModelSpec` as
JSON. Nothing is ever unpickled: PyTorch ``.pt`` checkpoints and raw pickles are refused before any
byte of them is interpreted.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ModelFileError
from .io.fileio import atomic_path, write_error
from .spec import ModelSpec

if TYPE_CHECKING:
    import torch

    from .model import MultiTaskModel

SPEC_KEY = "mtl_spec"
_MAX_HEADER = 100 * 1024 * 1024


def _read_header(path: Path) -> dict:
    """Parse the safetensors header by hand, so foreign files fail with a clear message."""
    if not path.exists():
        raise ModelFileError(f"model file {str(path)!r} does not exist; check the path")
    if path.is_dir():
        raise ModelFileError(f"{str(path)!r} is a folder; pass the model file inside it")
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(9)
        safetensors_like = len(head) == 9 and head[8:9] == b"{"  # 8-byte length, then the JSON header
        if head[:2] == b"PK":
            raise ModelFileError(
                f"{path.name!r} is a PyTorch zip checkpoint, which holds pickled Python objects; MTL Explain "
                "never unpickles files. Use a model file written by 'mtl train' (safetensors with a JSON spec)"
            )
        if head[:1] == b"\x80" and not safetensors_like:  # pickle protocol 2+ opens with 0x80
            raise ModelFileError(
                f"{path.name!r} is a Python pickle; MTL Explain never unpickles files. "
                "Use a model file written by 'mtl train'"
            )
        if len(head) < 9:
            raise ModelFileError(f"{path.name!r} is empty or truncated ({size} bytes); it is not a model file")
        (n,) = struct.unpack("<Q", head[:8])
        f.seek(8)
        if n > _MAX_HEADER or n > size - 8:
            raise ModelFileError(f"{path.name!r} is not an MTL Explain model file (or it is truncated)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:  # nested too deep: RecursionError
            raise ModelFileError(f"{path.name!r} is not an MTL Explain model file ({str(exc)[:200]})") from exc
    if not isinstance(header, dict):
        raise ModelFileError(f"{path.name!r} is not an MTL Explain model file")
    try:
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ModelFileError(f"{path.name!r} has a damaged header (tensor offsets missing or not numbers); it is "
                             "not a usable model file") from exc
    if ends and max(ends) > size - 8 - n:
        raise ModelFileError(f"{path.name!r} is truncated: its tensors end past the end of the file; copy it again")
    return header


def read_spec(path: str | os.PathLike) -> ModelSpec:
    """Read only the spec of a model file (cheap: the weights are not loaded)."""
    path = Path(path)
    meta = _read_header(path).get("__metadata__") or {}
    if SPEC_KEY not in meta:
        raise ModelFileError(
            f"{path.name!r} is a safetensors file but not an MTL Explain model (no {SPEC_KEY!r} metadata)"
        )
    return parse_spec(meta[SPEC_KEY], path)


def parse_spec(text: str, path: Path) -> ModelSpec:
    """The spec stored as JSON text in a model file (safetensors metadata or ONNX metadata).

    Raises:
        ModelFileError: the text is not JSON (or nested too deep), or not a valid spec.
    """
    try:
        spec_dict = json.loads(text)
    except (json.JSONDecodeError, TypeError, RecursionError) as exc:
        raise ModelFileError(f"the spec in {path.name!r} is not valid JSON text ({str(exc)[:200]})") from exc
    return ModelSpec.from_dict(spec_dict)


def save_model(
    path: str | os.PathLike, spec: ModelSpec, state_dict: dict[str, torch.Tensor], half: bool = False
) -> Path:
    """Write weights and spec atomically (temporary file, then rename).

    Args:
        path: destination file (by convention ``*.mtl.safetensors``).
        spec: the model's spec; validated before anything is written.
        state_dict: the model's weights.
        half: store floating-point weights as float16 (half the size; loaded back as float32).
    """
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    spec.validate()
    path = Path(path)
    tensors = {}
    for k, v in state_dict.items():
        v = v.detach().cpu()
        tensors[k] = (v.half() if half and v.is_floating_point() else v).contiguous()
    with atomic_path(path) as tmp:
        try:
            save_file(tensors, str(tmp), metadata={SPEC_KEY: json.dumps(spec.to_dict())})
        except SafetensorError as exc:  # safetensors' own error type for I/O failures (a full disk)
            raise write_error(path, exc) from exc
    return path


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[ModelSpec, MultiTaskModel]:
    """Load a model file into a network in eval mode.

    Raises:
        ModelFileError: the file is not ours, is truncated, is of a newer format version, or its
            weights do not fit the architecture its spec names.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .model import create_model

    spec = read_spec(path)
    try:
        state = load_file(str(path))
    except SafetensorError as exc:
        raise ModelFileError(f"the weights in {Path(path).name!r} cannot be read ({exc}); copy the file again") from exc
    model = create_model(spec)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(
            f"the weights in {Path(path).name!r} do not fit the architecture its spec names: {exc}"
        ) from exc
    return spec, model.to(device).eval()
