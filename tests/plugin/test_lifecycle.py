"""The plugin loads and unloads through classFactory, twice, and leaves QGIS as it found it."""

from __future__ import annotations

import logging
import os

from qgis.core import QgsApplication
from qgis.PyQt.QtWidgets import QDockWidget
try:
    from qgis.PyQt.QtGui import QAction  # Qt6 (QGIS 4)
except ImportError:
    from qgis.PyQt.QtWidgets import QAction  # Qt5 (QGIS 3)

from .conftest import QGIS_SIDE_ONLY, flush_deletions, needs_worker

ALGORITHMS = {"mtl_explain:predict", "mtl_explain:explain", "mtl_explain:train", "mtl_explain:proposesites"}


def _our_handlers() -> list[logging.Handler]:
    return [h for name in ("mtl_explain", "mtl_core") for h in logging.getLogger(name).handlers
            if getattr(h, "mtl_explain", False)]


def test_load_unload_twice_leaves_qgis_clean(qgis_iface, qgis_new_project):
    import plugin

    registry = QgsApplication.processingRegistry()
    main = qgis_iface.mainWindow()
    providers_before = sorted(p.id() for p in registry.providers())
    menu = qgis_iface.removePluginRasterMenu
    for _ in range(2):
        instance = plugin.classFactory(qgis_iface)
        instance.initGui()
        provider = registry.providerById("mtl_explain")
        assert provider is not None
        assert {a.id() for a in provider.algorithms()} == ALGORITHMS
        assert main.findChild(QDockWidget, "MtlExplainDock") is not None
        assert main.findChild(QAction, "mtlExplainExportAction") is not None
        assert len(_our_handlers()) == 2
        added = list(instance.actions)
        calls_before = menu.call_count

        instance.unload()
        flush_deletions()

        assert registry.providerById("mtl_explain") is None
        assert main.findChild(QDockWidget, "MtlExplainDock") is None
        assert main.findChild(QAction, "mtlExplainExportAction") is None
        assert instance.actions == [] and instance.dock is None
        assert menu.call_count - calls_before == len(added)
        assert _our_handlers() == []
    assert sorted(p.id() for p in registry.providers()) == providers_before


def test_plugin_says_what_qgis_lacks_and_how_to_install_it(qgis_iface, qgis_new_project, monkeypatch):
    import importlib.util

    import plugin
    from plugin.core import deps

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **kw: None if name == "onnxruntime" else real(name, *a, **kw))
    status = deps.check()
    assert status.missing_qgis == ["onnxruntime"] and not status.onnx_ok
    assert status.install_command().endswith("-m pip install --user onnxruntime")

    bar = qgis_iface.messageBar()
    bar.clear_messages()
    instance = plugin.classFactory(qgis_iface)
    instance.initGui()
    try:
        warnings = " ".join(bar.get_messages(1))  # Qgis.MessageLevel.Warning
        assert "ONNX Runtime" in warnings and "pip install --user onnxruntime" in warnings
        setup = instance.dock.setup_page
        assert not setup.deps_box.isHidden() and not setup.install_button.isHidden()
        assert "onnxruntime" in setup.deps_label.text()
        assert not instance.dock.setup_banner.isHidden() and "Setup" in instance.dock.setup_banner.text()
        assert not instance.dock.run_page.run_button.isEnabled()
    finally:
        instance.unload()
        flush_deletions()


def test_the_worker_interpreter_is_checked_by_running_it(tmp_path):
    import subprocess
    import sys

    from plugin.core import deps

    # QGIS's GDAL visible (a venv made with --system-site-packages), no PyTorch: install it there
    seeing = tmp_path / "seeing"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", "--system-site-packages", str(seeing)],
                   check=True)
    python = str(seeing / "bin" / "python")
    status = deps.check_worker(python, refresh=True)
    assert not status.ok and status.installable and not status.no_gdal
    assert "torch" in status.missing and "segmentation_models_pytorch" in status.missing
    assert status.install_command().startswith(f"{python} -m pip install torch segmentation-models-pytorch")
    assert "Worker Python" in status.message() and status.install_command() in status.message()

    # no GDAL (a bare venv, as pyenv's or conda's Python is): choose another Python, never "install torch there"
    bare = tmp_path / "bare"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(bare)], check=True)
    status = deps.check_worker(str(bare / "bin" / "python"), refresh=True)
    assert not status.ok and status.no_gdal and not status.installable
    assert "osgeo" in status.message() and "pip install" not in status.message()

    missing = deps.check_worker(str(tmp_path / "no-such-python"), refresh=True)
    assert not missing.ok and "cannot be used" in missing.message() and "Worker Python" in missing.message()
    not_python = deps.check_worker("/bin/true", refresh=True)
    assert not not_python.ok and "not a Python 3 interpreter" in not_python.error

    if not QGIS_SIDE_ONLY:  # the test environment has torch (the QGIS 3.44 chroot has none)
        assert deps.check_worker(sys.executable, refresh=True).ok


def test_qgis_own_python_is_found_from_its_prefix_not_from_path(tmp_path, monkeypatch):
    """Inside QGIS sys.executable is the QGIS binary; the first python3 on PATH (pyenv, conda) is another Python."""
    import subprocess
    import sys

    from plugin.core import deps

    decoy = tmp_path / "bin" / "python3"
    decoy.parent.mkdir()
    decoy.write_text("#!/bin/sh\necho decoy\n")
    decoy.chmod(0o755)
    monkeypatch.setenv("PATH", f"{decoy.parent}:{os.environ['PATH']}")
    monkeypatch.setattr(sys, "executable", "/usr/bin/qgis.bin")
    python = deps.find_qgis_python(refresh=True).python
    assert python != str(decoy)
    answer = subprocess.run([python, "-c", "import sys; print(sys.version_info[:2], sys.exec_prefix)"],
                            capture_output=True, text=True, check=True).stdout
    assert answer.strip() == f"{tuple(sys.version_info[:2])} {sys.exec_prefix}"


def test_a_foreign_python_as_sys_executable_is_not_taken_for_qgis_own(tmp_path, monkeypatch):
    """A desktop started from a shell whose first python3 is pyenv's has that Python as sys.executable: a real
    interpreter, but another prefix without QGIS's GDAL. The worker must not run it; when no interpreter of
    QGIS's prefix qualifies, the Setup page's message lists what was tried and why."""
    import subprocess
    import sys

    from plugin.core import deps

    foreign = tmp_path / "pyenv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(foreign)], check=True)
    monkeypatch.setattr(sys, "executable", str(foreign / "bin" / "python3"))
    try:
        found = deps.find_qgis_python(refresh=True)
        assert found.python and not found.python.startswith(str(foreign)), found
        assert deps.check_worker(found.python, refresh=True).no_gdal is False

        empty = tmp_path / "prefix"  # a QGIS whose prefix holds no usable Python
        (empty / "bin").mkdir(parents=True)
        (empty / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}").symlink_to(
            foreign / "bin" / "python3")
        for name in ("prefix", "exec_prefix", "base_prefix", "base_exec_prefix"):
            monkeypatch.setattr(sys, name, str(empty))
        found = deps.find_qgis_python(refresh=True)
        assert found.python is None and "another Python" in found.describe(), found
        status = deps.check_worker(refresh=True)
        assert not status.ok and "tried" in status.message() and str(empty) in status.message()
    finally:
        monkeypatch.undo()
        deps.find_qgis_python(refresh=True)


#: A QGIS whose own Python cannot import torch's stack: any import of it fails the script at once.
NO_TORCH_IN_QGIS = r'''
import importlib.abc, json, sys, time
BLOCKED = ("torch", "segmentation_models_pytorch", "timm", "torchvision", "triton")
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name!r} imported inside QGIS (blocked by the test)")
        return None
sys.meta_path.insert(0, Block())
sys.path.append("/usr/share/qgis/python/plugins")
from unittest.mock import MagicMock
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtWidgets import QMainWindow
app = QgsApplication([], True)
app.initQgis()
from processing.core.Processing import Processing
Processing.initialize()
import processing
import plugin
from plugin.core.export import ExportTask
from plugin.core.layers import run_groups
from plugin.core.paths import default_model
safetensors_model, crop, out = sys.argv[1:4]
iface = MagicMock()
iface.mainWindow.return_value = QMainWindow()
instance = plugin.classFactory(iface)
instance.initGui()
dock, report = instance.dock.run_page, {}

def wait(condition):
    deadline = time.monotonic() + 300
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        QCoreApplication.processEvents()
        time.sleep(0.02)

layer = QgsRasterLayer(f"{crop}/raleigh_vnir.tif", "vnir")
QgsProject.instance().addMapLayer(layer)
dock.layer_combo.setLayer(layer)
dock.out_dir.setFilePath(f"{out}/panel")
assert dock.model_file.filePath() == str(default_model()) and str(default_model()).endswith(".onnx")
outcomes = []
instance._run_finished = (lambda real: lambda result: (outcomes.append(result), real(result)))(instance._run_finished)
for model in (str(default_model()), safetensors_model, safetensors_model):  # ONNX; export by the worker; cached
    dock.model_file.setFilePath(model)
    assert dock.run_button.isEnabled(), dock.status_label.text() + instance.dock.setup_page.deps_label.text()
    dock.run_button.click()
    wait(lambda: instance.task is None)
    assert outcomes[-1].ok, outcomes[-1].error
report["panel"] = [(o.outcome.where, o.outcome.export, round(o.outcome.seconds, 2)) for o in outcomes]
report["groups"] = len(run_groups())
common = {"INPUT": f"{crop}/raleigh_vnir.tif", "MODEL": str(default_model()), "DEVICE": 1}
r = processing.run("mtl_explain:predict", {**common, "OUTPUT_FOLDER": f"{out}/predict"})
report["predict"] = sorted(k for k in r if k.isupper())
r = processing.run("mtl_explain:explain", {**common, "AUX_TRUTH": [f"{crop}/raleigh_swir.tif"],
                   "LABELS": f"{crop}/raleigh_landcover.tif", "SENSITIVITY": False, "OUTPUT_FOLDER": f"{out}/explain"})
report["explain"] = sorted(k for k in r if k.isupper())
r = processing.run("mtl_explain:train", {"CONFIG": f"{crop}/crop.yaml", "STEPS": 2, "ENCODER_DEPTH": 3,
                   "BATCH_SIZE": 2, "DEVICE": 1, "OUTPUT": f"{out}/trained.mtl.safetensors"})
report["train"] = r["OUTPUT"]
done = []
task = ExportTask({"main": outcomes[0].outcome.outputs["main"]}, f"{out}/export", False, None,
                  lambda ok, t: done.append(ok))
QgsApplication.taskManager().addTask(task)
wait(lambda: done)
report["export"] = done[0]
report["heavy_modules"] = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
instance.unload()
sys.stdout.write("REPORT " + json.dumps(report) + "\n")
'''


@needs_worker
def test_nothing_inside_qgis_imports_torch(tiny_model, crop_dir, tmp_path):
    """Panel (ONNX default model, a .safetensors model exported by the worker, then from the cache), every
    Processing algorithm and the export action, in a QGIS where importing torch's stack fails."""
    import json
    import os
    import subprocess
    import sys

    from .conftest import ROOT

    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", QGIS_CUSTOM_CONFIG_PATH=str(tmp_path / "cfg"))
    done = subprocess.run([sys.executable, "-c", NO_TORCH_IN_QGIS, str(tiny_model), str(crop_dir), str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("REPORT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(lines[0][len("REPORT "):])
    assert report["heavy_modules"] == []
    assert [(where, export) for where, export, _ in report["panel"]] == [
        ("qgis", ""), ("qgis", "exported"), ("qgis", "cached")]
    assert report["groups"] == 3
    assert {"MAIN", "CONFIDENCE", "ENTROPY", "AUX_SWIR"} <= set(report["predict"])
    assert {"MAIN_ERROR", "RECON_ERROR_SWIR", "AGREEMENT", "REPORT"} <= set(report["explain"])
    assert os.path.isfile(report["train"]) and report["export"] is True
