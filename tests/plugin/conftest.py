"""Fixtures for the plugin tests: a tiny real model trained on the crop, the loaded plugin, a wait helper."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from qgis.PyQt.QtCore import QCoreApplication, QEvent, QEventLoop

ROOT = Path(__file__).resolve().parents[2]


def wait_for(condition: Callable[[], bool], timeout: float = 300.0) -> None:
    """Let the Qt event loop run (task signals, finished()) until ``condition`` holds; fail after ``timeout`` s.

    The timeout only keeps a broken test from hanging; nothing here asserts on timing.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        QCoreApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
        time.sleep(0.02)


def flush_deletions() -> None:
    """Run pending deleteLater() calls, as QGIS's event loop would."""
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    QCoreApplication.processEvents()


@pytest.fixture(scope="session")
def tiny_model(crop_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real mtl model (U-Net/resnet18, depth 3) trained for 4 steps on the crop of the real sample."""
    from mtl_core.config import load_config
    from mtl_core.modelfile import save_model
    from mtl_core.spec import Architecture
    from mtl_core.training.train import TrainOptions, train

    opts = TrainOptions(steps=4, batch_size=4, eval_every=4, device="cpu", seed=0,
                        architecture=Architecture(encoder_depth=3))
    result = train(load_config(crop_dir / "crop.yaml"), opts, progress=False)
    path = tmp_path_factory.mktemp("model") / "tiny.mtl.safetensors"
    save_model(path, result.spec, result.state_dict)
    return path


@pytest.fixture
def loaded_plugin(qgis_iface, qgis_new_project):
    """The plugin loaded through classFactory with initGui(); unloaded afterwards."""
    import plugin

    instance = plugin.classFactory(qgis_iface)
    instance.initGui()
    yield instance
    instance.unload()
    flush_deletions()


@pytest.fixture(scope="session")
def plugin_zip(tmp_path_factory) -> Path:
    """The zip written by ``make package`` (into a temporary folder)."""
    if not (ROOT / "resources" / "default_model.mtl.onnx").exists():
        pytest.fail("resources/default_model.mtl.onnx is missing; run make default-model")
    out = tmp_path_factory.mktemp("dist") / "mtl_explain.zip"
    done = subprocess.run(["make", "-s", "package", f"PLUGIN_ZIP={out}"], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return out
