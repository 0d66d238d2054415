"""The Processing algorithms run through processing.run, in the same QGIS as the plugin."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from osgeo import gdal
from qgis.core import QgsProcessingException, QgsRasterLayer

from .conftest import needs_worker


@pytest.fixture
def processing_ready(qgis_processing, loaded_plugin):
    """Processing initialised and the plugin's provider registered."""
    import processing

    return processing


def test_predict_algorithm(processing_ready, crop_dir, tiny_model, tmp_path):
    result = processing_ready.run("mtl_explain:predict", {
        "INPUT": str(crop_dir / "raleigh_vnir.tif"),
        "MODEL": str(tiny_model),
        "DEVICE": 1,  # cpu
        "OUTPUT_FOLDER": str(tmp_path / "out"),
    })
    assert result["DEVICE_USED"] == "cpu"
    run_dir = Path(result["RUN_FOLDER"])
    assert run_dir.parent == tmp_path / "out"
    for key in ("MAIN", "CONFIDENCE", "ENTROPY", "AUX_SWIR"):
        assert Path(result[key]).parent == run_dir
    main = QgsRasterLayer(result["MAIN"], "main")
    src = gdal.Open(str(crop_dir / "raleigh_vnir.tif"))
    assert (main.width(), main.height()) == (src.RasterXSize, src.RasterYSize)
    assert gdal.Open(result["AUX_SWIR"]).RasterCount == 2


def test_predict_algorithm_extent_and_bands(processing_ready, crop_dir, tiny_model, tmp_path):
    src = gdal.Open(str(crop_dir / "raleigh_vnir.tif"))
    x0, dx, _, y0, _, dy = src.GetGeoTransform()
    extent = f"{x0 + 10 * dx},{x0 + 74 * dx},{y0 + 90 * dy},{y0 + 30 * dy}"  # xmin,xmax,ymin,ymax: 64 x 60 px
    result = processing_ready.run("mtl_explain:predict", {
        "INPUT": str(crop_dir / "raleigh_vnir.tif"), "MODEL": str(tiny_model), "DEVICE": 1,
        "EXTENT": extent, "BANDS": "1,2,3,4", "PRODUCTS": [0], "OUTPUT_FOLDER": str(tmp_path / "out"),
    })
    ds = gdal.Open(result["MAIN"])
    assert (ds.RasterXSize, ds.RasterYSize) == (64, 60)
    assert "CONFIDENCE" not in result or result["CONFIDENCE"] is None


def test_predict_algorithm_refuses_wrong_bands(processing_ready, crop_dir, tiny_model, tmp_path):
    with pytest.raises(QgsProcessingException, match="expects 4"):
        processing_ready.run("mtl_explain:predict", {
            "INPUT": str(crop_dir / "raleigh_swir.tif"), "MODEL": str(tiny_model), "DEVICE": 1,
            "OUTPUT_FOLDER": str(tmp_path / "out"),
        })
    assert [p for p in (tmp_path / "out").rglob("*") if p.is_file()] == []


def test_explain_algorithm(processing_ready, crop_dir, tiny_model, tmp_path):
    result = processing_ready.run("mtl_explain:explain", {
        "INPUT": str(crop_dir / "raleigh_vnir.tif"), "MODEL": str(tiny_model), "DEVICE": 1,
        "AUX_TRUTH": [str(crop_dir / "raleigh_swir.tif")], "LABELS": str(crop_dir / "raleigh_landcover.tif"),
        "SENSITIVITY": False, "OUTPUT_FOLDER": str(tmp_path / "out"),
    })
    assert Path(result["RECON_ERROR_SWIR"]).exists()
    ds = gdal.Open(result["MAIN_ERROR"])
    err = ds.GetRasterBand(1)
    assert err.DataType == gdal.GDT_Byte
    values = set(err.ReadAsArray().ravel().tolist())
    assert values <= {0, 1, 255} and 1 in values  # a 4-step model is wrong somewhere


@pytest.mark.parametrize("parameter", ["INPUT", "LABELS"])
def test_a_corrupt_raster_file_is_named_with_the_reason(processing_ready, crop_dir, tiny_model, tmp_path, parameter):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\0garbage" * 10)
    params = {"INPUT": str(crop_dir / "raleigh_vnir.tif"), "MODEL": str(tiny_model), "DEVICE": 1,
              "OUTPUT_FOLDER": str(tmp_path / "out"), parameter: str(bad)}
    # (?s): GDAL 3.10 (QGIS 3.44's) adds a "May be caused by:" line to the reason
    message = rf"(?s){parameter}: .*bad.tif' is not a raster GDAL can open \(.*TIFFReadDirectory.*\); check it with"
    with pytest.raises(QgsProcessingException, match=message):
        processing_ready.run("mtl_explain:explain", params)
    assert not (tmp_path / "out").exists()


def test_train_names_a_corrupt_labels_file_raster_or_vector(processing_ready, crop_dir, tmp_path):
    bad = tmp_path / "bad.gpkg"
    bad.write_bytes(b"SQLite format 3\0" + b"garbage" * 50)
    params = {"INPUT": str(crop_dir / "raleigh_vnir.tif"), "LABELS": str(bad), "LABELS_FIELD": "class",
              "OUTPUT": str(tmp_path / "m.mtl.safetensors")}
    with pytest.raises(QgsProcessingException, match=r"LABELS: .*bad.gpkg' is not a raster or vector layer GDAL"):
        processing_ready.run("mtl_explain:train", params)
    assert list(tmp_path.iterdir()) == [bad]


def test_explain_algorithm_labels_band_and_split(processing_ready, crop_dir, tiny_model, tmp_path):
    two = tmp_path / "labels_two_bands.tif"  # band 1 all nodata, band 2 the labels
    gdal.Translate(str(two), str(crop_dir / "raleigh_landcover.tif"), options="-b 1 -b 1")
    ds = gdal.Open(str(two), gdal.GA_Update)
    ds.GetRasterBand(1).Fill(0)
    ds = None
    params = {"INPUT": str(crop_dir / "raleigh_vnir.tif"), "MODEL": str(tiny_model), "DEVICE": 1, "LABELS": str(two),
              "LABELS_BAND": 2, "SPLIT": 1, "SENSITIVITY": False, "OUTPUT_FOLDER": str(tmp_path / "out")}
    result = processing_ready.run("mtl_explain:explain", params)
    report = json.loads(Path(result["REPORT"]).with_suffix(".json").read_text())
    assert report["inputs"]["labels_band"] == 2 and report["scored"]["split"] == "test"
    assert 0 < report["pixels_labelled"] < 192 * 160


@pytest.mark.slow
@needs_worker
def test_train_algorithm(processing_ready, crop_dir, tmp_path):
    from mtl_core.modelfile import read_spec

    out = tmp_path / "trained.mtl.safetensors"
    result = processing_ready.run("mtl_explain:train", {
        "CONFIG": str(crop_dir / "crop.yaml"), "VARIANT": 0, "STEPS": 2, "ENCODER_DEPTH": 3, "BATCH_SIZE": 2,
        "DEVICE": 1, "HALF": True, "OUTPUT": str(out),
    })
    assert Path(result["OUTPUT"]) == out
    spec = read_spec(out)
    assert spec.variant == "mtl" and [m.name for m in spec.aux] == ["swir"]
    assert spec.architecture.encoder_depth == 3


@pytest.mark.slow
@needs_worker
def test_train_algorithm_with_a_budget_in_minutes(processing_ready, crop_dir, tmp_path):
    """The default budget is in minutes; a short one is honoured (its steps fitted to it) and recorded."""
    from mtl_core.modelfile import read_spec

    out = tmp_path / "budget.mtl.safetensors"
    # 2 minutes, not 1: on a busy 2-core machine the worker's start, the data and the warm-up took 71 s
    processing_ready.run("mtl_explain:train", {"CONFIG": str(crop_dir / "crop.yaml"), "MINUTES": 2.0,
                                               "BATCH_SIZE": 2, "DEVICE": 1, "OUTPUT": str(out)})
    training = read_spec(out).training
    assert training["budget_minutes"] == 2.0 and training["steps"] > 20


def test_explain_outputs_load_styled_and_are_declared_for_the_modeller(processing_ready, qgis_iface, monkeypatch,
                                                                       crop_dir, tiny_model, tmp_path):
    from qgis.core import QgsApplication, QgsLayerTreeModel, QgsProject
    from qgis.gui import QgsLayerTreeView

    # The desktop's layer tree view, which Processing's post-processing of QGIS 3.44 hands to C++ (the mocked
    # interface's MagicMock is refused there)
    view = QgsLayerTreeView()
    view.setModel(QgsLayerTreeModel(QgsProject.instance().layerTreeRoot(), view))
    monkeypatch.setattr(qgis_iface, "layerTreeView", lambda: view, raising=False)

    alg = QgsApplication.processingRegistry().algorithmById("mtl_explain:explain")
    declared = {o.name() for o in alg.outputDefinitions()}
    assert {"MAIN", "CONFIDENCE", "ENTROPY", "MAIN_ERROR", "ERROR_SCORE", "AGREEMENT", "REPORT"} <= declared
    result = processing_ready.runAndLoadResults("mtl_explain:explain", {
        "INPUT": str(crop_dir / "raleigh_vnir.tif"), "MODEL": str(tiny_model), "DEVICE": 1,
        "AUX_TRUTH": [str(crop_dir / "raleigh_swir.tif")], "LABELS": str(crop_dir / "raleigh_landcover.tif"),
        "SENSITIVITY": False, "OUTPUT_FOLDER": str(tmp_path / "out"),
    })
    assert Path(result["REPORT"]).is_file()
    layers = {Path(lyr.source()).name: lyr for lyr in QgsProject.instance().mapLayers().values()}
    renderers = {name: layer.renderer().type() for name, layer in layers.items()}
    assert renderers["raleigh_vnir_confidence.tif"] == "singlebandpseudocolor", renderers
    assert renderers["raleigh_vnir_agreement.tif"] == "paletted"
    assert [c.label for c in layers["raleigh_vnir_main_error.tif"].renderer().classes()] == ["correct", "wrong"]
    assert Path(result["CONFIDENCE"]).with_suffix(".qml").is_file()


def test_every_algorithm_links_the_shipped_manual(processing_ready):
    from qgis.core import QgsApplication
    from qgis.PyQt.QtCore import QUrl

    for name in ("predict", "explain", "train", "proposesites"):
        url = QgsApplication.processingRegistry().algorithmById(f"mtl_explain:{name}").helpUrl()
        assert Path(QUrl(url).toLocalFile()).name == "plugin.md" and Path(QUrl(url).toLocalFile()).is_file(), url


def test_fast_precision_runs_the_int8_twin_or_says_there_is_none(processing_ready, crop_dir, tiny_model, tmp_path):
    from qgis.core import QgsProcessingFeedback

    from plugin.core.paths import default_model

    class Log(QgsProcessingFeedback):
        lines: list[str] = []

        def pushInfo(self, info):  # noqa: N802 (QGIS name)
            self.lines.append(info)

    log = Log()
    result = processing_ready.run("mtl_explain:predict", {
        "INPUT": str(crop_dir / "raleigh_vnir.tif"), "MODEL": str(default_model()), "DEVICE": 1, "PRECISION": 1,
        "PRODUCTS": [0], "OUTPUT_FOLDER": str(tmp_path / "out")}, feedback=log)
    assert any("default_model.int8.mtl.onnx" in line for line in log.lines) and Path(result["MAIN"]).is_file()
    with pytest.raises(QgsProcessingException, match="has no int8 twin beside it"):
        processing_ready.run("mtl_explain:predict", {
            "INPUT": str(crop_dir / "raleigh_vnir.tif"), "MODEL": str(tiny_model), "DEVICE": 1, "PRECISION": 1,
            "OUTPUT_FOLDER": str(tmp_path / "out2")})


@pytest.mark.slow
@needs_worker
def test_train_algorithm_from_layers(processing_ready, crop_dir, tmp_path):
    """Train from map layers: an input raster, an auxiliary raster and polygons with a text class field in another
    CRS, styled by category; the model carries the style's colours and the configuration is written beside it."""
    from qgis.core import (QgsCategorizedSymbolRenderer, QgsFillSymbol, QgsRendererCategory, QgsVectorLayer)

    from mtl_core.config import load_config
    from mtl_core.io.labels import polygons_from_raster
    from mtl_core.modelfile import read_spec

    classes = {1: "developed", 2: "agriculture", 3: "herbaceous", 4: "shrubland", 5: "forest", 6: "water"}
    gpkg = polygons_from_raster(crop_dir / "raleigh_landcover.tif", tmp_path / "labels.gpkg", classes, keep=0.5,
                                epsg=4326)
    polygons = QgsVectorLayer(str(gpkg), "labels", "ogr")
    categories = [QgsRendererCategory("forest", QgsFillSymbol.createSimple({"color": "#1a9641"}), "Forest"),
                  QgsRendererCategory("water", QgsFillSymbol.createSimple({"color": "#2b83ba"}), "Water")]
    polygons.setRenderer(QgsCategorizedSymbolRenderer("class", categories))
    src = gdal.Open(str(crop_dir / "raleigh_vnir.tif"))
    x0, dx, _, y0, _, dy = src.GetGeoTransform()
    extent = f"{x0},{x0 + 192 * dx},{y0 + 160 * dy},{y0 + 10 * dy}"  # all but the top 10 rows
    out = tmp_path / "model" / "trained.mtl.safetensors"
    result = processing_ready.run("mtl_explain:train", {
        "INPUT": QgsRasterLayer(str(crop_dir / "raleigh_vnir.tif"), "vnir"), "INPUT_BANDS": "1,2,3,4",
        "AUX": [str(crop_dir / "raleigh_swir.tif")], "AUX_NAMES": "swir", "LABELS": polygons,
        "LABELS_FIELD": "class", "TASK": 0, "EXTENT": extent, "STEPS": 2, "ENCODER_DEPTH": 3, "BATCH_SIZE": 2,
        "DEVICE": 1, "OUTPUT": str(out)})
    assert Path(result["OUTPUT"]) == out
    spec = read_spec(out)
    colours = {c.name: c.color for c in spec.classes}
    assert colours["Forest"] == "#1a9641" and colours["Water"] == "#2b83ba"  # the layer's style
    assert [c.name for c in spec.classes][:2] == ["Forest", "Water"]
    assert spec.training["data"]["label_values"]["forest"] == 1  # the field's values, for explain
    cfg = load_config(out.with_name("trained.dataset.yaml"))  # what mtl train needs to reproduce the run
    assert cfg.labels.field_name == "class" and cfg.labels.path == gpkg and [s.name for s in cfg.aux] == ["swir"]
    assert cfg.extent[3] == pytest.approx(y0 + 10 * dy)

    with pytest.raises(QgsProcessingException, match="either a dataset configuration file, or an input raster"):
        processing_ready.run("mtl_explain:train", {
            "CONFIG": str(crop_dir / "crop.yaml"), "INPUT": str(crop_dir / "raleigh_vnir.tif"),
            "OUTPUT": str(tmp_path / "other.mtl.safetensors")})
    with pytest.raises(QgsProcessingException, match="Choose the class field"):
        processing_ready.run("mtl_explain:train", {
            "INPUT": str(crop_dir / "raleigh_vnir.tif"), "LABELS": polygons, "STEPS": 1, "DEVICE": 1,
            "OUTPUT": str(tmp_path / "other.mtl.safetensors")})
    assert not (tmp_path / "other.mtl.safetensors").exists()


@needs_worker
def test_train_from_layers_inside_a_graphical_model(processing_ready, crop_dir, tmp_path):
    """The modeller: Train as a child algorithm whose raster and polygon layers are the model's own inputs."""
    from qgis.core import (QgsProcessingModelAlgorithm, QgsProcessingModelChildAlgorithm,
                           QgsProcessingModelChildParameterSource, QgsProcessingModelOutput,
                           QgsProcessingModelParameter, QgsProcessingParameterRasterLayer,
                           QgsProcessingParameterVectorLayer)

    from mtl_core.io.labels import polygons_from_raster
    from mtl_core.modelfile import read_spec

    gpkg = polygons_from_raster(crop_dir / "raleigh_landcover.tif", tmp_path / "labels.gpkg",
                                {1: "developed", 3: "herbaceous", 5: "forest", 6: "water"}, epsg=4326)
    model = QgsProcessingModelAlgorithm("train from my layers", "mtl")
    model.addModelParameter(QgsProcessingParameterRasterLayer("scene", "Scene"), QgsProcessingModelParameter("scene"))
    model.addModelParameter(QgsProcessingParameterVectorLayer("polygons", "Polygons"),
                            QgsProcessingModelParameter("polygons"))
    child = QgsProcessingModelChildAlgorithm("mtl_explain:train")
    child.setChildId("train")
    static = {"INPUT_BANDS": "1,2,3,4", "AUX": [str(crop_dir / "raleigh_swir.tif")], "AUX_NAMES": "swir",
              "LABELS_FIELD": "class", "STEPS": 2, "ENCODER_DEPTH": 3, "BATCH_SIZE": 2, "DEVICE": 1}
    for name, value in static.items():
        child.addParameterSources(name, [QgsProcessingModelChildParameterSource.fromStaticValue(value)])
    child.addParameterSources("INPUT", [QgsProcessingModelChildParameterSource.fromModelParameter("scene")])
    child.addParameterSources("LABELS", [QgsProcessingModelChildParameterSource.fromModelParameter("polygons")])
    output = QgsProcessingModelOutput("model_file")
    output.setChildOutputName("OUTPUT")
    child.setModelOutputs({"model_file": output})
    model.addChildAlgorithm(child)
    out = tmp_path / "modelled.mtl.safetensors"
    result = processing_ready.run(model, {"scene": str(crop_dir / "raleigh_vnir.tif"), "polygons": str(gpkg),
                                          "train:model_file": str(out)})
    assert Path(result["train:model_file"]) == out
    assert {"forest", "water"} <= {c.name for c in read_spec(out).classes}


def test_propose_sites_algorithm_writes_and_loads_a_styled_layer(processing_ready, crop_dir, tiny_model, tmp_path):
    from qgis.core import QgsProcessingContext, QgsProcessingFeedback, QgsProject

    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    out = tmp_path / "sites.gpkg"
    result = processing_ready.run("mtl_explain:proposesites", {
        "INPUT": str(crop_dir / "raleigh_vnir.tif"), "MODEL": str(tiny_model),
        "AUX_TRUTH": [str(crop_dir / "raleigh_swir.tif")], "COUNT": 4, "STRATEGY": 3, "DEVICE": 1,
        "OUTPUT": str(out)}, context=context, feedback=QgsProcessingFeedback())
    assert result["OUTPUT"] == str(out) and result["STRATEGY_USED"] == "mix" and 1 <= result["SITES"] <= 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sites.gpkg", "sites.qml"]  # no temporary run left
    details = context.layersToLoadOnCompletion()
    assert len(details) == 1
    path, info = next(iter(details.items()))
    from qgis.core import QgsVectorLayer

    layer = QgsVectorLayer(path, info.name, "ogr")
    info.postProcessor().postProcessLayer(layer, context, QgsProcessingFeedback())
    assert layer.featureCount() == result["SITES"] and layer.renderer().type() == "categorizedSymbol"
