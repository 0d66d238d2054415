"""The plugin zip from ``make package``: its contents, the plugin repository's checks, and a fresh-profile install
that qgis_process loads and runs."""

from __future__ import annotations

import json
import os
import re
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from osgeo import gdal

from mtl_core.io.labels import polygons_from_raster
from mtl_core.jobs import dataset_path
from mtl_core.modelfile import read_spec

from .conftest import ROOT, needs_worker

sys.path.insert(0, str(ROOT / "tools"))
import check_package  # noqa: E402
import deploy  # noqa: E402

QGIS_PROCESS = "/usr/bin/qgis_process.bin"
#: The layers a default predict run of the tiny model returns.
PREDICTED = ("MAIN", "CONFIDENCE", "ENTROPY", "AUX_SWIR")


def test_zip_holds_the_plugin_and_nothing_else(plugin_zip):
    with zipfile.ZipFile(plugin_zip) as zf:
        names = zf.namelist()
    assert all(n.startswith("mtl_explain/") for n in names)
    for required in ("__init__.py", "mtl_explain_plugin.py", "metadata.txt", "LICENSE", "mtl_core/engine/run.py",
                     "core/task.py", "gui/dock.py", "processing/provider.py", "resources/icon.svg",
                     "resources/styles/agreement.qml", "resources/default_model.mtl.onnx", "docs/plugin.md",
                     "docs/images/panel_after_run.png"):
        assert f"mtl_explain/{required}" in names, required
    assert not [n for n in names if "/tests/" in n or "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in names if "/." in n]
    size = plugin_zip.stat().st_size
    assert size < 20 * 1024 * 1024, f"zip is {size / 1e6:.1f} MB"


def test_zip_passes_the_plugin_repository_scan(plugin_zip):
    problems = check_package.check(plugin_zip)
    assert problems == [], "\n".join(problems)


def test_check_package_catches_bad_zips(tmp_path):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        info = zipfile.ZipInfo("bad/__init__.py")
        info.external_attr = 0o755 << 16
        zf.writestr(info, "x = eval(input())  # noqa\n")  # bandit B307, medium severity
        zf.writestr("bad/.hidden", "x")
        zf.writestr("bad/run.sh", "echo\n")
        zf.writestr("bad/gui.py", "from qgis.PyQt.QtCore import Qt\nALIGN = Qt.AlignLeft\n")
        zf.writestr("bad/metadata.txt", "[general]\nname=Bad\n")
    problems = "\n".join(check_package.check(bad))
    for expected in ("executable .py", "hidden file", "forbidden file type", "required field 'email'", "bandit",
                     "qgisMaximumVersion=4.99", "supportsQt6=True", "gui.py:2: Qt.AlignLeft"):
        assert expected in problems


def test_metadata_has_every_required_field():
    assert check_package.check_metadata(ROOT) == []


def _fresh_profile(plugin_zip: Path, tmp_path: Path) -> dict[str, str]:
    """The zip deployed into a fresh profile; the environment that makes qgis_process use it."""
    profile = tmp_path / "config" / "profiles" / "default"
    folder = deploy.deploy(plugin_zip, profile)
    assert (folder / "metadata.txt").exists()
    assert check_package.check_metadata(folder) == []
    return dict(os.environ, QT_QPA_PLATFORM="offscreen", QGIS_CUSTOM_CONFIG_PATH=str(tmp_path / "config"),
                PYTHONPATH=os.pathsep.join(site.getsitepackages()))  # torch & co. from this environment


@pytest.mark.slow
def test_zip_installs_into_a_fresh_profile_and_runs_in_qgis_process(plugin_zip, crop_dir, tiny_model, tmp_path):
    env = _fresh_profile(plugin_zip, tmp_path)
    listed = subprocess.run([QGIS_PROCESS, "plugins"], env=env, capture_output=True, text=True, check=False,
                            timeout=300)
    assert "* mtl_explain" in listed.stdout, listed.stdout + listed.stderr

    out = tmp_path / "out"
    done = subprocess.run(
        [QGIS_PROCESS, "--json", "run", "mtl_explain:predict", "--",
         f"INPUT={crop_dir / 'raleigh_vnir.tif'}", f"MODEL={tiny_model}", "DEVICE=1", f"OUTPUT_FOLDER={out}"],
        env=env, capture_output=True, text=True, check=False, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(done.stdout[done.stdout.index("{"):])["results"]
    assert results["DEVICE_USED"] == "cpu"
    for key in PREDICTED:
        assert Path(results[key]).is_file() and Path(results[key]).parent.parent == out
    if os.environ.get("MTL_TEST_REFERENCE"):  # QGIS 3.44 (chroot): the host's run of the same model, same pixels
        for key in PREDICTED:
            host = gdal.Open(str(Path(os.environ["MTL_TEST_REFERENCE"]) / Path(results[key]).name))
            assert (gdal.Open(results[key]).ReadAsArray() == host.ReadAsArray()).all(), key

    # the same run as shards on a Dask LocalCluster of 2 processes, started by the worker process
    sharded = subprocess.run(
        [QGIS_PROCESS, "--json", "run", "mtl_explain:predict", "--",
         f"INPUT={crop_dir / 'raleigh_vnir.tif'}", f"MODEL={tiny_model}", "DEVICE=1", "WORKERS=2",
         f"OUTPUT_FOLDER={out}"], env=env, capture_output=True, text=True, check=False, timeout=600)
    assert sharded.returncode == 0, sharded.stdout[-3000:] + sharded.stderr[-3000:]
    again = json.loads(sharded.stdout[sharded.stdout.index("{"):])["results"]
    assert again["RUN_FOLDER"] != results["RUN_FOLDER"]
    for key in PREDICTED:
        assert (gdal.Open(again[key]).ReadAsArray() == gdal.Open(results[key]).ReadAsArray()).all(), key
    # and with VRT=true: each layer a VRT over the shards' files, the same pixels
    mosaic = subprocess.run(
        [QGIS_PROCESS, "--json", "run", "mtl_explain:predict", "--",
         f"INPUT={crop_dir / 'raleigh_vnir.tif'}", f"MODEL={tiny_model}", "DEVICE=1", "WORKERS=2", "VRT=true",
         f"OUTPUT_FOLDER={out}"], env=env, capture_output=True, text=True, check=False, timeout=600)
    assert mosaic.returncode == 0, mosaic.stdout[-3000:] + mosaic.stderr[-3000:]
    vrts = json.loads(mosaic.stdout[mosaic.stdout.index("{"):])["results"]
    for key in PREDICTED:
        assert vrts[key].endswith(".vrt"), vrts[key]
        assert (gdal.Open(vrts[key]).ReadAsArray() == gdal.Open(results[key]).ReadAsArray()).all(), key

    # corrupt rasters: the file and GDAL's reason, not only QGIS's bare parameter message (qgis_process echoes
    # the inputs, so the file's name alone proves nothing): one GDAL cannot open (a header cut short), one it opens
    # but cannot read (its tiles or strips cut short)
    for size, reason in ((100, r"'[^']*corrupt-100\.tif' is not a raster GDAL can open \(.*TIFF"),
                         (2000, r"cannot read band 1 of '[^']*corrupt-2000\.tif'.*TIFFReadEncoded(Tile|Strip)")):
        corrupt = tmp_path / f"corrupt-{size}.tif"
        corrupt.write_bytes((crop_dir / "raleigh_vnir.tif").read_bytes()[:size])
        refused = subprocess.run(
            [QGIS_PROCESS, "run", "mtl_explain:predict", "--", f"INPUT={corrupt}", f"MODEL={tiny_model}",
             f"OUTPUT_FOLDER={tmp_path / 'refused'}"], env=env, capture_output=True, text=True, check=False,
            timeout=300)
        said = refused.stdout + refused.stderr
        assert refused.returncode != 0 and re.search(reason, said, re.S), said[-2000:]
        assert not list((tmp_path / "refused").rglob("*"))  # QGIS makes the destination folder; nothing in it

    # explain with the real auxiliary raster and the labels: every explanation layer and the report
    explained = subprocess.run(
        [QGIS_PROCESS, "--json", "run", "mtl_explain:explain", "--", f"INPUT={crop_dir / 'raleigh_vnir.tif'}",
         f"MODEL={tiny_model}", "DEVICE=1", f"AUX_TRUTH={crop_dir / 'raleigh_swir.tif'}",
         f"LABELS={crop_dir / 'raleigh_landcover.tif'}", "SENSITIVITY=false",
         f"OUTPUT_FOLDER={tmp_path / 'explained'}"],
        env=env, capture_output=True, text=True, check=False, timeout=600)
    assert explained.returncode == 0, explained.stdout[-3000:] + explained.stderr[-3000:]
    layers = json.loads(explained.stdout[explained.stdout.index("{"):])["results"]
    for key in ("MAIN", "MAIN_ERROR", "AGREEMENT", "ERROR_SCORE", "REPORT"):
        assert Path(layers[key]).is_file(), key
    assert (gdal.Open(layers["MAIN"]).ReadAsArray() == gdal.Open(results["MAIN"]).ReadAsArray()).all()
    assert json.loads(Path(layers["REPORT"]).with_suffix(".json").read_text())["detectors"]


@needs_worker
@pytest.mark.slow
def test_train_from_layers_through_qgis_process(plugin_zip, crop_dir, tmp_path):
    """Train from map layers: polygon labels in another CRS (WGS 84) with a text class field, the worker in the
    Python QGIS runs (no Worker Python set in this fresh profile)."""
    env = _fresh_profile(plugin_zip, tmp_path)
    polygons = polygons_from_raster(crop_dir / "raleigh_landcover.tif", tmp_path / "landcover.gpkg",
                                    {1: "developed", 2: "agriculture", 3: "herbaceous", 4: "shrubland", 5: "forest",
                                     6: "water", 7: "sediment"}, epsg=4326)
    model = tmp_path / "from_layers.mtl.safetensors"
    trained = subprocess.run(
        [QGIS_PROCESS, "--json", "run", "mtl_explain:train", "--", f"INPUT={crop_dir / 'raleigh_vnir.tif'}",
         f"AUX={crop_dir / 'raleigh_swir.tif'}", "AUX_NAMES=swir", f"LABELS={polygons}", "LABELS_FIELD=class",
         "STEPS=2", "BATCH_SIZE=2", "ENCODER_DEPTH=3", "DEVICE=1", f"OUTPUT={model}"],
        env=env, capture_output=True, text=True, check=False, timeout=600)
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    spec = read_spec(model)
    assert "forest" in [c.name for c in spec.classes] and [m.name for m in spec.aux] == ["swir"]
    assert spec.training["data"]["labels_field"] == "class"
    assert dataset_path(model).is_file()
