"""A second export for the Deepness QGIS plugin (0.6.5): the main head alone, as Deepness runs a model.

Our own ``.onnx`` stays complete (main and reconstruction heads, dynamic tile size, the spec): the engine,
the panel and ``mtl explain`` need all of it. Deepness cannot use that file: it takes one class list per
model output, a fixed tile size from the input shape, pixels divided by 255 before its standardisation,
and a probability threshold. So ``mtl export --deepness`` writes a second file from the first, by editing
the ONNX graph (no PyTorch needed):

* one output, ``probabilities``: softmax of the main logits (segmentation), or the value in the
  target's units (regression);
* input ``[batch, bands, T, T]`` with T the engine's default tile (max(256, patch size)); input pixels equal
  to the model's input nodata become the training mean, as in the engine (Deepness does not mask nodata);
* Deepness's metadata: ``model_type``, ``class_names`` (one mapping, in the model's class order),
  ``resolution`` (cm per pixel), ``tile_size``, ``tiles_overlap`` (percent, the engine's tile / 8),
  ``standardization_mean/std`` (our per-band mean and std divided by 255, because Deepness divides the
  pixels by 255 first: (x / 255 - m / 255) / (s / 255) = (x - m) / s, exactly our normalisation),
  ``seg_thresh`` 0 (plain arg-max, as ours; Deepness's default 0.5 would zero every class below 0.5) and
  ``seg_small_segment`` 0 (no dilate/erode of the class map);
* our spec under ``mtl_spec`` too, so ``mtl info`` reads it.

Deepness writes class index + 1: our class values when they are 1..C in order (the sample's are).
Patch classification has no Deepness counterpart and is refused.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ..engine.runtime import DIVISOR_KEY, read_spec
from ..errors import ConfigError
from ..io.fileio import atomic_path
from ..modelfile import SPEC_KEY
from ..spec import ModelSpec


def resolution_cm(spec: ModelSpec, given: float | None) -> float:
    """The model's pixel size in cm: given, else recorded at training (``training.data.pixel_size_m``)."""
    if given is not None:
        if not given > 0:
            raise ConfigError(f"--resolution {given} must be a pixel size in cm above 0, e.g. 3000 for 30 m")
        return float(given)
    metres = spec.training.get("data", {}).get("pixel_size_m")
    if not metres:
        raise ConfigError("the model file does not record its pixel size (trained by an earlier version, or on a "
                          "raster in degrees); give it with --resolution CM, e.g. --resolution 2850 for 28.5 m")
    return round(float(metres) * 100, 3)


def deepness_metadata(spec: ModelSpec, tile: int, resolution: float) -> dict[str, str]:
    """Deepness's metadata keys (each a JSON text) for a model of ``spec`` on ``tile`` px tiles."""
    meta = {
        "model_type": json.dumps("Segmentor" if spec.task == "segmentation" else "Regressor"),
        "resolution": json.dumps(resolution),
        "tile_size": json.dumps(tile),
        "tiles_overlap": json.dumps(round(100 * (tile // 8) / tile)),
        "standardization_mean": json.dumps([b.mean / 255 for b in spec.input_bands]),
        "standardization_std": json.dumps([b.std / 255 for b in spec.input_bands]),
    }
    if spec.task == "segmentation":
        meta["class_names"] = json.dumps({str(i): c.name for i, c in enumerate(spec.classes)})
        meta["seg_thresh"] = json.dumps(0.0)
        meta["seg_small_segment"] = json.dumps(0)  # no dilate/erode of the class map: ours has none
    else:
        meta["reg_output_scaling"] = json.dumps(1.0)
    return meta


def export_deepness(model_path: str | os.PathLike, out: str | os.PathLike, resolution: float | None = None,
                    opset: int = 17) -> Path:
    """Write the Deepness flavour of a model file (``.onnx`` export or ``.safetensors``) to ``out``.

    Args:
        model_path: our ``.onnx`` export, or a ``.safetensors`` model file (exported first; needs PyTorch).
        out: file to write; nothing is left there if the export fails.
        resolution: pixel size in cm per pixel; default the one recorded at training.
        opset: ONNX opset of the export from ``.safetensors``.

    Raises:
        ConfigError: a patch-classification model, or no known pixel size.
        OutputError: ``out`` cannot be written.
    """
    import onnx
    from onnx import helper

    spec = read_spec(model_path)
    if spec.task == "classification":
        raise ConfigError("Deepness has no counterpart of patch classification (one class per patch); "
                          "--deepness exports segmentation and regression models")
    cm = resolution_cm(spec, resolution)
    with tempfile.TemporaryDirectory(prefix="mtl-deepness.") as tmp:
        source = Path(model_path)
        if source.suffix.lower() != ".onnx":
            from .export import export_onnx

            source = export_onnx(model_path, Path(tmp) / "full.onnx", opset=opset)
        proto = onnx.load(str(source))
    meta = {p.key: p.value for p in proto.metadata_props}
    divisor = int(meta.get(DIVISOR_KEY, "32"))
    tile = -(-max(256, spec.patch_size) // divisor) * divisor
    graph = proto.graph
    (main,) = [o for o in graph.output if o.name == "main"]
    if spec.task == "segmentation":
        graph.node.append(helper.make_node("Softmax", ["main"], ["probabilities"], axis=1))
    else:  # the normalised value back in the target's units
        mean = helper.make_tensor("target_mean", onnx.TensorProto.FLOAT, [], [spec.target.mean])
        std = helper.make_tensor("target_std", onnx.TensorProto.FLOAT, [], [spec.target.std])
        graph.initializer.extend([mean, std])
        graph.node.append(helper.make_node("Mul", ["main", "target_std"], ["scaled"]))
        graph.node.append(helper.make_node("Add", ["scaled", "target_mean"], ["probabilities"]))
    channels = main.type.tensor_type.shape.dim[1].dim_value
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT,
                                                      ["batch", channels, tile, tile]))
    dims = graph.input[0].type.tensor_type.shape.dim
    for d in (dims[2], dims[3]):
        d.ClearField("dim_param")
        d.dim_value = tile
    if spec.input_nodata is not None:
        _fill_nodata(proto, spec)
    proto = _without_unused_nodes(proto)
    spec_dict = spec.to_dict()
    spec_dict["training"]["deepness"] = {"tile": tile, "resolution_cm": cm, "outputs": ["probabilities"]}
    del proto.metadata_props[:]
    for k, v in {SPEC_KEY: json.dumps(spec_dict), DIVISOR_KEY: str(divisor),
                 **deepness_metadata(spec, tile, cm)}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(proto)
    out = Path(out)
    with atomic_path(out) as tmp_path:
        onnx.save(proto, str(tmp_path))
    return out


def _fill_nodata(proto, spec: ModelSpec) -> None:
    """Nodata input pixels as the training mean (0 once standardised), as the engine fills them: Deepness feeds
    them to the network as they are, and a -99999 would wreck every prediction within its receptive field."""
    import numpy as np
    from onnx import helper, numpy_helper

    graph = proto.graph
    name = graph.input[0].name
    nodata = np.float64(spec.input_nodata)
    shape = (1, spec.in_channels, 1, 1)
    if np.isnan(nodata):
        nodes = [helper.make_node("IsNaN", [name], ["nodata_hit"])]
        consts = []
    else:  # where Deepness's (x / 255 - m / 255) / (s / 255) put the nodata value, to float32 rounding
        at = np.array([(nodata - b.mean) / b.std for b in spec.input_bands], np.float32).reshape(shape)
        consts = [numpy_helper.from_array(at, "nodata_at"),
                  numpy_helper.from_array((np.abs(at) * 1e-3 + 1e-3).astype(np.float32), "nodata_tol")]
        nodes = [helper.make_node("Sub", [name, "nodata_at"], ["nodata_off"]),
                 helper.make_node("Abs", ["nodata_off"], ["nodata_dist"]),
                 helper.make_node("Less", ["nodata_dist", "nodata_tol"], ["nodata_hit"])]
    consts.append(numpy_helper.from_array(np.zeros(shape, np.float32), "nodata_fill"))
    nodes.append(helper.make_node("Where", ["nodata_hit", "nodata_fill", name], ["input_filled"]))
    for node in graph.node:
        for i, x in enumerate(node.input):
            if x == name:
                node.input[i] = "input_filled"
    graph.initializer.extend(consts)
    for node in reversed(nodes):
        graph.node.insert(0, node)


def _without_unused_nodes(proto):
    """Drop the nodes (the reconstruction heads) and initialisers no output needs any more."""
    graph = proto.graph
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    del graph.node[:]
    graph.node.extend(reversed(keep))
    used = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(used)
    return proto
