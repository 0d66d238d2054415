"""Dependency check: what QGIS's own Python needs (ONNX Runtime) and what the worker's Python needs (PyTorch).

Nothing heavy is imported here. Inside QGIS, ``importlib.util.find_spec`` only looks for ONNX Runtime
and the small packages the engine uses; PyTorch is looked for *in the worker's interpreter* by running
it (:func:`check_worker`), never by importing it in QGIS — importing torch's stack inside a QGIS that has
loaded Mesa crashes it. Packages can also go into a private folder of the QGIS profile, which the plugin
puts on ``sys.path`` and on the worker's ``PYTHONPATH``.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import subprocess  # nosec B404: runs pip or a fixed Python snippet with a fixed argument list, never a shell
import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import settings

#: import name -> pip name: what QGIS's Python needs to predict and explain in-process (ONNX Runtime).
IN_QGIS: dict[str, str] = {"onnxruntime": "onnxruntime", "tqdm": "tqdm", "yaml": "pyyaml"}
#: import name -> pip name: what the worker's Python needs to train, export to ONNX and run on PyTorch.
WORKER: dict[str, str] = {
    "torch": "torch",
    "segmentation_models_pytorch": "segmentation-models-pytorch",
    "safetensors": "safetensors",
    "onnx": "onnx",
    "sklearn": "scikit-learn",
    "tqdm": "tqdm",
    "yaml": "pyyaml",
}
SIZES = {"worker": "about 1-3 GB", "qgis": "about 20-50 MB"}
PRIVATE_FOLDER = "mtl_explain_packages"
#: Looks for the worker's packages without importing them (find_spec only), prints JSON.
_PROBE = ("import importlib.util, json, sys; "
          "print(json.dumps({'python': sys.executable, 'version': sys.version.split()[0], "
          "'found': {m: importlib.util.find_spec(m) is not None for m in sys.argv[1:]}}))")


def _found(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@dataclass
class WorkerStatus:
    """What the worker's interpreter has: ``missing`` packages, ``no_gdal`` when it cannot see GDAL's Python
    bindings (which pip cannot install to match QGIS's GDAL), or ``error`` when it cannot be run at all;
    ``tried`` the candidates refused when QGIS's own Python was looked for and none qualified."""

    python: str
    missing: list[str] = field(default_factory=list)
    error: str = ""
    no_gdal: bool = False
    tried: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and not self.missing and not self.no_gdal

    @property
    def installable(self) -> bool:
        """Whether installing the missing packages into this interpreter would make it work."""
        return bool(self.missing) and not self.error and not self.no_gdal

    def install_command(self) -> str:
        names = " ".join(WORKER[m] for m in self.missing) or " ".join(WORKER.values())
        return f"{self.python} -m pip install {names}"

    def message(self) -> str:
        looked = (f" QGIS's own Python was looked for and not found; tried: {self.tried}." if self.tried else "")
        if self.error:
            return (f"The worker's Python {self.python!r} cannot be used ({self.error}).{looked} Choose a Python 3 "
                    "interpreter that has PyTorch under 'Worker Python' in the MTL Explain panel.")
        if self.no_gdal:
            return (f"The worker's Python {self.python!r} cannot import GDAL's Python bindings (osgeo), which "
                    "training and export read rasters with, and pip cannot install them to match QGIS's GDAL."
                    f"{looked} Choose QGIS's own Python, or a virtual environment made from it with "
                    "--system-site-packages, under 'Worker Python'.")
        if self.missing:
            names = ", ".join(WORKER[m] for m in self.missing)
            return (f"Training, .safetensors models and PyTorch/CUDA runs need {names} in the worker's Python "
                    f"({self.python}). Install them ({SIZES['worker']}) with: "
                    f"{self.install_command()} — or choose another Python under 'Worker Python'.{looked}")
        return f"Worker Python {self.python}: PyTorch found (training, .safetensors models and CUDA runs work)."


@dataclass
class DependencyStatus:
    """Result of :func:`check`: what QGIS's own Python lacks, and the worker's status when it was checked."""

    missing_qgis: list[str]
    worker: WorkerStatus | None = None

    @property
    def onnx_ok(self) -> bool:
        """Predict and explain with ``.onnx`` models can run inside QGIS."""
        return not self.missing_qgis

    @property
    def worker_ok(self) -> bool:
        return self.worker is not None and self.worker.ok

    @property
    def ok(self) -> bool:
        return self.onnx_ok and self.worker_ok

    def can_run(self, model_path: str | None = None) -> bool:
        """Whether prediction with this model file can run: ``.onnx`` in QGIS, ``.safetensors`` after the
        worker exported it."""
        from mtl_core.engine.runtime import is_onnx

        if not self.onnx_ok:
            return False
        return bool(model_path) and (is_onnx(model_path) or self.worker_ok)

    def install_command(self) -> str:
        """The command that installs what QGIS's own Python lacks."""
        names = " ".join(IN_QGIS[m] for m in self.missing_qgis) or " ".join(IN_QGIS.values())
        return f"{python_executable()} -m pip install --user {names}"

    def message(self) -> str:
        """One paragraph for the message bar and the panel."""
        parts = []
        if self.missing_qgis:
            parts.append(
                f"MTL Explain runs models inside QGIS with ONNX Runtime; QGIS's Python lacks "
                f"{', '.join(IN_QGIS[m] for m in self.missing_qgis)}. Install it ({SIZES['qgis']}) with: "
                f"{self.install_command()}  (or 'Install into a private folder' in the panel), then restart QGIS.")
        if self.worker is not None and not self.worker.ok:
            parts.append(self.worker.message())
        return " ".join(parts) or "All Python packages MTL Explain needs are installed."


#: Run by each candidate for QGIS's Python: where it lives and whether it sees QGIS's GDAL and PyQGIS (find_spec).
_WHO = ("import importlib.util, json, sys; "
        "print(json.dumps({'prefix': sys.prefix, 'exec_prefix': sys.exec_prefix, "
        "'version': '%d.%d' % sys.version_info[:2], "
        "'found': {m: importlib.util.find_spec(m) is not None for m in ('osgeo', 'qgis')}}))")


@dataclass
class InterpreterSearch:
    """Which interpreter is QGIS's own Python: the first candidate that runs with QGIS's prefix, version, GDAL
    (``osgeo``) and PyQGIS; ``tried`` says what each candidate was found to be."""

    python: str | None
    tried: list[tuple[str, str]] = field(default_factory=list)

    def describe(self) -> str:
        return "; ".join(f"{path} ({why})" for path, why in self.tried)


def _candidates() -> list[str]:
    """Interpreters that may be QGIS's Python, best first: ``sys.executable`` when it is a Python *inside QGIS's
    prefix* (in a desktop started from a shell it is whatever ``python3`` came first on PATH: pyenv, conda…), then
    the interpreters in the prefix's folders."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    prefixes = list(dict.fromkeys(Path(p) for p in (sys.prefix, sys.exec_prefix, sys.base_prefix,
                                                    sys.base_exec_prefix)))
    found = []
    exe = Path(sys.executable)
    if exe.name.lower().startswith("python") and any(exe.is_relative_to(p) for p in prefixes if p != Path("/")):
        found.append(exe)
    for prefix in prefixes:
        found += [prefix / "python.exe", prefix / "bin" / f"python{version}", prefix / "bin" / "python3"]
    return [str(p) for p in dict.fromkeys(found) if p.is_file() and (p.suffix == ".exe") == (os.name == "nt")]


def _probe_interpreter(python: str) -> str:
    """Why ``python`` is not QGIS's Python, or "" when it is (same prefix and version, sees osgeo and qgis)."""
    try:
        done = subprocess.run([python, "-c", _WHO], capture_output=True, text=True, timeout=30,  # nosec B603
                              check=False)
        answer = json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot be run: {getattr(exc, 'strerror', None) or exc}"
    except (ValueError, KeyError, IndexError):
        return "not a Python 3 interpreter"
    ours = {str(Path(p).resolve()) for p in (sys.prefix, sys.exec_prefix)}
    if str(Path(answer["prefix"]).resolve()) not in ours:
        return f"another Python: prefix {answer['prefix']}, QGIS's is {sys.prefix}"
    if answer["version"] != f"{sys.version_info.major}.{sys.version_info.minor}":
        return f"Python {answer['version']}, QGIS runs {sys.version_info.major}.{sys.version_info.minor}"
    lacking = [m for m, ok in answer["found"].items() if not ok]
    return f"cannot import {' or '.join(lacking)}" if lacking else ""


_search: list[InterpreterSearch] = []


def find_qgis_python(refresh: bool = False) -> InterpreterSearch:
    """Find QGIS's own Python by running the candidates (once per session; a fraction of a second each).

    Never the first ``python3`` on PATH: that is often another Python (pyenv, conda) that has neither QGIS's GDAL
    nor its ABI. When no candidate qualifies, ``python`` is None and ``tried`` says why each was refused.
    """
    if _search and not refresh:
        return _search[0]
    result = InterpreterSearch(None)
    for candidate in _candidates():
        why = _probe_interpreter(candidate)
        if not why:
            result.python = candidate
            break
        result.tried.append((candidate, why))
    if result.python is None and not result.tried:
        result.tried.append((sys.executable, f"no python{sys.version_info.major}.{sys.version_info.minor} in "
                                             f"QGIS's prefix {sys.prefix}"))
    _search[:] = [result]
    return result


def python_executable() -> str:
    """QGIS's own Python interpreter (see :func:`find_qgis_python`); when none was found, the best guess from its
    prefix, so that messages still name an interpreter (the Setup page says which were tried)."""
    found = find_qgis_python()
    if found.python:
        return found.python
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    return str(Path(sys.exec_prefix) / "bin" / f"python{version}")


def worker_python() -> str:
    """The worker's interpreter: the plugin setting (``make deploy`` sets the project's ``.venv``), else QGIS's own
    (:func:`python_executable`)."""
    from qgis.core import QgsSettings

    chosen = QgsSettings().value(settings.WORKER_PYTHON, "", type=str)
    return chosen or python_executable()


def set_worker_python(path: str) -> None:
    """Remember the worker's interpreter ("" returns to QGIS's own Python)."""
    from qgis.core import QgsSettings

    QgsSettings().setValue(settings.WORKER_PYTHON, path)
    _worker_cache.clear()


def private_folder() -> Path:
    """The folder inside the QGIS profile where 'Install into a private folder' puts packages."""
    from qgis.core import QgsApplication

    return Path(QgsApplication.qgisSettingsDirPath()) / "python" / PRIVATE_FOLDER


def private_paths() -> list[str]:
    """The private folder, when it exists, for the worker's PYTHONPATH."""
    folder = private_folder()
    return [str(folder)] if folder.is_dir() else []


def add_private_folder_to_path() -> Path | None:
    """Put the private package folder on ``sys.path`` when it exists; returns it, or None."""
    folder = private_folder()
    if folder.is_dir() and str(folder) not in sys.path:
        sys.path.append(str(folder))
        importlib.invalidate_caches()
        return folder
    return None


_worker_cache: dict[str, WorkerStatus] = {}


def check_worker(python: str | None = None, refresh: bool = False) -> WorkerStatus:
    """Run the worker's interpreter to see which of its packages are there (cached per interpreter).

    The interpreter runs a short snippet (``find_spec`` only, nothing imported) with the same
    PYTHONPATH the worker gets, so what it reports is what the worker will find.
    """
    from .worker import worker_environment

    python = python or worker_python()
    if python in _worker_cache and not refresh:
        return _worker_cache[python]
    status = WorkerStatus(python)
    search = find_qgis_python()
    if search.python is None and python == python_executable():
        status.tried = search.describe()
    try:
        done = subprocess.run([python, "-c", _PROBE, *WORKER, "osgeo"], capture_output=True, text=True,  # nosec B603
                              timeout=60, env=worker_environment(private_paths()), check=False)
        if done.returncode != 0:
            status.error = f"it exited with status {done.returncode}: {done.stderr.strip()[-300:]}"
        else:
            found = json.loads(done.stdout.strip().splitlines()[-1])["found"]
            status.missing = [m for m in WORKER if not found.get(m)]
            status.no_gdal = not found.get("osgeo")
    except (OSError, subprocess.TimeoutExpired) as exc:
        status.error = str(getattr(exc, "strerror", None) or exc)
    except (ValueError, KeyError, IndexError):
        status.error = "it is not a Python 3 interpreter (its answer was not understood)"
    _worker_cache[python] = status
    return status


def check(worker: bool = False) -> DependencyStatus:
    """What QGIS's Python lacks (without importing anything); with ``worker``, also the worker's status."""
    return DependencyStatus(missing_qgis=[m for m in IN_QGIS if not _found(m)],
                            worker=check_worker() if worker else None)


def install_private(packages: list[str], target: Path | None = None) -> subprocess.CompletedProcess:
    """Install packages into the private folder with pip (blocking: call it from a QgsTask).

    Args:
        packages: pip names, e.g. ``["onnxruntime"]``.
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
                    _worker_cache.clear()
                if on_finished is not None:
                    on_finished(ok, self.output)

        return _Task()
