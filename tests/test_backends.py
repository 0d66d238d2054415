"""ONNX export and the ONNX Runtime backend: parity with PyTorch, a complete model file, clear errors."""

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from osgeo import gdal

from mtl_core.backends import OnnxRunner, TorchRunner, export_onnx, open_runner, read_spec
from mtl_core.errors import ConfigError, ModelFileError
from mtl_core.inference import PredictOptions, predict
from mtl_core.spec import FORMAT_VERSION

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(trained_model, tmp_path_factory):
    path, _ = trained_model
    onnx_path = tmp_path_factory.mktemp("onnx") / "crop.onnx"
    export_onnx(path, onnx_path)
    return path, onnx_path


def test_export_round_trip_keeps_the_spec_and_the_outputs(exported, crop_dir):
    path, onnx_path = exported
    assert read_spec(onnx_path).to_dict() == read_spec(path).to_dict()
    torch_runner, ort_runner = TorchRunner(path, "cpu"), OnnxRunner(onnx_path)
    assert ort_runner.divisor == torch_runner.divisor
    ds = gdal.Open(str(crop_dir / "raleigh_vnir.tif"))
    x = ((ds.ReadAsArray(0, 0, 96, 64) - 70.0) / 15.0).astype(np.float32)[None].repeat(2, 0)
    main_t, aux_t = torch_runner(x)
    main_o, aux_o = ort_runner(x)
    np.testing.assert_allclose(main_o, main_t, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(aux_o["swir"], aux_t["swir"], atol=1e-4, rtol=1e-4)
    meta = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert json.loads(meta["model_type"]) == "Segmentor"
    assert len(json.loads(meta["standardization_mean"])) == 4
    assert json.loads(meta["class_names"])["0"] == "developed"


def test_engine_gives_the_same_products_with_either_backend(exported, crop_dir, tmp_path):
    path, onnx_path = exported
    results = {}
    for backend, model in (("torch", path), ("onnx", onnx_path)):
        out = tmp_path / backend
        out.mkdir()
        opts = PredictOptions(tile=64, overlap=16, backend=backend,
                              products=("main", "confidence", "entropy", "aux", "sensitivity"))
        results[backend] = predict(model, crop_dir / "raleigh_vnir.tif", out, opts)
    t, o = results["torch"], results["onnx"]
    assert set(t.outputs) == set(o.outputs)
    for key in t.outputs:
        a, b = gdal.Open(str(t.outputs[key])), gdal.Open(str(o.outputs[key]))
        assert a.GetGeoTransform() == b.GetGeoTransform() and a.GetProjection() == b.GetProjection()
        if key == "main":
            np.testing.assert_array_equal(a.ReadAsArray(), b.ReadAsArray())  # the same class map
        else:  # float32 kernels differ in summation order: 1e-3 of the values' scale
            np.testing.assert_allclose(b.ReadAsArray(), a.ReadAsArray(), atol=1e-3, rtol=1e-3)


def test_backend_choice_and_mismatches(exported):
    path, onnx_path = exported
    assert isinstance(open_runner(onnx_path)[1], OnnxRunner)
    assert isinstance(open_runner(path)[1], TorchRunner)
    with pytest.raises(ConfigError, match="ONNX Runtime needs an .onnx export"):
        open_runner(path, "onnx")
    with pytest.raises(ConfigError, match="run it with the onnx backend"):
        open_runner(onnx_path, "torch")


def _edit(onnx_path, out, spec_changes=None, drop_output=None):
    proto = onnx.load(str(onnx_path))
    for p in proto.metadata_props:
        if p.key == "mtl_spec" and spec_changes:
            p.value = json.dumps({**json.loads(p.value), **spec_changes})
    if drop_output:
        keep = [o for o in proto.graph.output if o.name != drop_output]
        del proto.graph.output[:]
        proto.graph.output.extend(keep)
    onnx.save(proto, str(out))
    return out


def test_newer_format_and_missing_output_are_clear_errors(exported, tmp_path):
    _, onnx_path = exported
    newer = _edit(onnx_path, tmp_path / "newer.onnx", {"format_version": FORMAT_VERSION + 1})
    with pytest.raises(ModelFileError, match="newer than this MTL Explain understands"):
        read_spec(newer)
    partial = _edit(onnx_path, tmp_path / "partial.onnx", drop_output="aux_swir")
    with pytest.raises(ModelFileError, match=r"lacks the output\(s\) \['aux_swir'\]"):
        OnnxRunner(partial)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="not a readable ONNX model"):
        read_spec(junk)


def test_prediction_runs_where_torch_cannot_be_imported(exported, crop_dir, tmp_path):
    """A Python that cannot import torch (as in a plain QGIS) still predicts with the ONNX model."""
    _, onnx_path = exported
    code = (
        "import sys, builtins\n"
        "real = builtins.__import__\n"
        "def blocked(name, *a, **k):\n"
        "    if name.split('.')[0] in ('torch', 'segmentation_models_pytorch', 'torchvision'):\n"
        "        raise ImportError('blocked: ' + name)\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = blocked\n"
        "from mtl_core.inference import predict, PredictOptions\n"
        "r = predict(sys.argv[1], sys.argv[2], sys.argv[3], PredictOptions(products=('main', 'aux', 'sensitivity')))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print(sorted(r.outputs))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(onnx_path), str(crop_dir / "raleigh_vnir.tif"),
                           str(tmp_path)], capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "'main'" in done.stdout and "'aux_swir'" in done.stdout and "'sensitivity'" in done.stdout
