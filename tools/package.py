"""Build the installable QGIS plugin zip: one ``mtl_explain/`` folder with the plugin, mtl_core, metadata,
resources, the plugin's manual (docs/plugin.md and its pictures, opened by the panel's Help) and LICENSE —
no tests, caches, hidden or build files.

Run by ``make package``; prints the path of the zip (``dist/mtl_explain-<version>.zip``).
"""

from __future__ import annotations

import argparse
import configparser
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_FOLDER = "mtl_explain"
#: (source in the repository, destination inside the plugin folder)
CONTENTS = (("plugin", ""), ("mtl_core", "mtl_core"), ("resources", "resources"),
            ("docs/plugin.md", "docs/plugin.md"), ("docs/images", "docs/images"),
            ("metadata.txt", "metadata.txt"), ("LICENSE", "LICENSE"))
EXCLUDED_DIRS = {"__pycache__", "tests", "build", "dist"}
EXCLUDED_SUFFIXES = {".pyc", ".pyo", ".so", ".dll", ".exe", ".sh", ".bat", ".pyd", ".orig", ".rej", ".tmp"}


def version(root: Path = ROOT) -> str:
    """The plugin version from ``metadata.txt``."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(root / "metadata.txt", encoding="utf-8")
    return parser["general"]["version"]


def _wanted(path: Path, base: Path) -> bool:
    rel = path.relative_to(base)
    if any(part.startswith(".") for part in rel.parts):
        return False  # hidden files and folders, including the engine's temporary outputs
    if any(part in EXCLUDED_DIRS or part.endswith(".egg-info") for part in rel.parts):
        return False
    return path.is_file() and path.suffix not in EXCLUDED_SUFFIXES


def files(root: Path = ROOT) -> list[tuple[Path, str]]:
    """Every (source file, name in the zip), sorted, so the zip is reproducible."""
    out = []
    for src, dst in CONTENTS:
        path = root / src
        if not path.exists():
            raise SystemExit(f"package: {path} is missing; run from a complete checkout (make default-model builds "
                             "the bundled model)")
        if path.is_file():
            out.append((path, f"{PLUGIN_FOLDER}/{dst}"))
            continue
        for f in sorted(path.rglob("*")):
            if _wanted(f, path):
                name = "/".join(p for p in (PLUGIN_FOLDER, dst, f.relative_to(path).as_posix()) if p)
                out.append((f, name))
    return sorted(out, key=lambda item: item[1])


def build(out: Path, root: Path = ROOT) -> Path:
    """Write the zip (files 0644, fixed timestamps) and return its path."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for src, name in files(root):
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, src.read_bytes())
    return out


def main(argv: list[str] | None = None) -> int:
    """Build the zip; returns the process exit status."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, help="zip to write (default: dist/mtl_explain-<version>.zip)")
    args = p.parse_args(argv)
    out = build(args.out or ROOT / "dist" / f"{PLUGIN_FOLDER}-{version()}.zip")
    sys.stdout.write(f"{out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
