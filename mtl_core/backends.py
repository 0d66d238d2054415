"""Inference backends: PyTorch or ONNX Runtime behind one call, and ONNX export of model files.

A runner takes normalised input tiles ``(B, C, H, W)`` float32 (numpy) with H and W divisible by
:attr:`Runner.divisor` and returns ``(main, {aux name: reconstruction})`` as numpy arrays. Only the
PyTorch runner imports torch, so the ONNX path works where PyTorch is not installed (as in a plain
QGIS). An exported ``.onnx`` file is a complete model file: it names its outputs ``main`` and
``aux_<name>`` and carries the same JSON spec in its metadata (key ``mtl_spec``), plus the metadata keys
of the Deepness QGIS plugin so that plugin can run its main head too. An export can be quantised to
int8 (static, calibrated on real tiles of a raster); its input and outputs stay float32, so it runs
through the same :class:`OnnxRunner`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from .errors import ConfigError, ModelFileError, RasterError
from .fileio import atomic_path
from .modelfile import SPEC_KEY, parse_spec, read_spec as read_safetensors_spec
from .spec import ModelSpec

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
    outputs = {o.name for o in session.get_outputs()}
    missing = {"main"} | {f"aux_{m.name}" for m in spec.aux}
    missing -= outputs
    if missing:
        raise ModelFileError(
            f"{path.name!r} lacks the output(s) {sorted(missing)} its spec promises; export it again with "
            "'mtl export MODEL --onnx OUT.onnx'"
        )
    return spec, int(meta.get(DIVISOR_KEY, 32))


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

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        outs = self.session.run(["main"] + [f"aux_{n}" for n in self.aux_names], {"input": x})
        # The arrays are views of ONNX Runtime's own buffers; copies free them at once, so the engine
        # holding a few batches does not make the runtime's memory arena grow (measured: -20 to 30 MiB).
        outs = [o.copy() for o in outs]
        return outs[0], dict(zip(self.aux_names, outs[1:]))


class TorchRunner:
    """A PyTorch model on CPU or CUDA."""

    def __init__(self, path: Path, device: str = "auto", threads: int | None = None) -> None:
        import torch

        from .model import resolve_device
        from .modelfile import load_model

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


def deepness_metadata(spec: ModelSpec, tile: int, overlap_percent: int = 15) -> dict[str, str]:
    """Metadata keys the Deepness QGIS plugin reads, so it can run the main head of our exports."""
    meta = {
        "model_type": json.dumps("Segmentor" if spec.task == "segmentation" else
                                 "Regressor" if spec.task == "regression" else "Segmentor"),
        "tiles_size": json.dumps(tile),
        "tiles_overlap": json.dumps(overlap_percent),
        "standardization_mean": json.dumps([b.mean for b in spec.input_bands]),
        "standardization_std": json.dumps([b.std for b in spec.input_bands]),
    }
    if spec.classes:
        meta["class_names"] = json.dumps({str(i): c.name for i, c in enumerate(spec.classes)})
    resolution = spec.training.get("data", {}).get("resolution_cm")
    if resolution:
        meta["resolution"] = json.dumps(resolution)
    return meta


def calibration_tiles(
    spec: ModelSpec,
    raster: str | os.PathLike,
    divisor: int,
    count: int = 32,
    bands: list[int] | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Real input tiles for int8 calibration, read and normalised exactly as the engine reads them.

    Tiles are squares of the engine's default tile size (max(256, patch size), a multiple of
    ``divisor``), smaller if the raster is, at seeded random positions; only tiles whose pixels are
    all valid are kept, so padding and nodata do not stretch the activation ranges.

    Args:
        spec: the model's spec (input bands, their order and normalisation).
        raster: raster holding the model's input bands.
        divisor: the network's input-size divisor.
        count: tiles wanted.
        bands: 1-based raster band feeding each model input band (default: as :func:`inference.band_mapping`).
        seed: seed of the tile positions.

    Returns:
        ``(N, C, T, T)`` float32, 1 <= N <= count.

    Raises:
        RasterError: the raster cannot feed the model, is smaller than ``divisor`` or has no wholly
            valid tile.
    """
    from .inference import check_input, read_input
    from .norm import normalise
    from .raster import open_raster, padded_size

    ds = open_raster(raster, "calibration raster")
    try:
        mapping = check_input(spec, ds, bands)
    except RasterError as exc:
        raise RasterError(f"calibration raster {str(raster)!r}: {exc}") from exc
    width, height = ds.RasterXSize, ds.RasterYSize
    tile = min(padded_size(max(256, spec.patch_size), divisor), min(width, height) // divisor * divisor)
    if tile == 0:
        raise RasterError(f"calibration raster {str(raster)!r} is {width} x {height} px, smaller than the model's "
                          f"{divisor} px input step; give a larger raster")
    rng = np.random.default_rng(seed)
    tiles, tries = [], 20 * count
    for _ in range(tries):
        x, y = int(rng.integers(width - tile + 1)), int(rng.integers(height - tile + 1))
        data, valid = read_input(ds, spec, mapping, (x, y, tile, tile))
        if valid.all():
            tiles.append(normalise(data, valid, spec.input_bands))
            if len(tiles) == count:
                break
    if not tiles:
        raise RasterError(
            f"none of {tries} random {tile} x {tile} px tiles of the calibration raster {str(raster)!r} is wholly "
            "valid (nodata everywhere?); give a raster, or a crop of one, where the model's input bands hold data"
        )
    return np.stack(tiles)


def _quantize_int8(path: Path, tiles: np.ndarray) -> None:
    """Quantise the ONNX model at ``path`` in place: static int8 QDQ, calibrated on ``tiles`` (N, C, H, W)."""
    import tempfile

    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    class _Tiles(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(tiles)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.items, None)
            return None if x is None else {"input": x[None]}

    with tempfile.TemporaryDirectory(prefix="mtl-quant.") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(path), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(path), _Tiles(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def export_onnx(
    model_path: str | os.PathLike,
    out: str | os.PathLike,
    opset: int = 17,
    calibration: str | os.PathLike | None = None,
    bands: list[int] | None = None,
    calibration_count: int = 32,
) -> Path:
    """Export a safetensors model file to a self-contained ONNX model file, optionally int8-quantised.

    Outputs are ``main`` (logits, or values for regression) and ``aux_<name>`` per reconstructed
    modality; batch, height and width are dynamic. The spec and Deepness's keys go in the metadata.
    With ``calibration``, the model is quantised to int8 (ONNX Runtime static quantisation, QDQ
    format: per-channel int8 weights, uint8 activations) with activation ranges measured on real
    tiles of that raster (:func:`calibration_tiles`), and the spec records it under
    ``training.quantization``. Input and outputs stay float32, so :class:`OnnxRunner` runs it as it runs
    the float export.

    Args:
        model_path: safetensors model file.
        out: ONNX file to write; nothing is left there if the export fails.
        opset: ONNX opset.
        calibration: raster holding the model's input bands; quantise to int8 when given.
        bands: 1-based band of ``calibration`` feeding each model input band (default: by description).
        calibration_count: calibration tiles to read.

    Raises:
        RasterError: the calibration raster cannot feed the model.
        OutputError: ``out`` cannot be written.
    """
    import onnx
    import torch

    from .modelfile import load_model

    spec, model = load_model(model_path, "cpu")
    names = [m.name for m in spec.aux]
    spec_dict = spec.to_dict()
    tiles = None
    if calibration is not None:  # read first: a raster that cannot feed the model fails before the export
        tiles = calibration_tiles(spec, calibration, model.divisor, calibration_count, bands)
        import onnxruntime

        spec_dict["training"]["quantization"] = {
            "dtype": "int8",
            "method": "ONNX Runtime static quantisation, QDQ, per-channel int8 weights, uint8 activations, "
                      "min-max calibration",
            "onnxruntime": onnxruntime.__version__,
            "calibration": {"raster": Path(calibration).name, "tiles": int(tiles.shape[0]),
                            "tile_size": int(tiles.shape[-1])},
        }

    class _Heads(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            out = self.model(x)
            return (out["main"],) + tuple(out["aux"][n] for n in names)

    size = max(spec.patch_size, 2 * model.divisor)
    x = torch.zeros(1, spec.in_channels, size, size)
    dynamic = {"input": {0: "batch", 2: "height", 3: "width"}}
    outputs = ["main"] + [f"aux_{n}" for n in names]
    for o in outputs:
        per_patch = o == "main" and spec.task == "classification"
        dynamic[o] = {0: "batch"} if per_patch else {0: "batch", 2: "height", 3: "width"}
    out = Path(out)
    with atomic_path(out) as tmp:
        torch.onnx.export(_Heads().eval(), (x,), str(tmp), input_names=["input"], output_names=outputs,
                          dynamic_axes=dynamic, opset_version=opset, dynamo=False)
        if tiles is not None:
            _quantize_int8(tmp, tiles)
        proto = onnx.load(str(tmp))  # quantisation keeps or drops metadata unpredictably: set it here
        meta = {SPEC_KEY: json.dumps(spec_dict), DIVISOR_KEY: str(model.divisor),
                **deepness_metadata(spec, max(256, spec.patch_size))}
        del proto.metadata_props[:]
        for k, v in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v
        onnx.save(proto, str(tmp))
    return out
