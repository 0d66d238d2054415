"""Check a plugin zip the way the QGIS plugin repository does on upload, and fail loudly on any finding.

Checks: one top-level folder holding ``__init__.py`` and ``metadata.txt`` with every required field and
an existing icon; no hidden files, no executable ``.py``, no ``.so/.dll/.exe/.sh/.bat``, no caches; then
``bandit -r -ll`` (no medium/high findings), ``detect-secrets scan --all-files`` (metadata.txt excluded)
and ``flake8 --max-line-length=120`` on the extracted files. Run by ``make check-package``.
"""

from __future__ import annotations

import argparse
import configparser
import json
import shutil
import subprocess  # nosec B404: runs the scanners with fixed argument lists, never a shell
import sys
import tempfile
import zipfile
from pathlib import Path

from qt6_check import check_paths as qt6_findings

#: Fields the plugin repository refuses an upload without.
REQUIRED_METADATA = ("name", "description", "about", "version", "qgisMinimumVersion", "author", "email",
                     "repository", "tracker")
FORBIDDEN_SUFFIXES = (".so", ".dll", ".exe", ".sh", ".bat", ".pyc", ".pyd")


def _tool(name: str) -> str:
    """A scanner from the same environment as this Python, else from PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else (shutil.which(name) or name)


def check_zip_layout(zip_path: Path) -> list[str]:
    """Problems in the zip itself (names, permissions, layout)."""
    problems = []
    with zipfile.ZipFile(zip_path) as zf:
        infos = zf.infolist()
        tops = {i.filename.split("/", 1)[0] for i in infos}
        if len(tops) != 1:
            problems.append(f"the zip must hold exactly one top-level folder, found {sorted(tops)}")
        top = sorted(tops)[0] if tops else ""
        names = {i.filename for i in infos}
        for required in ("__init__.py", "metadata.txt"):
            if f"{top}/{required}" not in names:
                problems.append(f"{top}/{required} is missing")
        for info in infos:
            parts = info.filename.rstrip("/").split("/")
            if any(p.startswith(".") for p in parts):
                problems.append(f"hidden file or folder: {info.filename}")
            if "__pycache__" in parts or "__MACOSX" in parts:
                problems.append(f"cache or system folder: {info.filename}")
            if info.filename.lower().endswith(FORBIDDEN_SUFFIXES):
                problems.append(f"forbidden file type: {info.filename}")
            mode = (info.external_attr >> 16) & 0o777
            if info.filename.endswith(".py") and mode & 0o111:
                problems.append(f"executable .py file: {info.filename} (mode {oct(mode)})")
    return problems


def check_metadata(plugin_dir: Path) -> list[str]:
    """Problems in ``metadata.txt``: missing required fields, a missing icon, a wrong minimum version."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keys are case-sensitive (qgisMinimumVersion)
    if not parser.read(plugin_dir / "metadata.txt", encoding="utf-8") or not parser.has_section("general"):
        return ["metadata.txt has no [general] section"]
    meta = parser["general"]
    problems = [f"metadata.txt lacks the required field {k!r}"
                for k in REQUIRED_METADATA if not meta.get(k, "").strip()]
    icon = meta.get("icon", "")
    if not icon or not (plugin_dir / icon).is_file():
        problems.append(f"metadata.txt names icon {icon!r}, which is not in the zip")
    if not meta.get("qgisMaximumVersion", "").startswith("4."):
        problems.append("metadata.txt should say qgisMaximumVersion=4.99: without it the plugin repository hides the "
                        "plugin from QGIS 4 users")
    if meta.get("supportsQt6", "").strip().lower() not in ("true", "yes"):
        problems.append("metadata.txt should say supportsQt6=True beside qgisMaximumVersion=4.99: QGIS 4's plugin "
                        "manager has been documented as requiring it (it is harmless where it is ignored)")
    if meta.get("hasProcessingProvider", "").lower() not in ("yes", "true"):
        problems.append("metadata.txt should say hasProcessingProvider=yes (the plugin has a Processing provider)")
    return problems


def run_scanners(root: Path) -> list[str]:
    """Problems found by bandit, detect-secrets, flake8 and the Qt6 check in the extracted files under ``root``."""
    problems = []
    bandit = subprocess.run([_tool("bandit"), "-r", "-ll", "-q", str(root)],  # nosec B603
                            capture_output=True, text=True, check=False)
    if bandit.returncode != 0:
        problems.append("bandit -r -ll found medium/high issues:\n" + bandit.stdout + bandit.stderr)
    secrets = subprocess.run([_tool("detect-secrets"), "scan", "--all-files", "--exclude-files", r"metadata\.txt$"],
                             cwd=root, capture_output=True, text=True, check=False)  # nosec B603
    if secrets.returncode != 0:
        problems.append("detect-secrets failed: " + secrets.stderr)
    else:
        found = json.loads(secrets.stdout).get("results", {})
        if found:
            problems.append("detect-secrets found possible secrets: " + json.dumps(found, indent=1))
    flake8 = subprocess.run([_tool("flake8"), "--max-line-length=120", str(root)],  # nosec B603
                            capture_output=True, text=True, check=False)
    if flake8.returncode != 0:
        problems.append("flake8 --max-line-length=120 found:\n" + flake8.stdout + flake8.stderr)
    qt5_only = qt6_findings([root])
    if qt5_only:
        problems.append("Qt5-only forms that QGIS 4 (PyQt6) refuses:\n" + "\n".join(qt5_only))
    return problems


def check(zip_path: Path) -> list[str]:
    """Every problem of a plugin zip (empty list: it passes)."""
    problems = check_zip_layout(zip_path)
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(tmp)
        tops = [p for p in Path(tmp).iterdir() if p.is_dir()]
        if tops:
            problems += check_metadata(tops[0])
        problems += run_scanners(Path(tmp))
    return problems


def main(argv: list[str] | None = None) -> int:
    """Check a zip; exit status 1 with the findings on stderr when it fails."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("zip", type=Path, help="plugin zip (make package)")
    args = p.parse_args(argv)
    problems = check(args.zip)
    for problem in problems:
        sys.stderr.write(f"check-package: {problem}\n")
    if not problems:
        sys.stdout.write(f"check-package: {args.zip} passes the plugin repository's checks\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
