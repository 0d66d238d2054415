"""Fail on Qt5-only forms that PyQt6 (QGIS 4) refuses, in the code that runs inside QGIS.

QGIS 4 runs on Qt6, whose Python bindings only know scoped enums (``Qt.AlignmentFlag.AlignLeft``, not
``Qt.AlignLeft``), ``exec()`` (not ``exec_()``) and ``QAction`` in ``QtGui`` (Qt5 has it in
``QtWidgets``). The scoped forms work on PyQt5 5.15 as well (QGIS 3.22-3.44), so one code base serves
both. No Qt6 QGIS can be installed on the development machine, hence this static check; QGIS's own
``pyqt5_to_pyqt6`` script needs PyQt6 and QGIS 4 to build its enum tables, so it cannot run here.

What is flagged, in files under the given folders:

- ``X.Member`` where ``X`` is a class imported from ``qgis.PyQt``, ``qgis.core``, ``qgis.gui`` or
  ``qgis.analysis`` and ``Member`` starts with a capital but is not ALL_CAPS (a constant such as
  ``QgsProcessing.TEMPORARY_OUTPUT``), unless it is itself followed by an attribute
  (``Qt.AlignmentFlag.AlignLeft``) or called (a nested class: ``QgsRasterLayer.LayerOptions()``);
- a call of ``exec_()``;
- ``QAction``, ``QActionGroup`` or ``QShortcut`` imported from ``QtWidgets`` other than as the fallback
  in an ``except ImportError`` clause;
- any import of ``PyQt5``/``PyQt6`` directly (``qgis.PyQt`` picks the right one).

Usage: ``python tools/qt6_check.py plugin tests/plugin`` — prints one line per finding and exits 1 if
there is any.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

_QGIS_MODULES = ("qgis.PyQt", "qgis.core", "qgis.gui", "qgis.analysis")
_MOVED_TO_QTGUI = {"QAction", "QActionGroup", "QShortcut"}


def _imported_classes(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(_QGIS_MODULES):
            names.update(alias.asname or alias.name for alias in node.names if alias.name[:1].isupper())
    return names


def _in_except(node: ast.AST, parents: dict) -> bool:
    """Whether ``node`` sits in an ``except`` clause (the Qt5 fallback of a Qt6 import)."""
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.ExceptHandler):
            return True
    return False


def check_source(source: str, filename: str = "<string>") -> list[str]:
    """Return one ``file:line: message`` per Qt5-only form in ``source``."""
    tree = ast.parse(source, filename)
    classes = _imported_classes(tree)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    findings = []

    def report(node: ast.AST, message: str) -> None:
        findings.append(f"{filename}:{node.lineno}: {message}")

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in ("PyQt5", "PyQt6"):
                report(node, f"import from {node.module}: import through qgis.PyQt instead")
            elif node.module.endswith("QtWidgets") and not _in_except(node, parents):
                for alias in node.names:
                    if alias.name in _MOVED_TO_QTGUI:
                        report(node, f"{alias.name} from QtWidgets: Qt6 has it in QtGui only; import it from "
                                     f"QtGui and fall back to QtWidgets (Qt5)")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in ("PyQt5", "PyQt6"):
                    report(node, f"import {alias.name}: import through qgis.PyQt instead")
        elif isinstance(node, ast.Attribute):
            if node.attr == "exec_" and isinstance(parents.get(node), ast.Call):
                report(node, "exec_(): PyQt6 has only exec()")
                continue
            if not (isinstance(node.value, ast.Name) and node.value.id in classes):
                continue
            member = node.attr
            if not member[:1].isupper() or member.isupper():
                continue
            parent = parents.get(node)
            if isinstance(parent, ast.Attribute) or (isinstance(parent, ast.Call) and parent.func is node):
                continue
            report(node, f"{node.value.id}.{member}: unscoped enum member; PyQt6 needs "
                         f"{node.value.id}.<EnumName>.{member}")
    return findings


def check_paths(paths: list[Path]) -> list[str]:
    """Check every ``.py`` file under ``paths`` (files or folders)."""
    findings = []
    for root in paths:
        files = [root] if root.is_file() else sorted(root.rglob("*.py"))
        for path in files:
            findings += check_source(path.read_text(encoding="utf-8"), str(path))
    return findings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="files or folders to check")
    args = parser.parse_args(argv)
    findings = check_paths(args.paths)
    for line in findings:
        print(line)
    if findings:
        print(f"{len(findings)} Qt5-only form(s): see the QGIS plugin migration guide for the Qt6 spellings",
              file=sys.stderr)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
