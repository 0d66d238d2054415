"""The panel driven with QTest: a real run on the real sample crop, cancellation, and band-count errors."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest
from osgeo import gdal
from qgis.core import QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtTest import QTest

from plugin.core.layers import KEY_PROPERTY, run_groups

from .conftest import wait_for


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def _prepare(plugin, layer: QgsRasterLayer, model: Path, out: Path):
    QgsProject.instance().addMapLayer(layer)
    plugin.dock.show()
    dock = plugin.dock.run_page
    plugin.iface.setActiveLayer(layer)
    dock.layer_combo.setLayer(layer)
    dock.model_file.setFilePath(str(model))
    dock.out_dir.setFilePath(str(out))
    dock.device_combo.setCurrentIndex(dock.device_combo.findData("cpu"))
    return dock


def _run_and_cancel_midway(plugin, dock) -> set[str]:
    """Run with small tiles and cancel from the worker thread at the first progress report, so the run is
    surely mid-way; wait for the task to end. Returns the project's layer ids from before the run."""
    dock.tile_spin.setValue(32)
    dock.overlap_spin.setValue(0)
    dock.batch_spin.setValue(1)
    layers_before = set(QgsProject.instance().mapLayers())
    QTest.mouseClick(dock.run_button, Qt.MouseButton.LeftButton)
    task = plugin.task
    assert task is not None
    task.progressChanged.connect(lambda _p: task.cancel(), Qt.ConnectionType.DirectConnection)
    wait_for(lambda: plugin.task is None)
    return layers_before


def _hold_at_first_progress(task) -> tuple[threading.Event, threading.Event]:
    """Make the task's worker thread wait at its first progress report until released: (reached, release)."""
    reached, release = threading.Event(), threading.Event()

    def hold(_progress):
        if not reached.is_set():
            reached.set()
            release.wait(30)

    task.progressChanged.connect(hold, Qt.ConnectionType.DirectConnection)
    return reached, release


def test_run_adds_styled_layers(loaded_plugin, crop_dir, tiny_model, tmp_path):
    from mtl_core.engine.runtime import read_spec

    spec = read_spec(tiny_model)
    layer = QgsRasterLayer(str(crop_dir / "raleigh_vnir.tif"), "vnir crop")
    assert layer.isValid()
    dock = _prepare(loaded_plugin, layer, tiny_model, tmp_path / "out")
    assert dock.mapping is not None and dock.mapping.ok and dock.mapping.by_name
    assert dock.mapping.mapping == [1, 2, 3, 4]
    assert "developed" in dock.summary_label.text()
    assert dock.run_button.isEnabled()

    QTest.mouseClick(dock.run_button, Qt.MouseButton.LeftButton)
    assert loaded_plugin.task is not None
    wait_for(lambda: loaded_plugin.task is None)

    assert "Device used: cpu" in dock.device_label.text(), dock.status_label.text()
    groups = run_groups()
    assert len(groups) == 1
    group = groups[0]
    assert re.fullmatch(rf"vnir crop — {re.escape(spec.name)} \(\d\d:\d\d:\d\d\)", group.name()), group.name()
    layers = {node.layer().customProperty(KEY_PROPERTY): node.layer() for node in group.findLayers()}
    assert set(layers) == {"main", "confidence", "entropy", "aux_swir"}
    main = layers["main"].renderer()
    assert main.type() == "paletted"
    assert [c.label for c in main.classes()] == [c.name for c in spec.classes]
    assert [c.color.name() for c in main.classes()] == [c.color for c in spec.classes]
    assert layers["confidence"].renderer().type() == "singlebandpseudocolor"
    assert layers["entropy"].renderer().type() == "singlebandpseudocolor"
    assert layers["aux_swir"].renderer().type() == "multibandcolor"
    assert layers["aux_swir"].bandCount() == 2
    for lyr in layers.values():
        assert lyr.isValid() and lyr.crs() == layer.crs()
        assert Path(lyr.source()).parent.parent == tmp_path / "out"


def test_cancel_leaves_no_layers_and_no_files(loaded_plugin, crop_dir, tiny_model, tmp_path):
    layer = QgsRasterLayer(str(crop_dir / "raleigh_vnir.tif"), "vnir crop")
    out = tmp_path / "out"
    dock = _prepare(loaded_plugin, layer, tiny_model, out)
    layers_before = _run_and_cancel_midway(loaded_plugin, dock)

    assert set(QgsProject.instance().mapLayers()) == layers_before
    assert run_groups() == []
    assert _files(out) == []
    assert list(out.rglob("*")) == []  # not even the run's folder
    assert "Cancelled" in dock.status_label.text()
    assert dock.run_button.isEnabled() and not dock.cancel_button.isEnabled()


def test_cancel_button_cancels(loaded_plugin, crop_dir, tiny_model, tmp_path):
    layer = QgsRasterLayer(str(crop_dir / "raleigh_vnir.tif"), "vnir crop")
    out = tmp_path / "out"
    dock = _prepare(loaded_plugin, layer, tiny_model, out)
    QTest.mouseClick(dock.run_button, Qt.MouseButton.LeftButton)
    assert dock.cancel_button.isEnabled()
    reached, release = _hold_at_first_progress(loaded_plugin.task)  # the run is surely mid-way at the click
    wait_for(reached.is_set)
    QTest.mouseClick(dock.cancel_button, Qt.MouseButton.LeftButton)
    release.set()
    wait_for(lambda: loaded_plugin.task is None)
    assert run_groups() == [] and _files(out) == []
    assert "Cancelled" in dock.status_label.text()


@pytest.mark.parametrize("raster", ["raleigh_swir.tif", "raleigh_landcover.tif"])
def test_wrong_band_count_is_flagged_before_run(loaded_plugin, crop_dir, tiny_model, tmp_path, raster):
    layer = QgsRasterLayer(str(crop_dir / raster), "wrong bands")
    dock = _prepare(loaded_plugin, layer, tiny_model, tmp_path / "out")
    assert dock.mapping is not None and not dock.mapping.ok
    text = dock.mapping_label.text()
    assert f"has {layer.bandCount()} band(s) but the model expects 4" in text
    assert "optical/blue" in text
    assert not dock.run_button.isEnabled()
    QTest.mouseClick(dock.run_button, Qt.MouseButton.LeftButton)
    assert loaded_plugin.task is None
    assert not (tmp_path / "out").exists()


def test_band_mapping_can_be_edited(loaded_plugin, crop_dir, tiny_model, tmp_path):
    layer = QgsRasterLayer(str(crop_dir / "raleigh_vnir.tif"), "vnir crop")
    dock = _prepare(loaded_plugin, layer, tiny_model, tmp_path / "out")
    dock.band_combos[0].setCurrentIndex(dock.band_combos[0].findData(0))
    assert not dock.mapping.ok and "optical/blue" in dock.mapping_label.text()
    assert not dock.run_button.isEnabled()
    dock.band_combos[0].setCurrentIndex(dock.band_combos[0].findData(2))
    assert dock.mapping.ok and "same layer band" in dock.mapping_label.text()
    assert dock.parameters().bands == [2, 2, 3, 4]


def test_run_with_ground_truth_adds_explanation_layers(loaded_plugin, crop_dir, tiny_model, tmp_path):
    layer = QgsRasterLayer(str(crop_dir / "raleigh_vnir.tif"), "vnir crop")
    swir = QgsRasterLayer(str(crop_dir / "raleigh_swir.tif"), "swir truth")
    labels = QgsRasterLayer(str(crop_dir / "raleigh_landcover.tif"), "labels")
    QgsProject.instance().addMapLayers([swir, labels])
    dock = _prepare(loaded_plugin, layer, tiny_model, tmp_path / "out")
    assert set(dock.truth_combos) == {"swir"}
    dock.truth_box.setChecked(True)
    dock.truth_combos["swir"].setLayer(swir)
    dock.labels_combo.setLayer(labels)
    dock.product_checks["sensitivity"].setChecked(False)

    QTest.mouseClick(dock.run_button, Qt.MouseButton.LeftButton)
    wait_for(lambda: loaded_plugin.task is None)

    groups = run_groups()
    assert len(groups) == 1, dock.status_label.text()
    layers = {node.layer().customProperty(KEY_PROPERTY): node.layer() for node in groups[0].findLayers()}
    assert {"main", "aux_swir", "recon_error_swir", "main_error"} <= set(layers)
    assert layers["recon_error_swir"].renderer().type() == "singlebandpseudocolor"
    conf = layers["confidence"].dataProvider()  # Byte on disk; QGIS applies the GeoTIFF's scale: styles see 0..1
    stats = conf.bandStatistics(1)
    assert gdal.Open(conf.dataSourceUri()).GetRasterBand(1).DataType == gdal.GDT_Byte
    assert 0 <= stats.minimumValue < stats.maximumValue <= 1
    assert stats.maximumValue > 0.5
    assert [c.label for c in layers["main_error"].renderer().classes()] == ["correct", "wrong"]
    assert len(layers["agreement"].renderer().classes()) == 4  # the trained model holds an error model
    name = layers["recon_error_swir"].name()
    prefix = "Reconstruction error — swir ["
    assert name.startswith(prefix) and name.endswith("]") and f"— {name[len(prefix):-1]} (" in groups[0].name()
    # The report is one click away; clicking a result layer does not make it the panel's input.
    assert dock.report_button.isVisibleTo(dock) and Path(dock.report_path).is_file()
    dock.follow_layer(layers["agreement"])
    assert dock.layer_combo.currentLayer() == layer


def test_labels_band_and_split_reach_the_run(loaded_plugin, crop_dir, tiny_model, tmp_path):
    from osgeo import gdal

    two = tmp_path / "labels_two_bands.tif"  # band 2 holds the labels, band 1 something else
    gdal.Translate(str(two), str(crop_dir / "raleigh_landcover.tif"), options="-b 1 -b 1")
    layer = QgsRasterLayer(str(crop_dir / "raleigh_vnir.tif"), "vnir crop")
    labels = QgsRasterLayer(str(two), "labels")
    QgsProject.instance().addMapLayer(labels)
    dock = _prepare(loaded_plugin, layer, tiny_model, tmp_path / "out")
    dock.truth_box.setChecked(True)
    dock.labels_combo.setLayer(labels)
    assert dock.labels_band.currentBand() == 1  # the model was trained on band 1
    dock.labels_band.setBand(2)
    dock.split_combo.setCurrentIndex(dock.split_combo.findData("test"))
    job = dock.parameters()
    assert (job.kind, job.labels, job.labels_band, job.split) == ("explain", str(two), 2, "test")


def test_a_real_auxiliary_layer_with_other_bands_is_refused_before_run(loaded_plugin, crop_dir, tiny_model,
                                                                       tmp_path):
    layer = QgsRasterLayer(str(crop_dir / "raleigh_vnir.tif"), "vnir crop")
    dock = _prepare(loaded_plugin, layer, tiny_model, tmp_path / "out")
    dock.truth_box.setChecked(True)
    dock.truth_combos["swir"].setLayer(layer)  # 4 optical bands offered as the 2 SWIR bands
    QTest.mouseClick(dock.run_button, Qt.MouseButton.LeftButton)
    assert loaded_plugin.task is None
    assert "has 4 band(s) but the model's swir modality has 2 (swir1, swir2)" in dock.status_label.text()
    assert not (tmp_path / "out").exists()


def test_ground_truth_ticked_without_raster_is_refused(loaded_plugin, crop_dir, tiny_model, tmp_path):
    layer = QgsRasterLayer(str(crop_dir / "raleigh_vnir.tif"), "vnir crop")
    dock = _prepare(loaded_plugin, layer, tiny_model, tmp_path / "out")
    dock.truth_box.setChecked(True)
    QTest.mouseClick(dock.run_button, Qt.MouseButton.LeftButton)
    assert loaded_plugin.task is None
    assert "no raster is chosen" in dock.status_label.text()


def _polygon_layer(path: Path, crop: Path, cols: tuple[int, int], rows: tuple[int, int]):
    """A GeoPackage polygon in EPSG:4326 covering a pixel window of the crop (a CRS unlike the raster's)."""
    from osgeo import gdal, ogr, osr
    from qgis.core import QgsVectorLayer

    ds = gdal.Open(str(crop))
    x0, dx, _, y0, _, dy = ds.GetGeoTransform()
    src = osr.SpatialReference(wkt=ds.GetProjection())
    dst = osr.SpatialReference()
    dst.ImportFromEPSG(4326)
    for s in (src, dst):
        s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    ring = ogr.Geometry(ogr.wkbLinearRing)
    for c, r in ((cols[0], rows[0]), (cols[1], rows[0]), (cols[1], rows[1]), (cols[0], rows[1]), (cols[0], rows[0])):
        ring.AddPoint_2D(x0 + c * dx, y0 + r * dy)
    poly = ogr.Geometry(ogr.wkbPolygon)
    poly.AddGeometry(ring)
    poly.Transform(osr.CoordinateTransformation(src, dst))
    out = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = out.CreateLayer("aoi", dst, ogr.wkbPolygon)
    feature = ogr.Feature(layer.GetLayerDefn())
    feature.SetGeometry(poly)
    layer.CreateFeature(feature)
    out = None
    vector = QgsVectorLayer(str(path), "aoi", "ogr")
    assert vector.isValid() and vector.crs().authid() == "EPSG:4326"
    return vector


def test_area_of_interest_in_another_crs(loaded_plugin, crop_dir, tiny_model, tmp_path):
    from osgeo import gdal

    crop = crop_dir / "raleigh_vnir.tif"
    layer = QgsRasterLayer(str(crop), "vnir crop")
    aoi = _polygon_layer(tmp_path / "aoi.gpkg", crop, (20, 100), (30, 90))
    QgsProject.instance().addMapLayer(aoi)
    dock = _prepare(loaded_plugin, layer, tiny_model, tmp_path / "out")
    dock.extent_combo.setCurrentIndex(dock.extent_combo.findData("aoi"))
    dock.aoi_combo.setLayer(aoi)
    params = dock.parameters()
    xmin, ymin, xmax, ymax = params.extent
    ext = layer.extent()
    assert ext.xMinimum() < xmin < xmax < ext.xMaximum() and ext.yMinimum() < ymin < ymax < ext.yMaximum()
    assert params.mask == str(tmp_path / "aoi.gpkg")

    QTest.mouseClick(dock.run_button, Qt.MouseButton.LeftButton)
    wait_for(lambda: loaded_plugin.task is None)
    groups = run_groups()
    assert len(groups) == 1, dock.status_label.text()
    main = next(n.layer() for n in groups[0].findLayers() if n.layer().customProperty(KEY_PROPERTY) == "main")
    ds = gdal.Open(main.source())
    # The polygon's bounding box (reprojected, so slightly larger than 80 x 60 px) and not the whole crop.
    assert 80 <= ds.RasterXSize < 192 and 60 <= ds.RasterYSize < 160
    classes = ds.GetRasterBand(1).ReadAsArray()
    assert (classes > 0).any()


def test_engine_error_reaches_the_message_bar(loaded_plugin, qgis_iface, crop_dir, tiny_model, tmp_path):
    from qgis.core import Qgis

    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the output folder should be")
    layer = QgsRasterLayer(str(crop_dir / "raleigh_vnir.tif"), "vnir crop")
    dock = _prepare(loaded_plugin, layer, tiny_model, blocker / "out")
    bar = qgis_iface.messageBar()
    bar.clear_messages()
    QTest.mouseClick(dock.run_button, Qt.MouseButton.LeftButton)
    wait_for(lambda: loaded_plugin.task is None)
    critical = " ".join(bar.get_messages(Qgis.MessageLevel.Critical))
    assert "cannot create output folder" in critical and "choose another" in critical
    assert "cannot create output folder" in dock.status_label.text()
    assert run_groups() == []


def test_canvas_extent_is_transformed_to_the_layer_crs(loaded_plugin, qgis_iface, crop_dir, tiny_model, tmp_path):
    from qgis.core import QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsRectangle

    layer = QgsRasterLayer(str(crop_dir / "raleigh_vnir.tif"), "vnir crop")
    dock = _prepare(loaded_plugin, layer, tiny_model, tmp_path / "out")
    canvas = qgis_iface.mapCanvas()
    wgs84 = QgsCoordinateReferenceSystem("EPSG:4326")
    canvas.setDestinationCrs(wgs84)
    full = layer.extent()
    inner = QgsRectangle(full.xMinimum() + 0.25 * full.width(), full.yMinimum() + 0.25 * full.height(),
                         full.xMaximum() - 0.25 * full.width(), full.yMaximum() - 0.25 * full.height())
    to_wgs = QgsCoordinateTransform(layer.crs(), wgs84, QgsProject.instance())
    canvas.setExtent(to_wgs.transformBoundingBox(inner))
    dock.extent_combo.setCurrentIndex(dock.extent_combo.findData("canvas"))
    xmin, ymin, xmax, ymax = dock.parameters().extent
    shown = canvas.extent()  # the canvas may widen the extent to its aspect ratio
    back = QgsCoordinateTransform(wgs84, layer.crs(), QgsProject.instance()).transformBoundingBox(shown)
    expected = back.intersect(full)
    assert abs(xmin - expected.xMinimum()) < 1e-6 * full.width() + 1e-6
    assert abs(ymax - expected.yMaximum()) < 1e-6 * full.height() + 1e-6
    assert full.xMinimum() <= xmin < xmax <= full.xMaximum()
    assert (xmax - xmin) < full.width() or (ymax - ymin) < full.height()


def test_bundled_default_model_is_preselected_and_runs_on_the_real_sample(loaded_plugin, sample_config, tmp_path):
    from plugin.core.paths import default_model

    model = default_model()
    assert model is not None, "resources/default_model.mtl.onnx is missing; run make default-model"
    dock = loaded_plugin.dock.run_page
    assert dock.model_file.filePath() == str(model)
    assert dock.recent_combo.itemData(0) == str(model)
    layer = QgsRasterLayer(str(sample_config.parent / "raleigh_vnir.tif"), "raleigh_vnir")
    dock = _prepare(loaded_plugin, layer, model, tmp_path / "out")
    assert dock.mapping.ok and dock.mapping.by_name
    QTest.mouseClick(dock.run_button, Qt.MouseButton.LeftButton)
    wait_for(lambda: loaded_plugin.task is None)
    groups = run_groups()
    assert len(groups) == 1, dock.status_label.text()
    layers = {n.layer().customProperty(KEY_PROPERTY): n.layer() for n in groups[0].findLayers()}
    main = layers["main"]
    assert (main.width(), main.height()) == (layer.width(), layer.height())
    assert [c.label for c in main.renderer().classes()][:2] == ["developed", "agriculture"]


def test_unload_during_a_run_cancels_it_cleanly(qgis_iface, qgis_new_project, crop_dir, tiny_model, tmp_path):
    import plugin
    from qgis.core import QgsApplication, QgsTask

    from .conftest import flush_deletions

    instance = plugin.classFactory(qgis_iface)
    instance.initGui()
    layer = QgsRasterLayer(str(crop_dir / "raleigh_vnir.tif"), "vnir crop")
    out = tmp_path / "out"
    dock = _prepare(instance, layer, tiny_model, out)
    dock.tile_spin.setValue(32)
    dock.overlap_spin.setValue(0)
    dock.batch_spin.setValue(1)
    QTest.mouseClick(dock.run_button, Qt.MouseButton.LeftButton)
    task = instance.task
    assert task is not None
    reached, release = _hold_at_first_progress(task)  # unload while the run is surely mid-way
    wait_for(reached.is_set)
    ended = []
    task.taskTerminated.connect(lambda: ended.append(QgsTask.TaskStatus.Terminated))
    task.taskCompleted.connect(lambda: ended.append(QgsTask.TaskStatus.Complete))
    instance.unload()
    release.set()
    flush_deletions()
    manager = QgsApplication.taskManager()
    wait_for(lambda: bool(ended) and manager.countActiveTasks() == 0)
    assert ended == [QgsTask.TaskStatus.Terminated] and run_groups() == [] and _files(out) == []


def test_export_dialog_lists_the_runs_layers(loaded_plugin, crop_dir, tiny_model, tmp_path):
    from plugin.gui.export_dialog import ExportDialog

    layer = QgsRasterLayer(str(crop_dir / "raleigh_vnir.tif"), "vnir crop")
    dock = _prepare(loaded_plugin, layer, tiny_model, tmp_path / "out")
    QTest.mouseClick(dock.run_button, Qt.MouseButton.LeftButton)
    wait_for(lambda: loaded_plugin.task is None)
    dialog = ExportDialog()
    assert dialog.run_combo.count() == 1
    dialog.folder.setFilePath(str(tmp_path / "export"))
    dialog.cog_check.setChecked(True)
    dialog.layer_list.item(0).setCheckState(Qt.CheckState.Unchecked)
    sources, folder, cog, report = dialog.selection()
    assert folder == str(tmp_path / "export") and cog and report is None
    assert len(sources) == dialog.layer_list.count() - 1 == 3
    assert all(Path(p).exists() for p in sources.values())


def test_cancel_with_ground_truth_leaves_nothing(loaded_plugin, crop_dir, tiny_model, tmp_path):
    layer = QgsRasterLayer(str(crop_dir / "raleigh_vnir.tif"), "vnir crop")
    swir = QgsRasterLayer(str(crop_dir / "raleigh_swir.tif"), "swir truth")
    QgsProject.instance().addMapLayer(swir)
    out = tmp_path / "out"
    dock = _prepare(loaded_plugin, layer, tiny_model, out)
    dock.truth_box.setChecked(True)
    dock.truth_combos["swir"].setLayer(swir)
    dock.product_checks["sensitivity"].setChecked(False)
    layers_before = _run_and_cancel_midway(loaded_plugin, dock)
    assert set(QgsProject.instance().mapLayers()) == layers_before
    assert run_groups() == [] and _files(out) == []
    assert "Cancelled" in dock.status_label.text()


def test_fast_precision_runs_the_int8_twin_and_says_what_it_costs(loaded_plugin, sample_config, tiny_model,
                                                                  tmp_path):
    from mtl_core.engine.runtime import read_spec

    from plugin.core.paths import default_model

    model = default_model()
    twin = model.with_name("default_model.int8.mtl.onnx")
    assert twin.is_file(), "run make default-model: it writes the int8 twin too"
    layer = QgsRasterLayer(str(sample_config.parent / "raleigh_vnir.tif"), "raleigh_vnir")
    dock = _prepare(loaded_plugin, layer, model, tmp_path / "out")
    fast = dock.precision_combo.model().item(1)
    assert fast.isEnabled()
    measured = read_spec(twin).training["quantization"]["measured"]
    assert f"{measured['same_class']:.1%}" in fast.toolTip() and f"{measured['speedup']:.1f}×" in fast.toolTip()
    dock.precision_combo.setCurrentIndex(1)
    jobs = []
    dock.runRequested.connect(jobs.append)
    QTest.mouseClick(dock.run_button, Qt.MouseButton.LeftButton)
    wait_for(lambda: loaded_plugin.task is None)
    assert [j.model for j in jobs] == [str(twin)] and len(run_groups()) == 1, dock.status_label.text()
    # A model without a twin offers exact only, and a run uses the file itself.
    dock.model_file.setFilePath(str(tiny_model))
    assert not dock.precision_combo.model().item(1).isEnabled() and dock.precision_combo.currentIndex() == 0
    assert dock.run_model() == str(tiny_model)


def test_an_input_unlike_the_training_data_is_a_warning_not_a_success(loaded_plugin, qgis_iface, crop_dir,
                                                                      tiny_model, tmp_path):
    from qgis.core import Qgis

    gdal.Translate(str(tmp_path / "reflectance.tif"), str(crop_dir / "raleigh_vnir.tif"),
                   scaleParams=[[0, 255, 0, 10200]], outputType=gdal.GDT_Float32).FlushCache()
    layer = QgsRasterLayer(str(tmp_path / "reflectance.tif"), "reflectance x 10000")
    dock = _prepare(loaded_plugin, layer, tiny_model, tmp_path / "out")
    bar = qgis_iface.messageBar()
    bar.clear_messages()
    QTest.mouseClick(dock.run_button, Qt.MouseButton.LeftButton)
    wait_for(lambda: loaded_plugin.task is None)
    assert len(run_groups()) == 1  # the layers are there
    warning = " ".join(bar.get_messages(Qgis.MessageLevel.Warning))
    assert "unlike the model's training data" in warning and "unlike the model's training data" in \
        dock.status_label.text()
    assert not bar.get_messages(Qgis.MessageLevel.Success)


def test_propose_sites_after_a_run_adds_an_editable_styled_layer(loaded_plugin, crop_dir, tiny_model, tmp_path):
    layer = QgsRasterLayer(str(crop_dir / "raleigh_vnir.tif"), "vnir crop")
    swir = QgsRasterLayer(str(crop_dir / "raleigh_swir.tif"), "swir truth")
    QgsProject.instance().addMapLayer(swir)
    dock = _prepare(loaded_plugin, layer, tiny_model, tmp_path / "out")
    assert not dock.sites_button.isEnabled()  # nothing to propose from before a run
    dock.truth_box.setChecked(True)
    dock.truth_combos["swir"].setLayer(swir)
    dock.product_checks["sensitivity"].setChecked(False)
    QTest.mouseClick(dock.run_button, Qt.MouseButton.LeftButton)
    wait_for(lambda: loaded_plugin.task is None)
    assert dock.sites_button.isEnabled(), dock.status_label.text()

    dock.sites_count.setValue(3)
    QTest.mouseClick(dock.sites_button, Qt.MouseButton.LeftButton)
    wait_for(lambda: loaded_plugin.sites_task is None)
    group = run_groups()[0]
    sites = group.children()[0].layer()  # at the top of the run's group
    assert sites.customProperty(KEY_PROPERTY) == "sites" and sites.crs() == layer.crs()
    assert 1 <= sites.featureCount() <= 3 and sites.renderer().type() == "categorizedSymbol"
    assert sites.name().startswith("Sites to label (") and sites.labelsEnabled()
    assert Path(sites.source().split("|")[0]).parent == Path(group.customProperty("mtl_explain/run_dir"))
    assert sites.startEditing()  # ready to edit: the user fills the class of a site
    feature = next(sites.getFeatures())
    assert sites.changeAttributeValue(feature.id(), sites.fields().indexOf("class"), "forest")
    assert sites.commitChanges()
    assert next(sites.getFeatures())["class"] == "forest"


def test_the_run_page_fits_a_narrow_dock_without_being_cut(loaded_plugin, crop_dir, tiny_model, tmp_path):
    """With a model and its band mapping shown, the page must not be wider than a 430 px dock (it scrolls only
    down): combos shrink to the panel, product checkboxes span the form."""
    layer = QgsRasterLayer(str(crop_dir / "raleigh_vnir.tif"), "a raster layer with a rather long name indeed")
    dock = _prepare(loaded_plugin, layer, tiny_model, tmp_path / "out")
    dock.truth_box.setChecked(True)
    QTest.qWait(50)
    assert dock.body.minimumSizeHint().width() <= 420
