"""The runtime: PyTorch or ONNX Runtime behind one call (export lives in :mod:`mtl_core.training.export`).

A runner takes normalised input tiles ``(B, C, H, W)`` float32 (numpy) with H and W divisible by
:attr:`Runner.divisor` and returns ``(main, {aux name: reconstruction})`` as numpy arrays. Only the
PyTorch runner imports torch, so the ONNX path works where PyTorch is not installed (as in a plain
QGIS). An exported ``.onnx`` file is a complete model file: its outputs are named ``main`` and
``aux_<name>`` and its metadata holds the JSON spec (key ``mtl_spec``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from ..errors import ConfigError, ModelFileError
from ..modelfile import SPEC_KEY, parse_spec, read_spec as read_safetensors_spec
from ..spec import ModelSpec

Backend = Literal["auto", "torch", "onnx"]
DIVISOR_KEY = "mtl_divisor"


class Runner(Protocol):
    divisor: int
    device: str

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]: ...


def has_torch() -> bool:
    """Whether PyTorch and segmentation-models-pytorch can be imported."""
    try:
        import segmentation_models_pytorch  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def is_onnx(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() == ".onnx"


def _onnx_session(path: Path, threads: int | None = None, device: str = "cpu"):
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ModelFileError(
            f"{path.name!r} is an ONNX model, which needs onnxruntime: pip install onnxruntime"
        ) from exc
    if not path.exists():
        raise ModelFileError(f"model file {str(path)!r} does not exist; check the path")
    options = ort.SessionOptions()
    # Idle pool threads sleep instead of spinning: the engine's reader and writer threads then get the
    # core, where a spinning thread would hold it while its partner waits (measured: a few per cent
    # faster end to end on 2 cores; the bare forward pass is within 1 %).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    providers = ["CPUExecutionProvider"]
    if device in ("cuda", "auto") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    elif device == "cuda":
        raise ConfigError("device 'cuda' was asked for but onnxruntime has no CUDA provider; use --device cpu")
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable files
        raise ModelFileError(f"{path.name!r} is not a readable ONNX model ({exc})") from exc


def _onnx_spec(session, path: Path) -> tuple[ModelSpec, int]:
    meta = session.get_modelmeta().custom_metadata_map
    if SPEC_KEY not in meta:
        raise ModelFileError(f"{path.name!r} is an ONNX model but not an MTL Explain one (no {SPEC_KEY!r} metadata)")
    spec = parse_spec(meta[SPEC_KEY], path)
    if "deepness" in spec.training:
        raise ModelFileError(f"{path.name!r} is the Deepness plugin's flavour of {spec.name!r} (main head only); "
                             "open it in Deepness, and give MTL Explain the complete export ('mtl export MODEL "
                             "--onnx OUT.onnx') or the .safetensors model file")
    again = "export it again with 'mtl export MODEL --onnx OUT.onnx'"
    inputs = session.get_inputs()
    shape = inputs[0].shape if len(inputs) == 1 else []
    if [i.name for i in inputs] != ["input"] or len(shape) != 4 or (
            isinstance(shape[1], int) and shape[1] != spec.in_channels):
        found = ", ".join(f"{i.name} {list(i.shape)}" for i in inputs)
        raise ModelFileError(f"{path.name!r} takes {found}; its spec needs one input named 'input' of shape "
                             f"(batch, {spec.in_channels}, height, width): {again}")
    expected = output_channels(spec)
    outputs = {o.name: o.shape for o in session.get_outputs()}
    missing = sorted(set(expected) - set(outputs))
    if missing:
        raise ModelFileError(f"{path.name!r} lacks the output(s) {missing} its spec promises; {again}")
    for name, channels in expected.items():
        declared = outputs[name][1] if len(outputs[name]) > 1 else None
        if isinstance(declared, int) and declared != channels:
            raise ModelFileError(f"{path.name!r}: output {name!r} has {declared} channels but its spec promises "
                                 f"{channels}; {again}")
    try:
        divisor = int(meta.get(DIVISOR_KEY, 32))
    except ValueError:
        divisor = 0
    if not 1 <= divisor <= 1024:
        raise ModelFileError(f"{path.name!r}: its input-size divisor {meta.get(DIVISOR_KEY)!r} is not a whole number "
                             f"between 1 and 1024; {again}")
    return spec, divisor


def output_channels(spec: ModelSpec) -> dict[str, int]:
    """Channels of each output a model of this spec answers: ``main`` and ``aux_<name>``."""
    return {"main": spec.out_channels, **{f"aux_{m.name}": len(m.bands) for m in spec.aux}}


def int8_twin(path: str | os.PathLike) -> Path | None:
    """The int8 export beside a float ONNX model file (``X.mtl.onnx`` -> ``X.int8.mtl.onnx``, ``X.onnx`` ->
    ``X.int8.onnx``), when there is one: the "fast" choice of the panel and Processing."""
    path = Path(path)
    if not is_onnx(path) or ".int8." in path.name:
        return None
    stem = path.name[:-len(".mtl.onnx")] if path.name.endswith(".mtl.onnx") else path.stem
    twin = path.with_name(stem + (".int8.mtl.onnx" if path.name.endswith(".mtl.onnx") else ".int8.onnx"))
    return twin if twin.is_file() else None


def read_spec(path: str | os.PathLike) -> ModelSpec:
    """The spec of any model file: ``.onnx`` or safetensors."""
    path = Path(path)
    if is_onnx(path):
        return _onnx_spec(_onnx_session(path), path)[0]
    return read_safetensors_spec(path)


class OnnxRunner:
    """ONNX Runtime session over an exported model."""

    def __init__(self, path: Path, device: str = "cpu", threads: int | None = None) -> None:
        self.session = _onnx_session(path, threads, device)
        self.spec, self.divisor = _onnx_spec(self.session, path)
        self.device = "cuda" if "CUDAExecutionProvider" in self.session.get_providers() else "cpu"
        self.aux_names = [m.name for m in self.spec.aux]
        self.path, self.expected = path, output_channels(self.spec)

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        names = ["main"] + [f"aux_{n}" for n in self.aux_names]
        try:
            outs = self.session.run(names, {"input": x})
        except Exception as exc:  # onnxruntime's own types: a graph that cannot take this tile
            raise ModelFileError(f"{self.path.name!r} failed on a tile of shape {x.shape} ({str(exc)[:200]}); the "
                                 "file is damaged or not an MTL Explain export: export it again") from exc
        classification = self.spec.task == "classification"
        for name, out in zip(names, outs):
            want = (x.shape[0], self.expected[name]) + (() if classification and name == "main" else x.shape[2:])
            if out.shape != want:
                raise ModelFileError(f"{self.path.name!r}: output {name!r} has shape {out.shape} for a tile of shape "
                                     f"{x.shape}, where its spec promises {want}; export it again")
        # The arrays are views of ONNX Runtime's own buffers; copies free them at once, so the engine
        # holding a few batches does not make the runtime's memory arena grow (measured: -20 to 30 MiB).
        outs = [o.copy() for o in outs]
        return outs[0], dict(zip(self.aux_names, outs[1:]))


class TorchRunner:
    """A PyTorch model on CPU or CUDA."""

    def __init__(self, path: Path, device: str = "auto", threads: int | None = None) -> None:
        import torch

        from ..model import resolve_device
        from ..modelfile import load_model

        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        dev = resolve_device(device)
        self.spec, self.model = load_model(path, dev)
        self.divisor, self.device, self._dev = self.model.divisor, str(dev), dev

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        with self._torch.inference_mode():
            out = self.model(self._torch.from_numpy(x).to(self._dev))
            return out["main"].float().cpu().numpy(), {k: v.float().cpu().numpy() for k, v in out["aux"].items()}


def open_runner(
    path: str | os.PathLike, backend: Backend = "auto", device: str = "auto", threads: int | None = None
) -> tuple[ModelSpec, Runner]:
    """Open a model file with a backend; ``auto`` takes ONNX Runtime for ``.onnx`` files or without torch."""
    path = Path(path)
    if backend not in ("auto", "torch", "onnx"):
        raise ConfigError(f"unknown backend {backend!r}; choose auto, torch or onnx")
    if backend == "auto":
        backend = "onnx" if is_onnx(path) or not has_torch() else "torch"
    if backend == "onnx":
        if not is_onnx(path):
            raise ConfigError(
                f"{path.name!r} is a PyTorch model file; ONNX Runtime needs an .onnx export "
                "('mtl export MODEL --onnx OUT.onnx'), or use the torch backend"
            )
        runner = OnnxRunner(path, device, threads)
        return runner.spec, runner
    if is_onnx(path):
        raise ConfigError(f"{path.name!r} is an ONNX model; run it with the onnx backend (or auto)")
    if not has_torch():
        raise ConfigError("the torch backend needs PyTorch and segmentation-models-pytorch; install them "
                          "(pip install torch segmentation-models-pytorch) or export the model to ONNX")
    runner = TorchRunner(path, device, threads)
    return runner.spec, runner
