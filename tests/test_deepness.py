"""The Deepness flavour of an export (``mtl export --deepness``): what Deepness 0.6.5's code reads from it (its
``ModelBase``/``Segmentor`` read the metadata below and the input/output shapes; its preprocessing divides pixels
by 255 and then standardises), and that running it as Deepness does gives our engine's class map."""

import json

import numpy as np
import onnxruntime as ort
import pytest
from osgeo import gdal

from mtl_core.cli import main
from mtl_core.engine import PredictOptions, predict
from mtl_core.engine.runtime import read_spec
from mtl_core.errors import ConfigError, ModelFileError
from mtl_core.training.deepness import export_deepness
from mtl_core.training.export import export_onnx

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def deepness(trained_model, tmp_path_factory):
    path, _ = trained_model
    folder = tmp_path_factory.mktemp("deepness")
    full = export_onnx(path, folder / "crop.onnx")
    return path, full, export_deepness(full, folder / "crop.deepness.onnx")


def _as_deepness_runs(session, meta, tile_dn):
    """Deepness's preprocessing (values / 255, then its standardisation) and plain arg-max + 1 (threshold 0)."""
    mean = np.array(json.loads(meta["standardization_mean"]), np.float32)[:, None, None]
    std = np.array(json.loads(meta["standardization_std"]), np.float32)[:, None, None]
    x = ((tile_dn.astype(np.float32) / 255.0 - mean) / std)[None]
    (probs,) = session.run(None, {session.get_inputs()[0].name: x})
    return probs[0], probs[0].argmax(0) + 1


def test_the_deepness_file_is_what_deepness_reads(deepness):
    path, _, onnx_path = deepness
    spec = read_spec(path)
    session = ort.InferenceSession(str(onnx_path))
    meta = session.get_modelmeta().custom_metadata_map
    (inp,), outputs = session.get_inputs(), session.get_outputs()
    assert inp.shape[1:] == [4, 256, 256]  # a fixed tile: Deepness takes its tile size from the input shape
    assert [o.shape[1:] for o in outputs] == [[len(spec.classes), 256, 256]]  # one output, one class list
    assert json.loads(meta["model_type"]) == "Segmentor"
    assert json.loads(meta["tile_size"]) == 256 and json.loads(meta["tiles_overlap"]) == 12
    assert json.loads(meta["resolution"]) == pytest.approx(2850.0)  # the sample's 28.5 m pixels, recorded at training
    assert json.loads(meta["class_names"]) == {str(i): c.name for i, c in enumerate(spec.classes)}
    assert json.loads(meta["seg_thresh"]) == 0.0 and json.loads(meta["seg_small_segment"]) == 0
    np.testing.assert_allclose(json.loads(meta["standardization_mean"]), [b.mean / 255 for b in spec.input_bands])
    np.testing.assert_allclose(json.loads(meta["standardization_std"]), [b.std / 255 for b in spec.input_bands])
    assert [c.value for c in spec.classes] == list(range(1, len(spec.classes) + 1))  # Deepness writes index + 1
    with pytest.raises(ModelFileError, match="Deepness plugin's flavour.*give MTL Explain the complete export"):
        read_spec(onnx_path)


def test_run_as_deepness_runs_it_gives_our_class_map(deepness, sample_config, tmp_path):
    path, full, onnx_path = deepness
    scene = sample_config.parent / "raleigh_vnir.tif"
    ds = gdal.Open(str(scene))
    x0, dx, _, y0, _, dy = ds.GetGeoTransform()
    col, row = 100, 120  # a window of valid pixels
    tile = ds.ReadAsArray(col, row, 256, 256)
    session = ort.InferenceSession(str(onnx_path))
    probs, theirs = _as_deepness_runs(session, session.get_modelmeta().custom_metadata_map, tile)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)  # softmax probabilities, not logits
    extent = (x0 + col * dx, y0 + (row + 256) * dy, x0 + (col + 256) * dx, y0 + row * dy)
    result = predict(full, scene, tmp_path, PredictOptions(products=("main",), tile=256, extent=extent))
    ours = gdal.Open(str(result.outputs["main"])).ReadAsArray()
    assert ours.shape == theirs.shape and (ours > 0).all()
    assert (ours == theirs).mean() > 0.999

    # A nodata pixel (the model's input nodata) is filled with the training mean, as the engine does; raw, it
    # would be standardised to about -7000 and wreck every prediction around it.
    holed = tile.copy()
    holed[:, 128, 128] = read_spec(path).input_nodata
    _, with_hole = _as_deepness_runs(session, session.get_modelmeta().custom_metadata_map, holed)
    assert (with_hole == theirs).mean() > 0.99


def test_deepness_export_mistakes_are_one_clear_error(deepness, trained_model, tmp_path, capsys):
    path, full, _ = deepness
    with pytest.raises(ConfigError, match="--resolution 0.0 must be a pixel size in cm above 0"):
        export_deepness(full, tmp_path / "x.onnx", resolution=0.0)
    assert main(["-q", "export", str(path), "--deepness", str(tmp_path / "d.onnx"), "--resolution", "3000"]) == 0
    meta = ort.InferenceSession(str(tmp_path / "d.onnx")).get_modelmeta().custom_metadata_map
    assert json.loads(meta["resolution"]) == 3000.0  # from a .safetensors file too, resolution given
    assert main(["-q", "export", str(full), "--onnx", str(tmp_path / "o.onnx")]) == 2
    assert main(["-q", "export", str(path)]) == 2
    err = capsys.readouterr().err
    assert "'mtl export --onnx' cannot use" in err and "give --onnx FILE" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.onnx"]
