"""The panel's Train page driven with QTest: layers and polygon labels in, live curves, the model on the Run page,
its test blocks explained; cancelling leaves nothing; the baselines side by side."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from qgis.core import QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QApplication
from qgis.PyQt.QtTest import QTest

from plugin.core.layers import KEY_PROPERTY, run_groups

from .conftest import needs_worker, wait_for

CLASSES = {1: "developed", 2: "agriculture", 3: "herbaceous", 4: "shrubland", 5: "forest", 6: "water"}


@pytest.fixture
def train_page(loaded_plugin, crop_dir, tmp_path):
    """The Train page filled as a user would: the VNIR crop in, its SWIR as a modality, polygons with a text
    class field in WGS84 (another CRS than the raster's)."""
    from mtl_core.io.labels import polygons_from_raster

    gpkg = polygons_from_raster(crop_dir / "raleigh_landcover.tif", tmp_path / "labels.gpkg", CLASSES, keep=0.5,
                                epsg=4326)
    layers = [QgsRasterLayer(str(crop_dir / "raleigh_vnir.tif"), "vnir"),
              QgsRasterLayer(str(crop_dir / "raleigh_swir.tif"), "swir crop"), QgsVectorLayer(str(gpkg), "labels")]
    QgsProject.instance().addMapLayers(layers)
    loaded_plugin.dock.show()
    page = loaded_plugin.dock.train_page
    loaded_plugin.dock.pages.setCurrentWidget(page)
    page.input_layer.setLayer(layers[0])
    page.add_aux(layer=layers[1])
    page.labels_layer.setLayer(layers[2])
    page.device_combo.setCurrentIndex(page.device_combo.findData("cpu"))
    page.out_file.setFilePath(str(tmp_path / "models" / "trained.mtl.safetensors"))
    (tmp_path / "models").mkdir()
    return page


def test_the_form_becomes_train_jobs(train_page, crop_dir, tmp_path):
    page = train_page
    assert page.aux_rows[0][0].text() == "swir_crop"  # the layer's name as a modality name
    assert page.labels_field.currentField() == "class" and not page.labels_band.isEnabled()
    page.input_bands.setItemCheckState(3, Qt.CheckState.Unchecked)
    page.baselines_check.setChecked(True)
    jobs = page.parameters()
    assert [j.train["variant"] for j in jobs] == ["mtl", "forest", "forest-multimodal", "unimodal", "multimodal"]
    assert [Path(j.out).name if j.out else "" for j in jobs] == [
        "trained.mtl.safetensors", "", "", "trained.unimodal.safetensors", "trained.multimodal.safetensors"]
    from mtl_core.training.options import DEFAULT_MINUTES

    assert all(j.train["minutes"] == DEFAULT_MINUTES and "steps" not in j.train for j in jobs)  # the default budget
    page.set_budget(10, "steps")
    assert all(j.train["steps"] == 10 and "minutes" not in j.train for j in page.parameters())
    page.set_budget(2.5, "minutes")
    assert page.parameters()[0].train["minutes"] == 2.5
    data = jobs[0].dataset
    assert data["inputs"]["input"] == {"path": str(crop_dir / "raleigh_vnir.tif"), "bands": [1, 2, 3]}
    assert data["aux"] == {"swir_crop": {"path": str(crop_dir / "raleigh_swir.tif")}}
    assert data["labels"]["field"] == "class"
    assert {"forest", "developed"} <= set(data["labels"]["classes"]) <= set(CLASSES.values())
    page.aux_rows[0][1].setLayer(None)
    with pytest.raises(ValueError, match="needs at least one auxiliary modality"):
        page.parameters()


def test_the_panel_and_processing_build_the_same_train_job(qgis_processing, train_page):
    """One builder (mtl_core.jobs.train_jobs) for the Train page and Processing › Train: the same layers and
    choices give the same job, the recipe's defaults included."""
    from qgis.core import QgsProcessingContext, QgsProcessingFeedback, QgsProject

    from plugin.processing.train import TrainAlgorithm

    page = train_page
    mine = page.parameters()[0]
    alg = TrainAlgorithm()
    alg.initAlgorithm()
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    parameters = {"INPUT": page.input_layer.currentLayer(), "AUX": [page.aux_rows[0][1].currentLayer()],
                  "AUX_NAMES": page.aux_rows[0][0].text(), "LABELS": page.labels_layer.currentLayer(),
                  "LABELS_FIELD": "class", "TASK": 0, "DEVICE": 1, "OUTPUT": mine.out}
    assert alg.prepareAlgorithm(parameters, context, QgsProcessingFeedback())
    theirs = alg.job(parameters, context)
    assert {**theirs.to_dict(), "name": mine.name} == mine.to_dict()
    page.set_budget(10, "steps")
    assert alg.job({**parameters, "STEPS": 10}, context).train == page.parameters()[0].train


def test_the_page_fits_a_narrow_dock_without_being_cut(train_page):
    """Long band lists, layer names and labels must not widen the page beyond the dock (it scrolls only down)."""
    page = train_page
    page.add_aux(name="a_modality_with_a_long_name")
    QApplication.processEvents()
    # A 430 px dock (QGIS's default width on a 1366 px screen) leaves about 400 px beside the scroll bar.
    assert page.body.minimumSizeHint().width() <= 400


@needs_worker
def test_train_watch_select_and_explain(loaded_plugin, train_page, tmp_path):
    page, run = train_page, loaded_plugin.dock.run_page
    page.set_budget(30, "steps")
    wait_for(lambda: page.train_button.isEnabled(), timeout=60)  # the worker's Python checked when shown
    seen = []
    QTest.mouseClick(page.train_button, Qt.MouseButton.LeftButton)
    task = loaded_plugin.train_task
    assert task is not None and page.cancel_button.isEnabled()
    task.record.connect(lambda _i, r: seen.append(r))
    wait_for(lambda: loaded_plugin.train_task is None, timeout=600)
    assert page.status_label.text() and not page.cancel_button.isEnabled()
    steps = [r["step"] for r in seen if r["kind"] == "step"]
    assert steps == list(range(1, 31)), page.status_label.text()
    assert page.curves.points() >= 30 * 3  # main, aux/swir_crop, total per step, and the validation scores
    model = tmp_path / "models" / "trained.mtl.safetensors"
    assert model.exists() and model.with_name("trained.dataset.yaml").exists()
    assert run.model_file.filePath() == str(model) and run.recent_combo.currentData() == str(model)
    assert run.layer_combo.currentLayer() == page.input_layer.currentLayer()  # the raster it was trained on
    assert page.results_table.rowCount() == 1 and page.results_table.item(0, 0).text() == "mtl"
    assert all(0 <= float(page.results_table.item(0, c).text()) <= 1 for c in (2, 3))  # test mIoU and OA

    run.out_dir.setFilePath(str(tmp_path / "runs"))
    run.device_combo.setCurrentIndex(run.device_combo.findData("cpu"))
    QTest.mouseClick(page.explain_button, Qt.MouseButton.LeftButton)
    assert loaded_plugin.dock.pages.currentWidget() is run
    wait_for(lambda: loaded_plugin.task is None, timeout=600)
    groups = run_groups()
    assert len(groups) == 1, run.status_label.text()
    keys = {n.layer().customProperty(KEY_PROPERTY) for n in groups[0].findLayers()}
    assert {"main", "agreement", "main_error"} <= keys


@needs_worker
def test_cancel_leaves_no_file_and_no_worker(loaded_plugin, train_page, tmp_path):
    page = train_page
    page.set_budget(4000, "steps")
    wait_for(lambda: page.train_button.isEnabled(), timeout=60)
    QTest.mouseClick(page.train_button, Qt.MouseButton.LeftButton)
    task = loaded_plugin.train_task
    wait_for(lambda: page.curves.points() > 0, timeout=300)  # training steps are running in the worker
    QTest.mouseClick(page.cancel_button, Qt.MouseButton.LeftButton)
    wait_for(lambda: loaded_plugin.train_task is None, timeout=120)
    assert task is not None and "cancelled" in page.status_label.text()
    assert list((tmp_path / "models").iterdir()) == []
    pids = [p for p in os.listdir("/proc") if p.isdigit()]
    workers = [p for p in pids if b"mtl_core.worker" in _cmdline(p)]
    assert workers == []


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@pytest.mark.slow
@needs_worker
def test_the_baselines_are_trained_on_the_same_blocks_and_shown_side_by_side(loaded_plugin, train_page, tmp_path):
    page = train_page
    page.set_budget(8, "steps")
    page.baselines_check.setChecked(True)
    wait_for(lambda: page.train_button.isEnabled(), timeout=60)
    QTest.mouseClick(page.train_button, Qt.MouseButton.LeftButton)
    wait_for(lambda: loaded_plugin.train_task is None, timeout=900)
    table = page.results_table
    rows = {table.item(r, 0).text(): [table.item(r, c).text() for c in range(table.columnCount())]
            for r in range(table.rowCount())}
    assert list(rows) == ["mtl", "forest", "forest-multimodal", "unimodal", "multimodal"], page.status_label.text()
    assert rows["multimodal"][1] == rows["forest-multimodal"][1] == "yes"
    assert rows["mtl"][1] == rows["forest"][1] == "no"
    assert all(0 < float(rows[v][2]) <= 1 for v in rows)  # every one scored on the test blocks
    assert sorted(p.name for p in (tmp_path / "models").iterdir() if p.suffix == ".safetensors") == [
        "trained.mtl.safetensors", "trained.multimodal.safetensors", "trained.unimodal.safetensors"]  # no forest
    from mtl_core.modelfile import read_spec

    blocks = {v: read_spec(tmp_path / "models" / f"trained.{v}.safetensors" if v != "mtl" else
                           tmp_path / "models" / "trained.mtl.safetensors").training["data"]["blocks"]
              for v in rows if "forest" not in v}
    assert blocks["mtl"] == blocks["unimodal"] == blocks["multimodal"]
