"""Fixtures for the plugin tests: a tiny real model trained on the crop, the loaded plugin, a wait helper."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from qgis.PyQt.QtCore import QCoreApplication, QEvent, QEventLoop

from ..fixtures import train_tiny

ROOT = Path(__file__).resolve().parents[2]
#: Set by tools/qgis344.sh: these tests run inside another QGIS (3.44, Python 3.13, numpy 2) that has no PyTorch;
#: the tests of what the worker does (training, export) run in the host's suite only.
QGIS_SIDE_ONLY = os.environ.get("MTL_QGIS_SIDE_ONLY") == "1"
needs_worker = pytest.mark.skipif(QGIS_SIDE_ONLY, reason="needs the PyTorch worker: run by the host's suite on QGIS "
                                  "3.22, not in the QGIS 3.44 chroot (tools/qgis344.sh)")


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
    """A real mtl model (U-Net/resnet18, depth 3) trained for 4 steps on the crop of the real sample.

    Without PyTorch (the QGIS 3.44 chroot) the same model, trained and exported to ONNX on the host."""
    if QGIS_SIDE_ONLY:
        return Path(os.environ["MTL_TEST_ONNX_MODEL"])
    return train_tiny(crop_dir, tmp_path_factory.mktemp("model") / "tiny.mtl.safetensors")


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
