"""Plugin logic without widgets: paths, logging, dependencies, the prediction task, styling and export.

Importing this package makes ``mtl_core`` importable: the installed plugin bundles it next to its own
modules (``<plugin folder>/mtl_core``), while a development checkout uses the installed package.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def _ensure_mtl_core() -> None:
    """Import the bundled ``mtl_core`` as a top-level package, without putting the plugin folder on sys.path."""
    if "mtl_core" in sys.modules:
        return
    bundled = Path(__file__).resolve().parent.parent / "mtl_core" / "__init__.py"
    if not bundled.exists():
        return  # development checkout: mtl_core is installed in the environment
    spec = importlib.util.spec_from_file_location("mtl_core", bundled, submodule_search_locations=[str(bundled.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["mtl_core"] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules["mtl_core"]
        raise


_ensure_mtl_core()
