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

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import deploy  # noqa: E402

pytestmark = pytest.mark.slow
QGIS = "/usr/bin/qgis.bin"


@pytest.fixture(scope="module")
def desktop(plugin_zip, sample_config, crop_dir, tmp_path_factory) -> dict:
    """Run the desktop session once; its report (``desktop.json``) plus QGIS's exit status and log."""
    if not shutil.which("xvfb-run") or not Path(QGIS).exists():
        pytest.fail("the desktop test needs xvfb-run and qgis.bin (apt-get install xvfb qgis); run make setup")
    base = tmp_path_factory.mktemp("desktop")
    profiles, out = base / "profiles", base / "out"
    out.mkdir()
    deploy.deploy(plugin_zip, profiles / "profiles" / "default", worker_python=sys.executable)
    env = dict(os.environ, MTL_DESKTOP_RASTER=str(sample_config.parent / "raleigh_vnir.tif"),
               MTL_DESKTOP_CONFIG=str(crop_dir / "crop.yaml"), MTL_DESKTOP_OUT=str(out),
               PYTHONPATH=os.pathsep.join(site.getsitepackages()))
    env.pop("QT_QPA_PLATFORM", None)  # the real, windowed platform, on the Xvfb display
    done = subprocess.run(
        ["xvfb-run", "-a", "-s", "-screen 0 1366x768x24", QGIS, "--profiles-path", str(profiles), "--nologo",
         "--noversioncheck", "--code", str(Path(__file__).with_name("desktop_script.py"))],
        env=env, capture_output=True, text=True, check=False, timeout=900)
    report_file = out / "desktop.json"
    report = json.loads(report_file.read_text()) if report_file.exists() else {}
    return {"rc": done.returncode, "log": (done.stdout + done.stderr)[-4000:], "out": out, **report}


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


def test_train_from_the_toolbox_writes_the_model_in_the_worker(desktop):
    assert desktop["train"] == {"ok": True, "max_progress": 100.0, "file": True}


def test_cancelled_train_leaves_no_file_and_no_worker(desktop):
    cancel = desktop["cancel"]
    assert desktop["workers_while_training"] == 1
    assert cancel["ok"] is False and 0 < cancel["max_progress"] < 100
    assert cancel["left"] == [] and cancel["workers_after"] == []
