"""Install the plugin zip into a QGIS profile and enable it (``make deploy``)."""

from __future__ import annotations

import argparse
import shutil
import sys
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from plugin.core.settings import WORKER_PYTHON  # noqa: E402  (the plugin's own name of the setting)

DEFAULT_PROFILE = Path.home() / ".local" / "share" / "QGIS" / "QGIS3" / "profiles" / "default"


def deploy(zip_path: Path, profile: Path, worker_python: str | None = None) -> Path:
    """Unzip the plugin into ``profile/python/plugins`` (replacing an older copy) and enable it.

    Args:
        zip_path: the plugin zip.
        profile: the QGIS profile folder.
        worker_python: interpreter with PyTorch for the plugin's worker process (training, export of
            ``.safetensors`` models, CUDA runs); written into the profile's settings.

    Returns:
        The installed plugin folder.
    """
    plugins = profile / "python" / "plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path) as zf:
        top = zf.namelist()[0].split("/", 1)[0]
        shutil.rmtree(plugins / top, ignore_errors=True)
        zf.extractall(plugins)
    from qgis.PyQt.QtCore import QSettings

    settings = QSettings(str(profile / "QGIS" / "QGIS3.ini"), QSettings.IniFormat)
    settings.setValue(f"PythonPlugins/{top}", True)
    if worker_python:
        settings.setValue(WORKER_PYTHON, worker_python)
    settings.sync()
    return plugins / top


def main(argv: list[str] | None = None) -> int:
    """Deploy; returns the process exit status."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("zip", type=Path, help="plugin zip (make package)")
    p.add_argument("--profile", type=Path, default=DEFAULT_PROFILE, help=f"QGIS profile (default: {DEFAULT_PROFILE})")
    p.add_argument("--worker-python", help="Python with PyTorch for the plugin's worker process (default: QGIS's own)")
    args = p.parse_args(argv)
    folder = deploy(args.zip, args.profile, args.worker_python)
    sys.stdout.write(f"MTL Explain installed in {folder} and enabled; restart QGIS to load it.\n")
    if args.worker_python:
        sys.stdout.write(f"Its worker process (training, .safetensors export, CUDA) runs {args.worker_python}.\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
