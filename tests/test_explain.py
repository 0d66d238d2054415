"""Explanation layers: error score and agreement on constructed cases, then ``mtl explain`` end to end."""

import json
import re

import numpy as np
import pytest
import torch
from osgeo import gdal

from mtl_core.cli import main
from mtl_core.config import load_config
from mtl_core.errors import MtlError, RasterError
from mtl_core.engine import explain
from mtl_core.explain.scores import AGREEMENT_CLASSES, agreement, error_score, fit_error_model
from mtl_core.engine import DEFAULT_PRODUCTS, PredictOptions
from mtl_core.modelfile import read_spec, save_model
from mtl_core.spec import Architecture
from mtl_core.training.train import TrainOptions, train

from .rasters import read

SMALL = Architecture(encoder="resnet18", encoder_depth=3)


def truth(aux: dict | None = None, labels=None, sensitivity: bool = True, **kw) -> PredictOptions:
    """Engine options of an explain run with this ground truth (sensitivity layers included by default)."""
    products = DEFAULT_PRODUCTS + (("sensitivity",) if sensitivity else ())
    return PredictOptions(aux_truth={k: str(v) for k, v in (aux or {}).items()},
                          labels=str(labels) if labels else None, products=products, **kw)


def test_confident_and_flagged_on_a_constructed_case():
    from mtl_core.explain.scores import CONFIDENT_FLAGGED_CLASSES, confident_flagged

    confidence = np.array([[0.9, 0.9], [0.5, 0.95]])
    score = np.array([[0.99, 0.2], [0.99, 0.91]])
    np.testing.assert_array_equal(confident_flagged(confidence, score, 0.8, 0.9), [[3, 2], [1, 3]])
    assert [v for v, _, _ in CONFIDENT_FLAGGED_CLASSES] == [1, 2, 3] and "flagged" in CONFIDENT_FLAGGED_CLASSES[2][1]


def test_agreement_categories_on_a_constructed_case():
    wrong = np.array([[False, True], [True, False], [False, True]])
    score = np.array([[0.2, 0.95], [0.5, 0.99], [0.9, 0.9]])
    # threshold 0.9: "bad" means strictly above it
    np.testing.assert_array_equal(agreement(wrong, score, 0.9), [[1, 2], [3, 4], [1, 3]])
    assert agreement(wrong, score, 0.9).dtype == np.uint8
    assert [v for v, _, _ in AGREEMENT_CLASSES] == [1, 2, 3, 4]
    assert "unexplained" in AGREEMENT_CLASSES[2][1] and "explained" in AGREEMENT_CLASSES[1][1]
    assert all(re.fullmatch(r"#[0-9a-f]{6}", c) for _, _, c in AGREEMENT_CLASSES)
    with pytest.raises(ValueError, match="same shape"):
        agreement(wrong, score[:2], 0.9)


@pytest.fixture
def two_class_model():
    """Training errors uniform on [0, 1] where class 0 is predicted, on [0, 10] where class 1 is."""
    n = 20001
    err = np.concatenate([np.linspace(0, 1, n), np.linspace(0, 10, n)])[None].repeat(2, axis=0)
    probs = np.zeros((2, 2 * n))
    probs[0, :n] = probs[1, n:] = 1.0
    return fit_error_model({"swir": err}, probs, {"swir": ["s1", "s2"]}, ["a", "b"], quantile=0.9)


def test_error_score_is_the_class_conditional_cdf(two_class_model):
    err = {"swir": np.full((2, 1, 3), 0.5, dtype=np.float32)}
    probs = np.array([[[1.0, 0.0, 0.5]], [[0.0, 1.0, 0.5]]])
    score = error_score(err, probs, two_class_model)
    assert score.shape == (1, 3) and score.dtype == np.float32
    # 0.5 is the median error of class 0 but only the 5th percentile of class 1; 50/50 averages them.
    np.testing.assert_allclose(score[0], [0.5, 0.05, 0.275], atol=0.01)
    # The training scores are uniform, so their 0.9 quantile is 0.9.
    assert two_class_model["threshold"] == pytest.approx(0.9, abs=0.01)
    json.dumps(two_class_model)  # stored in the model file's JSON spec


def test_error_score_without_probabilities_uses_every_training_pixel(two_class_model):
    score = error_score({"swir": np.full((2, 1, 1), 1.0)}, None, two_class_model)
    # 1.0 is above every class-0 error and a tenth of class 1's: 0.55 of all training errors.
    assert score[0, 0] == pytest.approx(0.55, abs=0.01)


def test_error_score_refuses_what_the_error_model_does_not_know(two_class_model):
    with pytest.raises(MtlError, match=r"3 error band\(s\).*fitted on 2 \(s1, s2\)"):
        error_score({"swir": np.zeros((3, 2, 2))}, None, two_class_model)
    with pytest.raises(MtlError, match="no modality 'sar'"):
        error_score({"sar": np.zeros((2, 2, 2))}, None, two_class_model)
    with pytest.raises(MtlError, match="do not match the error model's 2 classes"):
        error_score({"swir": np.zeros((2, 2, 2))}, np.full((3, 2, 2), 1 / 3), two_class_model)
    with pytest.raises(MtlError, match="strictly between 0 and 1"):
        fit_error_model({"swir": np.zeros((2, 10))}, None, quantile=1.0)


def test_max_reduction_takes_the_worst_band(two_class_model):
    as_mean = dict(two_class_model, reduce="mean")
    err = {"swir": np.array([[[0.1]], [[0.9]]])}
    probs = np.array([[[1.0]], [[0.0]]])
    assert two_class_model["reduce"] == "max"
    assert error_score(err, probs, two_class_model)[0, 0] == pytest.approx(0.9, abs=0.01)
    assert error_score(err, probs, as_mean)[0, 0] == pytest.approx(0.5, abs=0.01)


# --- end to end on a crop of the real sample -------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(crop_dir, tmp_path_factory):
    cfg = load_config(crop_dir / "crop.yaml")
    result = train(cfg, TrainOptions(steps=6, batch_size=4, eval_every=3, architecture=SMALL), progress=False)
    path = tmp_path_factory.mktemp("model") / "crop.mtl.safetensors"
    save_model(path, result.spec, result.state_dict)
    return path


@pytest.mark.slow
def test_training_stores_the_error_model_in_the_model_file(trained):
    error_model = read_spec(trained).training["error_model"]
    assert 0.0 < error_model["threshold"] < 1.0
    assert error_model["threshold_quantile"] == 0.9
    tables = np.asarray(error_model["modalities"]["swir"]["tables"])
    assert tables.shape == (7 + 1, 2, len(error_model["levels"]))
    assert np.all(np.diff(tables, axis=-1) >= 0)  # quantiles never decrease
    assert len(error_model["detector"]["coef"]) == 5  # intercept and the four features (validation blocks)
    assert 1 / 7 < error_model["confident_at"] < 1.0  # median training confidence: "confident" from here up


@pytest.mark.slow
def test_explain_writes_every_layer_and_a_report_that_names_them(trained, crop_dir, tmp_path):
    result = explain(trained, crop_dir / "raleigh_vnir.tif", tmp_path,  # float32: the layers as computed
                     truth({"swir": crop_dir / "raleigh_swir.tif"}, crop_dir / "raleigh_landcover.tif", float32=True))
    expected = {"main", "confidence", "entropy", "aux_swir", "recon_error_swir", "main_error", "error_score",
                "agreement", "sensitivity", "sensitivity_swir"}
    assert expected <= set(result.outputs)
    page = result.report["html"].read_text()
    for key, path in result.outputs.items():
        assert f"<b>{key}</b>" in page and path.name in page, key
    assert page.count("data:image/png;base64,") >= len(result.outputs) + 1
    assert "softmax entropy (baseline)" in page and "combination" in page
    stats = json.loads(result.report["json"].read_text())
    assert set(stats["detectors"]) >= {"entropy", "one_minus_confidence", "error_score", "recon_error_mean"}
    assert 0.0 <= stats["detectors"]["error_score"]["auroc"] <= 1.0
    csv_header = result.report["detectors_csv"].read_text().splitlines()[0]
    assert csv_header.startswith("detector,auroc,spearman,point_biserial")
    # The agreement layer follows the main error, the error score and the threshold in the model file.
    threshold = read_spec(trained).training["error_model"]["threshold"]
    main_error = read(result.outputs["main_error"])
    score = read(result.outputs["error_score"])
    agree = read(result.outputs["agreement"])
    labelled = (main_error != 255) & (score != -9999)
    assert labelled.sum() > 1000
    np.testing.assert_array_equal(agree[labelled], agreement(main_error[labelled] == 1, score[labelled], threshold))
    # "Confident and flagged" needs no labels: confidence against the training median, the score against the threshold.
    from mtl_core.explain.scores import confident_flagged

    flagged, conf = read(result.outputs["confident_flagged"]), read(result.outputs["confidence"])
    known = score != -9999
    at = read_spec(trained).training["error_model"]["confident_at"]
    np.testing.assert_array_equal(flagged[known], confident_flagged(conf[known], score[known], at, threshold))
    assert (flagged[~known] == 0).all() and set(np.unique(flagged[known])) <= {1, 2, 3}
    counts = stats["agreement"]
    assert sum(v["pixels"] for v in counts.values()) == labelled.sum()
    # The report's metrics are the confusion of the class map with the labels.
    assert stats["metrics"]["overall_accuracy"] == pytest.approx(1 - main_error[main_error != 255].mean())
    # The confident half: the confidence raster's median over labelled pixels, and its errors.
    conf = read(result.outputs["confidence"])[main_error != 255]
    confident = stats["confident"]
    assert confident["confidence_at_least"] == pytest.approx(float(np.median(conf)), abs=1e-6)
    assert confident["wrong"] == int((main_error[main_error != 255][conf >= np.median(conf)] == 1).sum())
    assert set(confident["detectors"]) == set(stats["detectors"]) and "Errors the model is confident about" in page
    # Per reference class, at the same confidence level: the classes' confident errors add up to the whole.
    per = confident["per_class"]
    assert per and all(d["confidence_at_least"] == confident["confidence_at_least"] for d in per.values())
    assert sum(d["wrong"] for d in per.values()) == confident["wrong"]
    assert sum(d["pixels"] for d in per.values()) == confident["pixels"]
    assert all(0 <= d["detectors"]["entropy"]["caught"] <= 1 for d in per.values() if d["wrong"] and
               d["pixels"] > d["wrong"])
    if any(d["wrong"] for d in per.values()):
        assert "caught: softmax entropy" in page


@pytest.mark.slow
def test_statistics_of_a_sub_extent_read_the_labels_at_the_right_place(trained, crop_dir, tmp_path):
    gt = gdal.Open(str(crop_dir / "raleigh_vnir.tif")).GetGeoTransform()
    x0, y0 = gt[0] + 37 * gt[1], gt[3] + 101 * gt[5]  # a sub-rectangle off the tile grid
    extent = (x0, y0 + 50 * gt[5], x0 + 90 * gt[1], y0)
    result = explain(trained, crop_dir / "raleigh_vnir.tif", tmp_path,
                     truth({"swir": crop_dir / "raleigh_swir.tif"}, crop_dir / "raleigh_landcover.tif",
                           sensitivity=False, extent=extent))
    main_error = read(result.outputs["main_error"])
    assert main_error.shape == (50, 90)
    labelled = main_error != 255
    assert result.stats["pixels_labelled"] == labelled.sum()
    assert result.stats["metrics"]["overall_accuracy"] == pytest.approx(1 - main_error[labelled].mean())


@pytest.mark.slow
def test_sensitivity_of_a_band_the_model_ignores_is_zero(trained, crop_dir, tmp_path):
    from mtl_core.modelfile import load_model

    spec, model = load_model(trained)
    with torch.no_grad():
        model.encoder.conv1.weight[:, 2] = 0.0  # the network can no longer see band 3 (red)
    blind = tmp_path / "blind.mtl.safetensors"
    save_model(blind, spec, model.state_dict())
    out = tmp_path / "out"
    out.mkdir()
    result = explain(blind, crop_dir / "raleigh_vnir.tif", out, truth({"swir": crop_dir / "raleigh_swir.tif"}))
    page = result.report["html"].read_text()  # no labels: the report says so and scores nothing
    assert "metrics" not in result.stats and "No reference labels were given" in page
    assert "confusion matrix" not in page and "<h2>Main task</h2>" not in page
    for key in ("sensitivity", "sensitivity_swir"):
        sens = result.stats["sensitivity"][key]
        assert sens["optical/red"] == 0.0, key
        assert min(sens["optical/blue"], sens["optical/green"], sens["optical/nir"]) > 0.0, key


@pytest.mark.slow
def test_auxiliary_raster_with_the_wrong_band_count_is_refused(trained, crop_dir, tmp_path):
    with pytest.raises(RasterError, match=r"has 4 band\(s\) but the model's 'swir' modality has 2 \(swir1, swir2\)"):
        explain(trained, crop_dir / "raleigh_vnir.tif", tmp_path, truth({"swir": crop_dir / "raleigh_vnir.tif"}))
    with pytest.raises(RasterError, match=r"no modality 'sar'.*--aux swir=PATH"):
        explain(trained, crop_dir / "raleigh_vnir.tif", tmp_path, truth({"sar": crop_dir / "raleigh_swir.tif"}))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_an_auxiliary_raster_on_another_grid_is_aligned_as_training_aligns_it(trained, crop_dir, tmp_path):
    shifted = tmp_path / "shifted_swir.tif"  # columns 10..159 of the input grid only
    gdal.Translate(str(shifted), str(crop_dir / "raleigh_swir.tif"), srcWin=[10, 0, 150, 160])
    runs = {}
    for name, swir in (("same", crop_dir / "raleigh_swir.tif"), ("shifted", shifted)):
        (tmp_path / name).mkdir()
        runs[name] = explain(trained, crop_dir / "raleigh_vnir.tif", tmp_path / name,
                             truth({"swir": swir}, crop_dir / "raleigh_landcover.tif", sensitivity=False))
    err = {k: read(r.outputs["recon_error_swir"])[0] for k, r in runs.items()}
    np.testing.assert_allclose(err["shifted"][:, 11:159], err["same"][:, 11:159], rtol=1e-5)
    assert (err["shifted"][:, :10] == -9999).all() and (err["shifted"][:, 160:] == -9999).all()
    assert runs["same"].stats["inputs"]["warped"] == []
    assert runs["shifted"].stats["inputs"]["warped"] == ["auxiliary raster 'swir' shifted_swir.tif (bilinear)"]
    assert "Warped onto the input grid" in runs["shifted"].report["html"].read_text()


@pytest.mark.slow
def test_cli_explain(trained, crop_dir, tmp_path, capsys):
    args = ["-q", "explain", str(trained), str(crop_dir / "raleigh_vnir.tif"), "--aux",
            f"swir={crop_dir / 'raleigh_swir.tif'}", "--labels", str(crop_dir / "raleigh_landcover.tif"),
            "--out", str(tmp_path), "--no-sensitivity"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "AUROC entropy" in printed and "report html" in printed
    assert not any(p.name.endswith("sensitivity.tif") for p in tmp_path.iterdir())
    assert main(["explain", str(trained), str(crop_dir / "raleigh_vnir.tif"), "--aux", "swir", "--out",
                 str(tmp_path)]) == 2
    assert "must look like NAME=PATH" in capsys.readouterr().err


@pytest.mark.slow
def test_a_regression_model_gets_an_unconditional_error_model(crop_copy):
    import yaml

    raw = yaml.safe_load((crop_copy / "crop.yaml").read_text())
    raw["labels"] = {"path": "raleigh_landcover.tif", "task": "regression", "name": "code", "units": ""}
    (crop_copy / "regression.yaml").write_text(yaml.safe_dump(raw))
    result = train(load_config(crop_copy / "regression.yaml"),
                   TrainOptions(steps=2, batch_size=2, eval_every=2, architecture=SMALL), progress=False)
    error_model = result.spec.training["error_model"]
    assert np.asarray(error_model["modalities"]["swir"]["tables"]).shape[:2] == (1, 2)  # one table, all pixels
    assert error_model["detector"] is None
    score = error_score({"swir": np.full((2, 4, 4), 1e6)}, None, error_model)
    np.testing.assert_allclose(score, 1.0)  # larger than every training error


@pytest.mark.slow
def test_explain_progress_covers_the_statistics_too(trained, crop_dir, tmp_path):
    seen: list[float] = []
    explain(trained, crop_dir / "raleigh_vnir.tif", tmp_path,
            truth({"swir": crop_dir / "raleigh_swir.tif"}, crop_dir / "raleigh_landcover.tif", sensitivity=False),
            progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert max(seen[:-1]) <= 0.9  # the prediction reports at most 90 %: statistics and report come after it


@pytest.mark.slow
def test_the_label_band_comes_from_the_model_file_unless_given(trained, crop_dir, tmp_path):
    from mtl_core.modelfile import load_model

    src = gdal.Open(str(crop_dir / "raleigh_landcover.tif"))
    two = gdal.GetDriverByName("GTiff").Create(str(tmp_path / "two.tif"), src.RasterXSize, src.RasterYSize, 2,
                                               gdal.GDT_Byte)
    two.SetGeoTransform(src.GetGeoTransform())
    two.SetProjection(src.GetProjection())
    two.GetRasterBand(1).WriteArray(np.full((src.RasterYSize, src.RasterXSize), 6, np.uint8))  # all "water"
    two.GetRasterBand(2).WriteArray(src.GetRasterBand(1).ReadAsArray())
    two.GetRasterBand(2).SetNoDataValue(src.GetRasterBand(1).GetNoDataValue() or 0)
    two = None

    def oa(model, out, band=None):
        out.mkdir()
        opts = truth(labels=tmp_path / "two.tif", sensitivity=False, labels_band=band)
        return explain(model, crop_dir / "raleigh_vnir.tif", out, opts).stats["metrics"]["overall_accuracy"]

    reference = explain(trained, crop_dir / "raleigh_vnir.tif", tmp_path, truth(
        labels=crop_dir / "raleigh_landcover.tif", sensitivity=False)).stats["metrics"]["overall_accuracy"]
    assert oa(trained, tmp_path / "b2", 2) == pytest.approx(reference)
    assert oa(trained, tmp_path / "b1", None) != pytest.approx(reference)  # trained on band 1: reads band 1
    spec, model = load_model(trained)
    spec.training["data"]["labels_band"] = 2  # as if trained with labels.band: 2
    moved = tmp_path / "band2.mtl.safetensors"
    save_model(moved, spec, model.state_dict())
    assert oa(moved, tmp_path / "rec", None) == pytest.approx(reference)
    with pytest.raises(RasterError, match=r"has 2 band\(s\); band 3 was asked for .*--labels-band N; the panel"):
        oa(trained, tmp_path / "b3", 3)


@pytest.mark.slow
def test_evaluate_json_is_valid_json(trained, crop_dir, capsys):
    assert main(["evaluate", str(trained), str(crop_dir / "crop.yaml"), "--json", "--threads", "1"]) == 0
    text = capsys.readouterr().out

    def refuse(name):
        raise AssertionError(f"invalid JSON constant {name}")

    metrics = json.loads(text, parse_constant=refuse)
    assert "overall_accuracy" in metrics
