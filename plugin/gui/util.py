"""Small helpers shared by the panel's pages."""

from __future__ import annotations

from qgis.PyQt.QtWidgets import QComboBox, QWidget

#: The style of a page's status line when it shows an error.
ERROR_STYLE = "color: #b00020;"


def compact(combo: QComboBox) -> None:
    """A combo as wide as the panel lets it be, not as wide as its longest text (band lists, layer names, file
    paths): a page must fit a narrow dock without being cut on the right."""
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(8)


def compact_all(page: QWidget) -> None:
    """:func:`compact` every combo of a page."""
    for combo in page.findChildren(QComboBox):
        compact(combo)
