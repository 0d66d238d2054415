"""The static Qt6 check: the code that runs inside QGIS is clean, and each Qt5-only form fails it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import qt6_check  # noqa: E402

QGIS_SIDE = [ROOT / "plugin", ROOT / "tests" / "plugin", ROOT / "tools" / "make_styles.py",
             ROOT / "tools" / "demo_project.py"]
HEAD = "from qgis.PyQt.QtCore import Qt\nfrom qgis.core import Qgis, QgsProcessing\n"


def test_the_code_that_runs_in_qgis_has_no_qt5_only_form():
    assert qt6_check.check_paths(QGIS_SIDE) == []


@pytest.mark.parametrize("line, found", [
    ("x = Qt.AlignLeft", "Qt.AlignLeft"),
    ("level = Qgis.Warning", "Qgis.Warning"),
    ("f(Qt.UserRole, 1)", "Qt.UserRole"),
    ("dialog.exec_()", "exec_()"),
    ("from qgis.PyQt.QtWidgets import QAction", "QAction from QtWidgets"),
    ("from PyQt5.QtCore import Qt", "import through qgis.PyQt"),
    ("import PyQt5.QtGui", "import through qgis.PyQt"),
])
def test_a_planted_qt5_form_fails(line, found, tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text(HEAD + line + "\n")
    findings = qt6_check.check_paths([tmp_path])
    assert len(findings) == 1 and found in findings[0] and findings[0].startswith(f"{planted}:3:")
    assert qt6_check.main([str(tmp_path)]) == 1


@pytest.mark.parametrize("line", [
    "x = Qt.AlignmentFlag.AlignLeft",
    "level = Qgis.MessageLevel.Warning",
    "out = QgsProcessing.TEMPORARY_OUTPUT",  # a constant, not an enum member
    "options = Qgis.SomeNestedClass()",  # a call: a class, not a member
    "dialog.exec()",
    "x = other.AlignLeft",  # not a Qt or QGIS class
    "try:\n    from qgis.PyQt.QtGui import QAction\nexcept ImportError:\n    from qgis.PyQt.QtWidgets import QAction",
])
def test_qt6_forms_pass(line, tmp_path):
    (tmp_path / "ok.py").write_text(HEAD + line + "\n")
    assert qt6_check.check_paths([tmp_path]) == []
    assert qt6_check.main([str(tmp_path)]) == 0
