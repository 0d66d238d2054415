"""Statistics that relate explanation scores to main-task errors: AUROC, correlations and a combined detector.

Every function takes flat arrays of per-pixel values and ignores non-finite entries pair-wise. A
*detector* here is any score where higher should mean "the main task is more likely wrong"; its
AUROC is the probability that a randomly drawn wrong pixel scores higher than a randomly drawn
correct one (ties count one half), so 1 is a perfect detector, 0.5 chance and 0 a perfectly
reversed one.

:class:`PixelSample` keeps a bounded, uniform random sample of pixels while output rasters are
streamed window by window, so statistics over a whole scene never need the whole scene in memory.
:class:`LogisticDetector` combines several scores into one (plain numpy, Newton's method with a
small ridge penalty); fit it on validation pixels only and score it on other pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import MtlError


def _pairs(*arrays: np.ndarray) -> list[np.ndarray]:
    """Flatten arrays of one size and keep the positions where every one of them is finite."""
    flat = [np.asarray(a, dtype=np.float64).ravel() for a in arrays]
    sizes = {a.size for a in flat}
    if len(sizes) > 1:
        raise ValueError(f"arrays must have the same number of elements, got sizes {[a.size for a in flat]}")
    keep = np.ones(flat[0].size, dtype=bool)
    for a in flat:
        keep &= np.isfinite(a)
    return [a[keep] for a in flat]


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a 1-D array, ties receiving the average of the ranks they span.

    Args:
        x: (n,) values.

    Returns:
        (n,) float64 ranks.
    """
    x = np.asarray(x).ravel()
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    # Start of each run of equal values, and its length.
    new = np.r_[True, sorted_x[1:] != sorted_x[:-1]]
    starts = np.flatnonzero(new)
    lengths = np.diff(np.r_[starts, x.size])
    average = starts + (lengths + 1) / 2.0  # mean of ranks starts+1 .. starts+length
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = np.repeat(average, lengths)
    return ranks


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` as a detector of ``positive`` (Mann-Whitney U, ties 1/2).

    Args:
        score: (n,) detector values, higher = more likely positive.
        positive: (n,) bool or 0/1: True where the event (e.g. a main-task error) happened.

    Returns:
        AUROC in [0, 1]; NaN when there is no positive or no negative pixel.
    """
    s, p = _pairs(score, positive)
    pos = p > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two (n,) arrays; NaN when either is constant or empty."""
    a, b = _pairs(x, y)
    if a.size < 2:
        return float("nan")
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (Pearson on average ranks) of two (n,) arrays; NaN if either is constant."""
    a, b = _pairs(x, y)
    if a.size < 2:
        return float("nan")
    return pearson(rankdata(a), rankdata(b))


def point_biserial(binary: np.ndarray, x: np.ndarray) -> float:
    """Point-biserial correlation between a 0/1 variable and a continuous one (Pearson on the 0/1 coding).

    Args:
        binary: (n,) bool or 0/1, e.g. "the main task is wrong here".
        x: (n,) continuous values, e.g. reconstruction error.

    Returns:
        Correlation in [-1, 1]; NaN when either variable is constant.
    """
    b, v = _pairs(binary, x)
    return pearson((b > 0.5).astype(np.float64), v)


def detector_stats(score: np.ndarray, wrong: np.ndarray) -> dict[str, float]:
    """AUROC, Spearman and point-biserial correlation of one score against a 0/1 error mask."""
    return {
        "auroc": auroc(score, wrong),
        "spearman": spearman(score, wrong),
        "point_biserial": point_biserial(wrong, score),
        "n": int(_pairs(score, wrong)[0].size),
        "n_wrong": int((_pairs(score, wrong)[1] > 0.5).sum()),
    }


def confident_errors(scores: dict[str, np.ndarray], confidence: np.ndarray, wrong: np.ndarray,
                     false_alarm: float = 0.1, level: float | None = None) -> dict[str, Any]:
    """How well each score finds the errors the model is confident about: among the most confident half of the
    pixels (confidence at least its median), the AUROC of each score and the share of wrong pixels it flags when
    its threshold lets ``false_alarm`` of the correct ones through.

    Args:
        scores: name -> (n,) detector score (higher = more likely wrong).
        confidence: (n,) the model's confidence (highest class probability).
        wrong: (n,) 0/1 main-task error.
        false_alarm: share of confident correct pixels flagged, which sets each score's threshold.
        level: the confidence from which a pixel counts as confident (default: the median of ``confidence``;
            per-class rows pass the overall median).

    Returns:
        ``{"confidence_at_least", "pixels", "wrong", "false_alarm", "detectors": {name: {"auroc", "caught"}}}``;
        NaN where a score has no finite value among confident pixels or there is no confident error.
    """
    conf = np.asarray(confidence, dtype=np.float64)
    bad = np.asarray(wrong, dtype=np.float64) > 0.5
    finite = np.isfinite(conf)
    if level is None:
        level = float(np.median(conf[finite])) if finite.any() else float("nan")
    sure = finite & (conf >= level)
    out: dict[str, Any] = {"confidence_at_least": level, "pixels": int(sure.sum()), "wrong": int((sure & bad).sum()),
                           "false_alarm": float(false_alarm), "detectors": {}}
    for name, score in scores.items():
        s = np.asarray(score, dtype=np.float64)
        ok = sure & np.isfinite(s)
        right, errors = s[ok & ~bad], s[ok & bad]
        caught = float("nan")
        if right.size and errors.size:
            caught = float((errors > np.quantile(right, 1.0 - false_alarm)).mean())
        out["detectors"][name] = {"auroc": auroc(s[ok], bad[ok]), "caught": caught}
    return out


def per_group(
    fn: Callable[..., float], groups: np.ndarray, names: dict[int, str], *arrays: np.ndarray
) -> dict[str, float]:
    """Apply a statistic separately to the pixels of each group (e.g. each reference class).

    Args:
        fn: statistic taking ``arrays`` restricted to one group.
        groups: (n,) integer group of each pixel; values missing from ``names`` are skipped.
        names: group value -> name used as key of the result.
        arrays: (n,) arrays passed to ``fn``.

    Returns:
        name -> statistic (NaN where the group is empty or degenerate).
    """
    groups = np.asarray(groups).ravel()
    flat = [np.asarray(a).ravel() for a in arrays]
    out = {}
    for value, name in names.items():
        sel = groups == value
        out[name] = fn(*(a[sel] for a in flat)) if sel.any() else float("nan")
    return out


class LogisticDetector:
    """Logistic regression of a 0/1 event on a few standardised features (numpy, Newton's method).

    Args:
        names: feature names, in the column order of the arrays given to :meth:`fit` and :meth:`score`.
        ridge: L2 penalty on the weights (not the intercept), in units of standardised features.
    """

    def __init__(self, names: list[str], ridge: float = 1e-3) -> None:
        self.names = list(names)
        self.ridge = float(ridge)
        self.mean = np.zeros(len(names))
        self.std = np.ones(len(names))
        self.coef = np.zeros(len(names) + 1)  # intercept first
        self.fitted = False

    def _design(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.names):
            raise ValueError(f"features must be (n, {len(self.names)}) for {self.names}, got shape {x.shape}")
        return np.hstack([np.ones((x.shape[0], 1)), (x - self.mean) / self.std])

    def fit(self, x: np.ndarray, y: np.ndarray, iterations: int = 50) -> LogisticDetector:
        """Fit on (n, F) features and (n,) 0/1 targets; rows with a non-finite value are skipped.

        Raises:
            MtlError: when the targets hold only one class (nothing to separate).
        """
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64).ravel()
        keep = np.isfinite(x).all(axis=1) & np.isfinite(y)
        x, y = x[keep], (y[keep] > 0.5).astype(np.float64)
        if y.size == 0 or y.min() == y.max():
            raise MtlError(
                f"cannot fit a detector on {y.size} pixel(s) that are all {'wrong' if y.size and y[0] else 'right'}; "
                "fit it on an area where the model makes some errors and some correct predictions"
            )
        self.mean = x.mean(axis=0)
        self.std = x.std(axis=0)
        self.std[self.std <= 0] = 1.0
        d = self._design(x)
        w = np.zeros(d.shape[1])
        w[0] = math.log(y.mean() / (1 - y.mean()))
        penalty = np.full(d.shape[1], self.ridge * y.size)
        penalty[0] = 0.0
        for _ in range(iterations):
            p = 1.0 / (1.0 + np.exp(-np.clip(d @ w, -30, 30)))
            grad = d.T @ (p - y) + penalty * w
            hess = (d * (p * (1 - p))[:, None]).T @ d + np.diag(penalty) + 1e-9 * np.eye(d.shape[1])
            step = np.linalg.solve(hess, grad)
            w -= step
            if np.abs(step).max() < 1e-8:
                break
        self.coef = w
        self.fitted = True
        return self

    def score(self, x: np.ndarray) -> np.ndarray:
        """(n,) predicted probability of the event for (n, F) features; NaN where a feature is not finite."""
        if not self.fitted:
            raise MtlError("the detector is not fitted yet; call fit() on validation pixels first")
        d = self._design(x)
        with np.errstate(invalid="ignore"):
            return 1.0 / (1.0 + np.exp(-np.clip(d @ self.coef, -30, 30)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (feature names, standardisation and coefficients)."""
        return {"names": self.names, "ridge": self.ridge, "mean": self.mean.tolist(), "std": self.std.tolist(),
                "coef": self.coef.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LogisticDetector:
        det = cls(d["names"], d.get("ridge", 1e-3))
        det.mean, det.std, det.coef = (np.asarray(d[k], dtype=np.float64) for k in ("mean", "std", "coef"))
        det.fitted = True
        return det


def pixel_keys(ids: np.ndarray, seed: int) -> np.ndarray:
    """Uniform keys in [0, 1) from pixel ids (splitmix64 of id and seed): the same pixel gets the same key in any
    run, whatever order or process it is seen in."""
    z = np.asarray(ids, dtype=np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15 + 1) % 2**64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


class PixelSample:
    """A uniform random sample of at most ``capacity`` pixels, fed batch by batch (bounded memory).

    Each pixel gets a random key and the ``capacity`` smallest keys are kept, which is a uniform
    sample without replacement of everything seen so far, whatever the batch sizes. With pixel ids the keys
    are a hash of them (:func:`pixel_keys`), so samples of parts of a raster taken in other processes
    :meth:`merge` into exactly the sample of the whole.

    Args:
        names: the per-pixel variables to keep, e.g. ``["wrong", "entropy", "recon_error"]``.
        capacity: the most pixels kept.
        seed: random seed (the same inputs and seed give the same sample).
    """

    def __init__(self, names: list[str], capacity: int = 1_000_000, seed: int = 0) -> None:
        self.names = list(names)
        self.capacity = int(capacity)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.keys = np.empty(0)
        self.values = np.empty((0, len(self.names)), dtype=np.float32)
        self.seen = 0
        self._order: np.ndarray | None = None  # key order, computed when read (equal samples give equal arrays)
        # Pixels added since the last selection, and the largest kept key once the sample is full (a pixel with a
        # larger key can never be kept): the selection runs once per ``capacity`` pixels, not once per batch.
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._cutoff = np.inf

    def add(self, columns: dict[str, np.ndarray], keep: np.ndarray | None = None,
            ids: np.ndarray | None = None) -> None:
        """Add pixels: ``columns`` maps every name to an array of one shape; ``keep`` selects pixels; ``ids``
        (the same shape, unique per pixel) makes the sample independent of the order pixels arrive in."""
        missing = set(self.names) - set(columns)
        if missing:
            raise ValueError(f"columns {sorted(missing)} are missing; expected {self.names}")
        cols = [np.asarray(columns[n]).ravel() for n in self.names]
        if ids is not None:
            cols.append(np.asarray(ids).ravel())
        if keep is not None:
            k = np.asarray(keep, dtype=bool).ravel()
            cols = [c[k] for c in cols]
        n = cols[0].size
        if n == 0:
            return
        self.seen += n
        new = pixel_keys(cols.pop(), self.seed) if ids is not None else self.rng.random(n)
        kept = new < self._cutoff
        self._pending.append((new[kept], np.stack([c[kept] for c in cols], axis=1).astype(np.float32)))
        if self.keys.size + sum(k.size for k, _ in self._pending) > 2 * self.capacity:
            self._select()

    def merge(self, other: PixelSample) -> None:
        """Add the sample of other pixels (taken with ids and the same seed): the result is the sample of both."""
        other._select()
        self.seen += other.seen
        self._pending.append((other.keys, other.values))
        self._select()

    def _select(self) -> None:
        """Keep the ``capacity`` smallest keys of the sample and the pixels added since."""
        if not self._pending:
            return
        keys = np.concatenate([self.keys] + [k for k, _ in self._pending])
        values = np.concatenate([self.values] + [v for _, v in self._pending])
        self._pending = []
        if keys.size > self.capacity:
            idx = np.argpartition(keys, self.capacity - 1)[:self.capacity]
            keys, values = keys[idx], values[idx]
        if keys.size == self.capacity:
            self._cutoff = keys.max()
        self.keys, self.values, self._order = keys, values, None

    def __getstate__(self) -> dict:
        self._select()  # a shard's sample travels to the driver selected
        return self.__dict__

    def __len__(self) -> int:
        self._select()
        return self.keys.size

    def __getitem__(self, name: str) -> np.ndarray:
        """One variable of the sampled pixels, in key order."""
        self._select()
        if self._order is None:
            self._order = np.argsort(self.keys, kind="stable")
        return self.values[self._order, self.names.index(name)].astype(np.float64)
