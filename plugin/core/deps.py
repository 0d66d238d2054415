"""Dependency check: which heavy Python packages the model needs, which are missing, and how to install them.

torch and segmentation-models-pytorch are never imported here (``importlib.util.find_spec`` only looks),
so QGIS loads the plugin even when they are absent and the panel can say exactly what to install.
Packages can also go into a private folder of the QGIS profile, which the plugin puts on ``sys.path``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import subprocess  # nosec B404: runs pip with a fixed argument list, never a shell
import sys
from dataclasses import dataclass, field
from pathlib import Path

#: import name -> pip name, for everything mtl_core needs beyond QGIS's own Python (numpy, GDAL, PyYAML):
#: the full install runs every model file and trains.
REQUIRED: dict[str, str] = {
    "torch": "torch",
    "segmentation_models_pytorch": "segmentation-models-pytorch",
    "safetensors": "safetensors",
    "tqdm": "tqdm",
    "yaml": "pyyaml",
}
#: The light install (tens of MB instead of GBs) runs exported ``.onnx`` model files, where the engine has
#: an ONNX Runtime backend (``mtl_core.backends``); it cannot train.
LIGHT: dict[str, str] = {"onnxruntime": "onnxruntime", "tqdm": "tqdm", "yaml": "pyyaml"}
SIZES = {"full": "about 1-3 GB", "light": "about 20-50 MB"}
PRIVATE_FOLDER = "mtl_explain_packages"


def _found(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@dataclass
class DependencyStatus:
    """Result of :func:`check`: what is missing for the full and the light install, and how to install it."""

    missing: list[str]
    missing_light: list[str] = field(default_factory=list)
    onnx_engine: bool = False

    @property
    def ok(self) -> bool:
        """Everything for the full install is there (any model file, training)."""
        return not self.missing

    @property
    def light_ok(self) -> bool:
        """ONNX Runtime and an engine that uses it are there (``.onnx`` model files only, no training)."""
        return self.onnx_engine and not self.missing_light

    def can_run(self, model_path: str | None = None) -> bool:
        """Whether a prediction with this model file can run."""
        return self.ok or (self.light_ok and bool(model_path) and str(model_path).lower().endswith(".onnx"))

    @property
    def pip_names(self) -> list[str]:
        return [REQUIRED[m] for m in self.missing]

    def install_command(self, kind: str = "full") -> str:
        """The shell command that installs what is missing for ``kind`` (``full`` or ``light``)."""
        table, missing = (LIGHT, self.missing_light) if kind == "light" else (REQUIRED, self.missing)
        names = " ".join(table[m] for m in missing) or " ".join(table.values())
        return f"{python_executable()} -m pip install --user {names}"

    def message(self) -> str:
        """One paragraph for the message bar and the panel."""
        if self.ok:
            return "All Python packages MTL Explain needs are installed."
        text = (
            f"MTL Explain needs Python package(s) QGIS cannot import: {', '.join(self.pip_names)}. "
            f"Install them ({SIZES['full']}) with: {self.install_command()}  (or use 'Install into a private "
            "folder' in the MTL Explain panel), then restart QGIS."
        )
        if self.light_ok:
            text += " ONNX Runtime is installed: .onnx model files run now; training needs the full install."
        elif self.onnx_engine:
            text += (f" Light alternative for .onnx model files only ({SIZES['light']}): "
                     f"{self.install_command('light')}")
        return text


def python_executable() -> str:
    """The Python interpreter QGIS runs (``sys.executable`` is the QGIS binary on some platforms)."""
    exe = Path(sys.executable)
    if exe.name.lower().startswith("python"):
        return str(exe)
    if os.name == "nt":
        candidate = Path(sys.prefix) / "python.exe"
        if candidate.exists():
            return str(candidate)
    return shutil.which("python3") or "python3"


def private_folder() -> Path:
    """The folder inside the QGIS profile where 'Install into a private folder' puts packages."""
    from qgis.core import QgsApplication

    return Path(QgsApplication.qgisSettingsDirPath()) / "python" / PRIVATE_FOLDER


def add_private_folder_to_path() -> Path | None:
    """Put the private package folder on ``sys.path`` when it exists; returns it, or None."""
    folder = private_folder()
    if folder.is_dir() and str(folder) not in sys.path:
        sys.path.append(str(folder))
        importlib.invalidate_caches()
        return folder
    return None


def check() -> DependencyStatus:
    """Look for every required package without importing it."""
    return DependencyStatus(
        missing=[m for m in REQUIRED if not _found(m)],
        missing_light=[m for m in LIGHT if not _found(m)],
        onnx_engine=_found("mtl_core.backends"),
    )


def install_private(packages: list[str], target: Path | None = None) -> subprocess.CompletedProcess:
    """Install packages into the private folder with pip (blocking: call it from a QgsTask).

    Args:
        packages: pip names, e.g. ``["torch", "segmentation-models-pytorch"]``.
        target: destination folder (default :func:`private_folder`).

    Returns:
        pip's completed process (``returncode`` 0 on success; ``stdout`` holds its log).
    """
    target = target or private_folder()
    target.mkdir(parents=True, exist_ok=True)
    cmd = [python_executable(), "-m", "pip", "install", "--disable-pip-version-check", "--target", str(target),
           *packages]
    return subprocess.run(cmd, capture_output=True, text=True, check=False)  # nosec B603: fixed arguments


class InstallTask:
    """Factory for the background task that installs missing packages into the private folder."""

    @staticmethod
    def create(packages: list[str], on_finished=None):
        """A ``QgsTask`` running :func:`install_private`; ``on_finished(ok, log_text)`` on the main thread."""
        from qgis.core import QgsTask

        class _Task(QgsTask):
            def __init__(self) -> None:
                super().__init__("MTL Explain: install " + ", ".join(packages), QgsTask.Flags())
                self.output = ""

            def run(self) -> bool:
                try:
                    done = install_private(packages)
                except OSError as exc:
                    self.output = f"pip could not be started ({exc}); install by hand: {check().install_command()}"
                    return False
                self.output = done.stdout + done.stderr
                return done.returncode == 0

            def finished(self, ok: bool) -> None:
                if ok:
                    add_private_folder_to_path()
                if on_finished is not None:
                    on_finished(ok, self.output)

        return _Task()
