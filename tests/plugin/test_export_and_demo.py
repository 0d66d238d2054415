"""Exporting a run's rasters (GeoTIFF and COG), and the demo project written by ``make demo``."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from osgeo import gdal
from qgis.core import QgsProject

from plugin.core.export import ExportTask, export_rasters

from .conftest import ROOT, wait_for


def _predict(crop_dir, model, out):
    from mtl_core.engine import PredictOptions, predict

    out.mkdir()
    return predict(model, crop_dir / "raleigh_vnir.tif", out, PredictOptions(device="cpu")).outputs


def _geotiff_palette(path: str) -> list[tuple[int, str, str]]:
    ds = gdal.Open(path)  # kept: a band outlives no dataset
    band = ds.GetRasterBand(1)
    table, names = band.GetRasterColorTable(), band.GetCategoryNames()
    return [(v, names[v], "#%02x%02x%02x" % table.GetColorEntry(v)[:3]) for v in range(len(names))
            if table.GetColorEntry(v)[3] and names[v]]


def _qml_palette(name: str) -> list[tuple[int, str, str]]:
    import xml.etree.ElementTree as ET

    entries = ET.parse(ROOT / "resources" / "styles" / f"{name}.qml").iter("paletteEntry")
    return [(int(e.get("value")), e.get("label"), e.get("color")) for e in entries]


def _layer_palette(layer) -> list[tuple[int, str, str]]:
    return [(int(c.value), c.label, c.color.name()) for c in layer.renderer().classes()]


def test_export_geotiff_and_cog(crop_dir, tiny_model, tmp_path):
    outputs = {k: str(v) for k, v in _predict(crop_dir, tiny_model, tmp_path / "run").items()}
    report = tmp_path / "run" / "report.html"
    report.write_text("<html>report</html>")
    written = export_rasters(outputs, tmp_path / "gtiff", cog=False, report=report)
    assert {p.name for p in written} == {p.split("/")[-1] for p in outputs.values()} | {"report.html"}
    cog = export_rasters({"main": outputs["main"]}, tmp_path / "cog", cog=True)[0]
    ds = gdal.Open(str(cog))
    assert ds.GetMetadataItem("LAYOUT", "IMAGE_STRUCTURE") == "COG"
    info = gdal.Info(ds)  # (GetCategoryNames() of these Python bindings returns None; gdalinfo reads the names)
    assert "1: developed" in info and "Color Table" in info


def test_export_task_runs_in_the_background(qgis_app, crop_dir, tiny_model, tmp_path):
    from qgis.core import QgsApplication

    outputs = {k: str(v) for k, v in _predict(crop_dir, tiny_model, tmp_path / "run").items()}
    ended = []
    task = ExportTask(outputs, str(tmp_path / "export"), True, None, lambda ok, t: ended.append((ok, list(t.written))))
    QgsApplication.taskManager().addTask(task)
    wait_for(lambda: bool(ended))
    ok, written = ended[0]
    assert ok and len(written) == len(outputs) and all(p.exists() for p in written)


def test_demo_project_has_every_explanation_layer_the_input_below_and_a_saved_extent(crop_dir, tiny_model, tmp_path):
    from mtl_core.jobs import Job, run_job

    from plugin.core.layers import report_of, run_groups

    raster = crop_dir / "raleigh_vnir.tif"
    out = tmp_path / "demo"
    out.mkdir()
    result = run_job(Job(kind="explain", model=str(tiny_model), raster=str(raster), out=str(out), device="cpu",
                         products=["main", "confidence", "entropy", "aux", "sensitivity"],
                         aux_truth={"swir": str(crop_dir / "raleigh_swir.tif")},
                         labels=str(crop_dir / "raleigh_landcover.tif")))
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "demo_project.py"), str(tiny_model), str(raster),
                           str(out)], capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    qgz = out / "demo.qgz"
    assert zipfile.is_zipfile(qgz)
    project = QgsProject()
    assert project.read(str(qgz))
    layers = {lyr.source(): lyr for lyr in project.mapLayers().values()}
    assert str(raster) in layers and layers[str(raster)].renderer().type() == "multibandcolor"
    assert {"recon_error_swir", "main_error", "error_score", "agreement", "sensitivity",
            "confident_flagged"} <= set(result.outputs)
    for key, path in result.outputs.items():
        assert path in layers, key
    main = layers[result.outputs["main"]].renderer()
    assert main.type() == "paletted" and main.classes()[0].label == "developed"
    assert layers[result.outputs["aux_swir"]].renderer().type() == "multibandcolor"
    assert layers[result.outputs["agreement"]].renderer().type() == "paletted"
    for key in ("agreement", "main_error", "confident_flagged"):  # one palette: GeoTIFF = QML = layer in QGIS
        assert _geotiff_palette(result.outputs[key]) == _qml_palette(key) == _layer_palette(
            layers[result.outputs[key]]), key
    # Every output has its style beside it: added by hand, or exported, it opens styled.
    from qgis.core import QgsRasterLayer

    assert all(Path(p).with_suffix(".qml").is_file() for p in result.outputs.values())
    assert QgsRasterLayer(result.outputs["confidence"], "by hand").renderer().type() == "singlebandpseudocolor"
    copies = export_rasters({"confidence": result.outputs["confidence"]}, tmp_path / "export")
    assert sorted(p.name for p in copies) == ["raleigh_vnir_confidence.qml", "raleigh_vnir_confidence.tif"]
    assert QgsRasterLayer(str(copies[0]), "exported").renderer().type() == "singlebandpseudocolor"
    root = project.layerTreeRoot()
    assert root.children()[-1].layer().source() == str(raster)  # the input at the bottom
    groups = run_groups(project)
    assert len(groups) == 1 and report_of(groups[0]) == out / "raleigh_vnir_report.html"
    extent = project.viewSettings().defaultViewExtent()
    assert extent.crs() == layers[str(raster)].crs()
    assert extent.contains(layers[str(raster)].extent()) and layers[str(raster)].extent().contains(extent)


def test_two_runs_of_the_same_input_get_distinct_groups(qgis_new_project, crop_dir, tiny_model, tmp_path):
    from mtl_core.engine.runtime import read_spec

    from plugin.core.layers import add_run_layers
    from plugin.core.runner import RunOutcome

    outputs = _predict(crop_dir, tiny_model, tmp_path / "run")
    outcome = RunOutcome(outputs={k: str(v) for k, v in outputs.items()}, run_dir=str(tmp_path / "run"),
                         spec=read_spec(tiny_model).to_dict())
    first, second = (add_run_layers(outcome, "vnir").name() for _ in range(2))
    assert first != second


def test_a_group_name_taken_in_the_same_second_gets_a_number(qgis_new_project):
    import datetime

    from plugin.core.layers import group_name

    when, spec = datetime.datetime(2026, 1, 2, 3, 4, 5), {"name": "mtl"}
    first = group_name("vnir", spec, qgis_new_project, when)
    qgis_new_project.layerTreeRoot().insertGroup(0, first)
    second = group_name("vnir", spec, qgis_new_project, when)
    assert first == "vnir — mtl (03:04:05)" and second == first + " #2"


def test_export_names_what_it_would_replace(crop_dir, tiny_model, tmp_path):
    from plugin.core.export import existing_targets

    outputs = {k: str(v) for k, v in _predict(crop_dir, tiny_model, tmp_path / "run").items()}
    assert existing_targets(outputs, tmp_path / "export") == []
    export_rasters({"main": outputs["main"]}, tmp_path / "export")
    assert [p.name for p in existing_targets(outputs, tmp_path / "export")] == ["raleigh_vnir_classes.tif"]
    assert not [p for p in (tmp_path / "export").iterdir() if p.name.startswith(".")]  # no temporaries left
