"""The real QGIS desktop under Xvfb, with the packaged plugin in a fresh profile: what a user clicks.

An offscreen ``QgsApplication`` never loads Mesa, so it cannot show the crash this guards against: the
desktop loads Debian's libLLVM through Mesa, and importing torch's stack (triton's own LLVM) inside
it kills QGIS with signal 11. Here torch *is* importable in QGIS's Python (the test environment's
site-packages are on its path, as for a user who pip-installed it), so any import of it would crash
the session. One QGIS session runs ``desktop_script.py``; the tests below read its JSON report.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, needs_worker

sys.path.insert(0, str(ROOT / "tools"))
import deploy  # noqa: E402

pytestmark = pytest.mark.slow
QGIS = "/usr/bin/qgis.bin"


def _demo_project(crop_dir: Path, folder: Path) -> Path:
    """``make demo``'s project, built the same way on the crop with the bundled model."""
    from mtl_core.jobs import Job, run_job

    folder.mkdir()
    model = ROOT / "resources" / "default_model.mtl.onnx"
    raster = crop_dir / "raleigh_vnir.tif"
    run_job(Job(kind="explain", model=str(model), raster=str(raster), out=str(folder),
                aux_truth={"swir": str(crop_dir / "raleigh_swir.tif")}, labels=str(crop_dir / "raleigh_landcover.tif")))
    subprocess.run([sys.executable, str(ROOT / "tools" / "demo_project.py"), str(model), str(raster), str(folder)],
                   check=True, capture_output=True)
    return folder / "demo.qgz"


@pytest.fixture(scope="module")
def desktop(plugin_zip, sample_config, crop_dir, tmp_path_factory) -> dict:
    """Run the desktop session once; its report (``desktop.json``) plus QGIS's exit status and log."""
    if not shutil.which("xvfb-run") or not Path(QGIS).exists():
        pytest.fail("the desktop test needs xvfb-run and qgis.bin (apt-get install xvfb qgis); run make setup")
    base = tmp_path_factory.mktemp("desktop")
    profiles, out = base / "profiles", base / "out"
    out.mkdir()
    # A fresh profile with nothing set by hand: the worker's Python is the plugin's own choice. QGIS is started from
    # a shell whose first python3 is another Python's launcher script, as pyenv's shims are: inside the desktop that
    # one is sys.executable. It cannot see QGIS's GDAL (-I -S: no PYTHONPATH, no site-packages, as a pyenv Python never
    # reads QGIS's packages), so a worker started with it fails.
    deploy.deploy(plugin_zip, profiles / "profiles" / "default")
    decoy = base / "decoy"
    (decoy / "bin").mkdir(parents=True)
    shim = decoy / "bin" / "python3"
    shim.write_text('#!/bin/sh\nexec /usr/bin/python3 -I -S "$@"\n')
    shim.chmod(0o755)
    assert subprocess.run([str(shim), "-c", "import osgeo"], capture_output=True, check=False).returncode != 0
    demo = _demo_project(crop_dir, base / "demo")
    from mtl_core.io.labels import polygons_from_raster

    polygons = polygons_from_raster(crop_dir / "raleigh_landcover.tif", base / "polygons.gpkg",
                                    {1: "developed", 2: "agriculture", 3: "herbaceous", 4: "shrubland", 5: "forest",
                                     6: "water"}, keep=0.5, epsg=4326)
    env = dict(os.environ, MTL_DESKTOP_RASTER=str(sample_config.parent / "raleigh_vnir.tif"),
               MTL_DESKTOP_CONFIG=str(crop_dir / "crop.yaml"), MTL_DESKTOP_OUT=str(out), MTL_DESKTOP_DEMO=str(demo),
               MTL_DESKTOP_POLYGONS=str(polygons),
               PYTHONPATH=os.pathsep.join(site.getsitepackages()),
               PATH=f"{decoy / 'bin'}{os.pathsep}{os.environ['PATH']}")
    env.pop("QT_QPA_PLATFORM", None)  # the real, windowed platform, on the Xvfb display
    done = subprocess.run(
        ["xvfb-run", "-a", "-s", "-screen 0 1366x768x24", QGIS, "--profiles-path", str(profiles), "--nologo",
         "--noversioncheck", "--code", str(Path(__file__).with_name("desktop_script.py"))],
        env=env, capture_output=True, text=True, check=False, timeout=900)
    report_file = out / "desktop.json"
    report = json.loads(report_file.read_text()) if report_file.exists() else {}
    return {"rc": done.returncode, "log": (done.stdout + done.stderr)[-4000:], "out": out, "decoy": decoy, **report}


def test_the_worker_python_is_qgis_own_not_the_first_on_path(desktop):
    """sys.executable inside the desktop is the decoy (the first python3 on PATH); the worker runs QGIS's own."""
    python = desktop["python"]
    assert python["sys_executable"].startswith(str(desktop["decoy"])), python
    assert Path(python["worker"]).parent == Path("/usr/bin") and python["tried"] == [], python


def test_qgis_exits_normally_and_never_imports_torch(desktop):
    assert desktop["rc"] == 0 and "steps" in desktop, desktop["log"]
    assert desktop["error"] is None, desktop["error"]
    assert desktop["heavy_modules"] == []


def test_panel_run_with_the_defaults_adds_styled_layers(desktop):
    assert desktop["panel_visible"] and desktop["run_enabled"], desktop
    assert desktop["default_model"].endswith("default_model.mtl.onnx")
    assert desktop["layers"] == {"main": "paletted", "confidence": "singlebandpseudocolor",
                                 "entropy": "singlebandpseudocolor", "aux_swir": "multibandcolor"}, desktop["status"]
    assert (desktop["out"] / "panel.png").stat().st_size > 10_000
    assert (desktop["out"] / "panel_during.png").stat().st_size > 10_000
    assert desktop["cancel_enabled_during"] and 0 <= desktop["progress_during"] < 100
    assert desktop["footer_visible"], desktop["window"]  # Run and progress in view at 1366 x 768


@needs_worker
def test_train_from_the_toolbox_writes_the_model_in_the_worker(desktop):
    assert desktop["train"] == {"ok": True, "max_progress": 100.0, "file": True}


@needs_worker
def test_cancelled_train_leaves_no_file_and_no_worker(desktop):
    cancel = desktop["cancel"]
    assert desktop["workers_while_training"] == 1
    assert cancel["ok"] is False and 0 < cancel["max_progress"] < 100
    assert cancel["left"] == [] and cancel["workers_after"] == []


@needs_worker
def test_train_page_watches_writes_selects_and_explains(desktop):
    page = desktop["train_page"]
    assert page["points_during"] > 40 and page["points"] > page["points_during"], page
    assert page["model"] and page["dataset"] and page["selected"], page["status"]
    assert page["results"][0] == "mtl" and all(0 <= float(v) <= 1 for v in page["results"][2:4])
    assert {"main", "agreement", "main_error", "aux_swir"} <= set(page["explained"]), page
    assert (desktop["out"] / "train_page_during.png").stat().st_size > 10_000


def test_propose_sites_after_a_run_adds_a_styled_editable_layer(desktop):
    sites = desktop["sites"]
    assert sites["enabled"] and 1 <= sites["count"] <= 6, sites
    assert sites["renderer"] == "categorizedSymbol" and sites["labels"] and sites["first_in_group"], sites
    assert sites["editable"] and {"rank", "kind", "reason", "score", "predicted", "class"} <= set(sites["fields"])
    assert (desktop["out"] / "sites.png").stat().st_size > 10_000


def test_demo_project_opens_on_the_scene_with_the_input_at_the_bottom(desktop, crop_dir):
    from osgeo import gdal

    demo = desktop["demo"]
    ds = gdal.Open(str(crop_dir / "raleigh_vnir.tif"))
    x0, dx, _, y0, _, dy = ds.GetGeoTransform()
    xmin, ymin, xmax, ymax = demo["extent"]
    x1, y1 = x0 + dx * ds.RasterXSize, y0 + dy * ds.RasterYSize
    assert demo["crs"] == "EPSG:3358"
    # The canvas shows the whole scene and not much more (the window's aspect ratio pads one axis).
    assert xmin <= x0 + dx and xmax >= x1 - dx and ymin <= y1 - dy and ymax >= y0 + dy, (demo, (x0, y1, x1, y0))
    assert (xmax - xmin) * (ymax - ymin) < 4 * (x1 - x0) * (y0 - y1)
    assert demo["bottom"].endswith("(input)") and "—" in demo["top"]
    assert demo["panel_input"].endswith("(input)")  # the panel's input is the scene, not one of the outputs
