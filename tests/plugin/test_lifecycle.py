"""The plugin loads and unloads through classFactory, twice, and leaves QGIS as it found it."""

from __future__ import annotations

import logging

from qgis.core import QgsApplication
from qgis.PyQt.QtWidgets import QAction, QDockWidget

from .conftest import flush_deletions

ALGORITHMS = {"mtl_explain:predict", "mtl_explain:explain", "mtl_explain:train"}


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


def test_plugin_loads_without_torch_and_says_what_is_missing(qgis_iface, qgis_new_project, monkeypatch):
    import importlib.util

    import plugin
    from plugin.core import deps

    real = importlib.util.find_spec

    def fake_find_spec(name, *args, **kwargs):
        if name in ("torch", "segmentation_models_pytorch"):
            return None
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", fake_find_spec)
    status = deps.check()
    assert status.missing == ["torch", "segmentation_models_pytorch"]
    assert "pip install --user torch segmentation-models-pytorch" in status.install_command()

    bar = qgis_iface.messageBar()
    bar.clear_messages()
    instance = plugin.classFactory(qgis_iface)
    instance.initGui()
    try:
        warnings = " ".join(bar.get_messages(1))  # Qgis.Warning
        assert "torch" in warnings and "pip install" in warnings
        dock = instance.dock
        assert not dock.deps_box.isHidden()
        assert "segmentation-models-pytorch" in dock.deps_label.text()
        assert not dock.run_button.isEnabled()
    finally:
        instance.unload()
        flush_deletions()


#: Start of a script: a QGIS whose Python cannot import torch or segmentation-models-pytorch.
QGIS_WITHOUT_TORCH = r'''
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "segmentation_models_pytorch"):
            raise ImportError(f"No module named {name!r} (blocked by the test)")
        return None
sys.meta_path.insert(0, Block())
from qgis.core import QgsApplication
app = QgsApplication([], False)
app.initQgis()
'''

BLOCKED_IMPORT = QGIS_WITHOUT_TORCH + r'''
from unittest.mock import MagicMock
from qgis.PyQt.QtWidgets import QMainWindow
import plugin
iface = MagicMock()
iface.mainWindow.return_value = QMainWindow()
instance = plugin.classFactory(iface)
instance.initGui()
from plugin.core import deps
status = deps.check()
assert status.missing == ["torch", "segmentation_models_pytorch"], status.missing
assert "torch" not in sys.modules
alg = QgsApplication.processingRegistry().algorithmById("mtl_explain:predict")
assert alg is not None
warning = iface.messageBar().pushWarning.call_args[0][1]
assert "pip install" in warning and "torch" in warning, warning
instance.unload()
sys.stdout.write("OK " + warning)
'''


def test_plugin_loads_when_torch_cannot_be_imported(tmp_path):
    import os
    import subprocess
    import sys

    from .conftest import ROOT

    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", QGIS_CUSTOM_CONFIG_PATH=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", BLOCKED_IMPORT], cwd=ROOT, env=env, capture_output=True, text=True,
                          check=False, timeout=300)
    assert done.returncode == 0 and done.stdout.startswith("OK "), done.stdout + done.stderr[-3000:]


ONNX_ONLY = QGIS_WITHOUT_TORCH + r'''
from plugin.core import deps
from plugin.core.params import RunParameters
from plugin.core.task import PredictTask
onnx_model, safetensors_model, raster, out = sys.argv[1:5]
status = deps.check()
assert status.light_ok and status.can_run(onnx_model) and not status.can_run(safetensors_model), status
assert "Train" not in status.message() or "training needs the full install" in status.message()
task = PredictTask(RunParameters(model_path=onnx_model, raster_path=raster, out_dir=out, input_name="crop",
                                 device="cpu"))
assert task.run(), task.result.error
refused = PredictTask(RunParameters(model_path=safetensors_model, raster_path=raster, out_dir=out, input_name="x"))
assert not refused.run() and "pip install" in refused.result.error
assert "torch" not in sys.modules
sys.stdout.write("OK " + " ".join(sorted(task.result.outcome.outputs)))
'''


def test_predict_runs_with_only_onnxruntime(tiny_model, crop_dir, tmp_path):
    import os
    import subprocess
    import sys

    import pytest

    from .conftest import ROOT

    backends = pytest.importorskip("mtl_core.backends", reason="the engine has no ONNX backend yet")
    pytest.importorskip("onnxruntime")
    onnx_model = backends.export_onnx(tiny_model, tmp_path / "tiny.onnx")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", QGIS_CUSTOM_CONFIG_PATH=str(tmp_path / "cfg"))
    done = subprocess.run([sys.executable, "-c", ONNX_ONLY, str(onnx_model), str(tiny_model),
                           str(crop_dir / "raleigh_vnir.tif"), str(tmp_path / "out")],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0 and done.stdout.startswith("OK "), done.stdout + done.stderr[-3000:]
    assert {"main", "confidence", "entropy", "aux_swir"} <= set(done.stdout.split()[1:])
