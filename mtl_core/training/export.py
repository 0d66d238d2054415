"""ONNX export of model files: a self-contained ``.onnx`` with the spec in its metadata, optionally int8.

An exported file names its outputs ``main`` and ``aux_<name>`` and carries the same JSON spec in its
metadata (key ``mtl_spec``). (The Deepness QGIS plugin needs another file:
:mod:`mtl_core.training.deepness`.) An export can be quantised to int8 (static, calibrated on real tiles of a raster);
its input and outputs stay float32, so it runs through the engine's ONNX runner
(:class:`mtl_core.engine.runtime.OnnxRunner`) like the float export.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..engine.runtime import DIVISOR_KEY
from ..errors import RasterError
from ..io.fileio import atomic_path
from ..modelfile import SPEC_KEY
from ..spec import ModelSpec


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
    from ..engine.inputs import check_input, read_input
    from ..io.raster import open_raster, padded_size
    from ..norm import normalise

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
    modality; batch, height and width are dynamic. The spec goes in the metadata.
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

    from ..modelfile import load_model

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
        meta = {SPEC_KEY: json.dumps(spec_dict), DIVISOR_KEY: str(model.divisor)}
        del proto.metadata_props[:]
        for k, v in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v
        onnx.save(proto, str(tmp))
    return out
