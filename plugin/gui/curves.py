"""A small live plot of training curves (losses per step, validation scores), drawn with QPainter.

Nothing heavier than Qt: QGIS's Python may lack matplotlib's Qt canvas, and the plot only needs lines.
Each series is ``name -> [(step, value)]``; losses share the left axis (log scale: they fall by orders of
magnitude), the validation score is drawn as points on the right axis (0–1).
"""

from __future__ import annotations

import math

from qgis.PyQt.QtCore import QPointF, QRectF, Qt
from qgis.PyQt.QtGui import QColor, QPainter, QPen
from qgis.PyQt.QtWidgets import QSizePolicy, QWidget

COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]
SCORE_COLOUR = "#000000"


class CurvePlot(QWidget):
    """Loss curves (left axis, log scale) and a validation score (right axis) against the step."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("trainCurves")
        self.setMinimumHeight(160)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.steps = 1
        self.losses: dict[str, list[tuple[int, float]]] = {}
        self.score_name = ""
        self.scores: list[tuple[int, float]] = []

    def clear(self, steps: int) -> None:
        """Forget every point; the x axis runs from 0 to ``steps``."""
        self.steps = max(1, steps)
        self.losses, self.scores, self.score_name = {}, [], ""
        self.update()

    def set_length(self, steps: int) -> None:
        """The x axis runs from 0 to ``steps`` (a budget in minutes knows its steps once the rate is measured)."""
        if max(1, steps) != self.steps:
            self.steps = max(1, steps)
            self.update()

    def add_losses(self, step: int, losses: dict[str, float]) -> None:
        """One training step's losses (``main``, ``aux/<name>``, ``total`` …); non-finite values are skipped."""
        for name, value in losses.items():
            if math.isfinite(value) and value > 0:
                self.losses.setdefault(name, []).append((step, value))
        self.update()

    def add_score(self, step: int, name: str, value: float) -> None:
        """A validation score (mIoU, OA or R², between 0 and 1)."""
        if math.isfinite(value):
            self.score_name = name
            self.scores.append((step, value))
        self.update()

    def points(self) -> int:
        """How many points are drawn (for tests and the status line)."""
        return sum(len(v) for v in self.losses.values()) + len(self.scores)

    def paintEvent(self, _event) -> None:  # noqa: N802 (Qt name)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.fillRect(self.rect(), QColor("white"))
        metrics = painter.fontMetrics()
        left, right, top, bottom = metrics.horizontalAdvance("1e-00") + 8, 34, 6, metrics.height() + 8
        plot = QRectF(left, top, max(1, self.width() - left - right), max(1, self.height() - top - bottom))
        painter.setPen(QPen(QColor("#888888")))
        painter.drawRect(plot)
        painter.drawText(QRectF(plot.left(), plot.bottom() + 2, plot.width(), metrics.height()),
                         int(Qt.AlignmentFlag.AlignCenter), self.tr("step (of {})").format(self.steps))
        values = [v for series in self.losses.values() for _, v in series]
        if values:
            lo, hi = math.log10(min(values)), math.log10(max(values))
            if hi - lo < 1e-6:
                lo, hi = lo - 0.5, hi + 0.5

            def to_point(step: float, value: float, lo=lo, hi=hi) -> QPointF:
                return QPointF(plot.left() + plot.width() * step / self.steps,
                               plot.bottom() - plot.height() * (math.log10(value) - lo) / (hi - lo))

            for label, y in ((f"{10 ** hi:.2g}", plot.top()), (f"{10 ** lo:.2g}", plot.bottom())):
                painter.drawText(QRectF(0, y - metrics.height() / 2, left - 4, metrics.height()),
                                 int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter), label)
            for i, (name, series) in enumerate(self.losses.items()):
                colour = QColor(COLOURS[i % len(COLOURS)])
                painter.setPen(QPen(colour, 1.5))
                pts = [to_point(s, v) for s, v in series]
                for a, b in zip(pts, pts[1:]):
                    painter.drawLine(a, b)
                painter.drawText(QPointF(plot.left() + 6, plot.top() + (i + 1) * metrics.height()), name)
        if self.scores:
            painter.setPen(QPen(QColor(SCORE_COLOUR), 1))
            painter.setBrush(QColor(SCORE_COLOUR))
            for step, value in self.scores:
                y = plot.bottom() - plot.height() * min(1.0, max(0.0, value))
                painter.drawEllipse(QPointF(plot.left() + plot.width() * step / self.steps, y), 3, 3)
            last = self.scores[-1][1]
            painter.drawText(QRectF(plot.right() + 2, plot.top(), right, metrics.height()),
                             int(Qt.AlignmentFlag.AlignLeft), "1")
            painter.drawText(QRectF(plot.right() + 2, plot.bottom() - metrics.height(), right, metrics.height()),
                             int(Qt.AlignmentFlag.AlignLeft), "0")
            painter.drawText(QPointF(plot.right() - metrics.horizontalAdvance(f"val {self.score_name} 0.000") - 6,
                                     plot.top() + metrics.height()), f"val {self.score_name} {last:.3f}")
        elif not values:
            painter.drawText(plot, int(Qt.AlignmentFlag.AlignCenter), self.tr("Curves appear as training runs"))
        painter.end()
