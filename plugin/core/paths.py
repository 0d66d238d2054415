"""Where the plugin's files live: its folder, resources, styles, the default model and metadata.

The installed plugin keeps ``resources/`` and ``metadata.txt`` inside its own folder; a development
checkout keeps them one level up, next to ``plugin/``. Both layouts are looked up here, once.
"""

from __future__ import annotations

import configparser
from functools import lru_cache
from pathlib import Path

PLUGIN_DIR = Path(__file__).resolve().parent.parent
PLUGIN_NAME = "MTL Explain"
DEFAULT_MODEL_NAME = "default_model.mtl.onnx"


def _first_existing(*candidates: Path) -> Path:
    for c in candidates:
        if c.exists():
            return c
    return candidates[0]


@lru_cache(maxsize=None)
def resources_dir() -> Path:
    """The ``resources`` folder (icons, styles, default model)."""
    return _first_existing(PLUGIN_DIR / "resources", PLUGIN_DIR.parent / "resources")


def i18n_dir() -> Path:
    """The folder of compiled translations, ``mtl_explain_<locale>.qm`` (none ship yet)."""
    return _first_existing(PLUGIN_DIR / "i18n", PLUGIN_DIR.parent / "i18n")


def icon_path(name: str = "icon.svg") -> Path:
    """Path of an icon in ``resources``."""
    return resources_dir() / name


def manual() -> Path:
    """The plugin's manual, ``docs/plugin.md`` (shipped in the zip; a checkout has it one level up)."""
    return _first_existing(PLUGIN_DIR / "docs" / "plugin.md", PLUGIN_DIR.parent / "docs" / "plugin.md")


def default_model() -> Path | None:
    """The bundled default model, or None when it has not been built (``make default-model``)."""
    path = resources_dir() / DEFAULT_MODEL_NAME
    return path if path.exists() else None


@lru_cache(maxsize=None)
def metadata() -> dict[str, str]:
    """The ``[general]`` section of ``metadata.txt``."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(_first_existing(PLUGIN_DIR / "metadata.txt", PLUGIN_DIR.parent / "metadata.txt"), encoding="utf-8")
    return dict(parser["general"]) if parser.has_section("general") else {}
