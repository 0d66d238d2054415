"""``mtl explain`` scores each task as itself: patch classification per cell, regression with regression metrics."""

import json

import numpy as np
import pytest
import yaml
from osgeo import gdal

from mtl_core.config import load_config
from mtl_core.engine import PredictOptions, explain, predict
from mtl_core.modelfile import save_model
from mtl_core.norm import cell_majority, class_indices
from mtl_core.spec import ERROR_NODATA, FLOAT_NODATA, Architecture
from mtl_core.training.train import TrainOptions, train

from .rasters import read


def _model(crop_dir, tmp_path, name: str, labels: dict, patch: int = 64):
    raw = yaml.safe_load((crop_dir / "crop.yaml").read_text())
    raw["labels"] = {**raw["labels"], **labels}
    raw["patch_size"] = patch
    for section in ("inputs", "aux"):  # the crop's rasters, from the task's own folder
        for source in raw[section].values():
            source["path"] = str(crop_dir / source["path"])
    raw["labels"]["path"] = str(crop_dir / raw["labels"]["path"])
    config = tmp_path / f"{name}.yaml"
    config.write_text(yaml.safe_dump(raw))
    opts = TrainOptions(steps=4, batch_size=4, eval_every=4, architecture=Architecture(encoder_depth=3))
    result = train(load_config(config), opts, progress=False)
    path = tmp_path / f"{name}.mtl.safetensors"
    save_model(path, result.spec, result.state_dict)
    return path, result.spec


def _explain(model, crop_dir, out):
    out.mkdir()
    return explain(model, crop_dir / "raleigh_vnir.tif", out, PredictOptions(
        aux_truth={"swir": str(crop_dir / "raleigh_swir.tif")}, labels=str(crop_dir / "raleigh_landcover.tif"),
        products=("main", "confidence", "entropy", "aux", "recon_error", "main_error", "error_score", "agreement",
                  "error_probability", "sensitivity")))


@pytest.mark.slow
def test_patch_classification_is_scored_per_cell_against_the_majority_label(crop_dir, tmp_path):
    model, spec = _model(crop_dir, tmp_path, "cls", {"task": "classification"}, patch=16)
    res = _explain(model, crop_dir, tmp_path / "out")
    labels = gdal.Open(str(crop_dir / "raleigh_landcover.tif")).ReadAsArray()
    idx = class_indices(labels, np.ones(labels.shape, bool), np.array([c.value for c in spec.classes]))
    ref, has = cell_majority(idx, idx >= 0, 16, len(spec.classes))
    pred = read(res.outputs["main"])
    err = read(res.outputs["main_error"])
    assert err.shape == pred.shape == (10, 12)  # one value per 16 px cell of the 192 x 160 crop
    lut = {c.value: i for i, c in enumerate(spec.classes)}
    pred_idx = np.vectorize(lambda v: lut.get(int(v), -1))(pred)
    np.testing.assert_array_equal(err[has], (pred_idx != ref)[has].astype(np.uint8))
    assert (err[~has] == ERROR_NODATA).all()
    stats = res.stats
    assert stats["unit"] == "cells" and stats["pixels_labelled"] == int(has.sum())
    assert stats["metrics"]["overall_accuracy"] == pytest.approx(float((pred_idx == ref)[has].mean()))
    assert set(stats.get("detectors", {})) <= {"entropy", "one_minus_confidence"}
    page = res.report["html"].read_text()
    assert "Labelled cells: " + str(int(has.sum())) in page and "scored per cell" in page


@pytest.mark.slow
def test_regression_gets_regression_metrics_words_and_an_error_score(crop_dir, tmp_path):
    model, spec = _model(crop_dir, tmp_path, "reg", {"task": "regression", "name": "code", "units": "class code"})
    res = _explain(model, crop_dir, tmp_path / "out")
    assert "error_score" in res.outputs and "agreement" not in res.outputs and "error_probability" not in res.outputs
    pred = read(res.outputs["main"]).astype(np.float64)
    ref = gdal.Open(str(crop_dir / "raleigh_landcover.tif")).ReadAsArray().astype(np.float64)
    ok = (pred != FLOAT_NODATA) & (ref != 0)
    metrics = res.stats["metrics"]
    assert metrics["rmse"] == pytest.approx(np.sqrt(np.mean((pred[ok] - ref[ok]) ** 2)), rel=1e-4)
    assert metrics["mae"] == pytest.approx(np.mean(np.abs(pred[ok] - ref[ok])), rel=1e-4)
    assert metrics["pixels"] == int(ok.sum()) and metrics["units"] == "class code"
    assert "error_score" in res.stats["correlations"]
    page = res.report["html"].read_text()
    assert "RMSE (class code)" in page and "no agreement map" in page
    for words in ("Predicted class", "1 = wrong", "class probabilities"):
        assert words not in page, words
    assert json.loads(res.report["json"].read_text())["metrics"]["r2"] == pytest.approx(metrics["r2"])


def test_split_scores_only_the_models_own_held_out_blocks(trained_model, crop_dir, tmp_path):
    from mtl_core.errors import ConfigError
    from mtl_core.training.data import Scene, block_split

    model, _ = trained_model
    opts = PredictOptions(labels=str(crop_dir / "raleigh_landcover.tif"), products=("main", "main_error"))
    res = explain(model, crop_dir / "raleigh_vnir.tif", tmp_path, opts, split="test")
    cfg = load_config(crop_dir / "crop.yaml")
    test_blocks = block_split(Scene(cfg), cfg.split)["test"]  # training's own code
    err = read(res.outputs["main_error"])
    inside = np.zeros(err.shape, bool)
    for x, y, w, h in test_blocks:
        inside[y:y + h, x:x + w] = True
    scored = err[inside & (err != ERROR_NODATA)]
    assert res.stats["pixels_labelled"] == scored.size and 0 < scored.size < (err != ERROR_NODATA).sum()
    assert res.stats["metrics"]["overall_accuracy"] == pytest.approx(1 - scored.mean())
    assert res.stats["scored"] == {"split": "test", "blocks": len(test_blocks), "of": res.stats["scored"]["of"],
                                   "block_size": 64}
    assert "Scored: the test blocks" in res.report["html"].read_text()

    every = explain(model, crop_dir / "raleigh_vnir.tif", tmp_path, PredictOptions(
        labels=opts.labels, products=opts.products, overwrite=True))
    assert "optimistic" in every.stats["scored"]["warning"] and "--split test" in every.stats["scored"]["warning"]

    other = tmp_path / "other.tif"  # another part of the scene: the model's blocks mean nothing there
    gdal.Translate(str(other), str(crop_dir / "raleigh_vnir.tif"), srcWin=[10, 10, 160, 128])
    gdal.Translate(str(tmp_path / "other_labels.tif"), opts.labels, srcWin=[10, 10, 160, 128])
    (tmp_path / "o").mkdir()
    with pytest.raises(ConfigError, match="not the raster the model was trained on.*use --split all"):
        explain(model, other, tmp_path / "o", PredictOptions(labels=str(tmp_path / "other_labels.tif")), split="test")
    assert list((tmp_path / "o").iterdir()) == []


def test_the_auxiliary_bands_of_a_stack_are_found_by_description_or_chosen(trained_model, crop_dir, tmp_path):
    from mtl_core.errors import RasterError

    model, _ = trained_model
    raster = crop_dir / "raleigh_vnir.tif"
    src = [gdal.Open(str(raster)), gdal.Open(str(crop_dir / "raleigh_swir.tif"))]
    arrays = [b for s in src for b in s.ReadAsArray()]
    out = gdal.GetDriverByName("GTiff").Create(str(tmp_path / "stack.tif"), 192, 160, 6, gdal.GDT_Float32)
    out.SetGeoTransform(src[0].GetGeoTransform())
    out.SetProjection(src[0].GetProjection())
    for i, a in enumerate(arrays, start=1):
        out.GetRasterBand(i).WriteArray(a)
        out.GetRasterBand(i).SetNoDataValue(src[0].GetRasterBand(1).GetNoDataValue() or 0)
    out = None
    plain = tmp_path / "plain"
    plain.mkdir()
    base = predict(model, raster, plain, PredictOptions(aux_truth={"swir": str(crop_dir / "raleigh_swir.tif")},
                                                        products=("recon_error",)))
    reference = read(base.outputs["recon_error_swir"])

    (tmp_path / "chosen").mkdir()
    chosen = predict(model, raster, tmp_path / "chosen", PredictOptions(
        aux_truth={"swir": str(tmp_path / "stack.tif")}, aux_bands={"swir": [5, 6]}, products=("recon_error",)))
    np.testing.assert_allclose(read(chosen.outputs["recon_error_swir"]), reference)

    ds = gdal.Open(str(tmp_path / "stack.tif"), gdal.GA_Update)  # now name them: found without being chosen
    ds.GetRasterBand(5).SetDescription("swir1")
    ds.GetRasterBand(6).SetDescription("SWIR2")
    ds = None
    (tmp_path / "named").mkdir()
    named = predict(model, raster, tmp_path / "named", PredictOptions(
        aux_truth={"swir": str(tmp_path / "stack.tif")}, products=("recon_error",)))
    np.testing.assert_allclose(read(named.outputs["recon_error_swir"]), reference)

    with pytest.raises(RasterError, match=r"has 4 band\(s\) .*'swir' modality has 2 .*--aux-bands swir=1,2"):
        predict(model, raster, tmp_path, PredictOptions(aux_truth={"swir": str(raster)}))
    with pytest.raises(RasterError, match=r"auxiliary bands \[5, 9\] for 'swir' must be 2 band number"):
        predict(model, raster, tmp_path, PredictOptions(aux_truth={"swir": str(tmp_path / "stack.tif")},
                                                        aux_bands={"swir": [5, 9]}))
