"""Statistics: known answers on tiny hand-made arrays, and agreement with brute-force definitions."""

import itertools
import math
import pickle

import numpy as np
import pytest

from mtl_core.errors import MtlError
from mtl_core.explain.stats import (
    LogisticDetector,
    PixelSample,
    auroc,
    detector_stats,
    pearson,
    per_group,
    pixel_keys,
    point_biserial,
    rankdata,
    spearman,
)


def brute_force_auroc(score, positive):
    pos = [s for s, p in zip(score, positive) if p]
    neg = [s for s, p in zip(score, positive) if not p]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auroc_known_answers():
    wrong = np.array([0, 0, 1, 1], dtype=bool)
    assert auroc(np.array([0.1, 0.2, 0.8, 0.9]), wrong) == 1.0  # perfect detector
    assert auroc(np.array([0.9, 0.8, 0.2, 0.1]), wrong) == 0.0  # perfectly reversed
    assert auroc(np.full(4, 0.3), wrong) == 0.5  # constant: every pair a tie
    # One tie between a positive and a negative: (0.5 + 1) / 2 pairs.
    assert auroc(np.array([1.0, 1.0, 2.0]), np.array([0, 1, 1])) == 0.75


def test_auroc_matches_pair_counting_with_many_ties():
    rng = np.random.default_rng(3)
    score = rng.integers(0, 5, 60).astype(float)  # few distinct values: many ties
    positive = rng.random(60) < 0.4
    assert auroc(score, positive) == pytest.approx(brute_force_auroc(score, positive), abs=1e-12)


def test_auroc_without_both_outcomes_is_nan_and_non_finite_pairs_are_skipped():
    assert math.isnan(auroc(np.array([0.1, 0.2]), np.array([1, 1])))
    assert math.isnan(auroc(np.array([]), np.array([])))
    score = np.array([0.1, np.nan, 0.9, 0.95])
    assert auroc(score, np.array([0, 0, 1, 0])) == pytest.approx(brute_force_auroc([0.1, 0.9, 0.95], [0, 1, 0]))


def test_rankdata_averages_ties():
    np.testing.assert_array_equal(rankdata(np.array([10, 20, 20, 5])), [2, 3.5, 3.5, 1])
    np.testing.assert_array_equal(rankdata(np.array([3.0, 3.0, 3.0])), [2, 2, 2])


def test_spearman_and_pearson_known_answers():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert spearman(x, np.exp(x)) == pytest.approx(1.0)  # monotone, not linear
    assert pearson(x, np.exp(x)) < 0.99
    assert spearman(x, -x ** 3) == pytest.approx(-1.0)
    assert spearman(x, np.array([1.0, 3.0, 2.0, 4.0])) == pytest.approx(0.8)
    assert math.isnan(spearman(x, np.ones(4)))


def test_point_biserial_known_answer():
    # Pearson of (0, 0, 1, 1) with (1, 2, 3, 4): covariance 2 / sqrt(1 * 5).
    assert point_biserial(np.array([0, 0, 1, 1]), np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx(2 / math.sqrt(5))
    assert point_biserial(np.array([1, 1, 0, 0]), np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx(-2 / math.sqrt(5))
    assert math.isnan(point_biserial(np.ones(4), np.array([1.0, 2.0, 3.0, 4.0])))


def test_detector_stats_and_per_group():
    score = np.array([0.1, 0.9, 0.2, 0.8, 0.5, 0.5])
    wrong = np.array([0, 1, 0, 1, 1, 0])
    d = detector_stats(score, wrong)
    assert d["auroc"] == pytest.approx(brute_force_auroc(score, wrong))
    assert (d["n"], d["n_wrong"]) == (6, 3)
    groups = np.array([0, 0, 1, 1, 2, 2])
    by = per_group(auroc, groups, {0: "a", 1: "b", 2: "c", 3: "empty"}, score, wrong)
    assert by["a"] == 1.0 and by["b"] == 1.0 and by["c"] == 0.5
    assert math.isnan(by["empty"])


def test_logistic_detector_recovers_group_frequencies():
    # One binary feature: the maximum-likelihood fit predicts each group's observed frequency.
    x = np.array([[0.0]] * 4 + [[1.0]] * 4)
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    det = LogisticDetector(["f"], ridge=0.0).fit(x, y)
    np.testing.assert_allclose(det.score(np.array([[0.0], [1.0]])), [0.25, 0.75], atol=1e-6)


def test_logistic_detector_uses_the_informative_feature_and_round_trips():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 2))
    y = rng.random(2000) < 1 / (1 + np.exp(-3 * x[:, 0]))  # only the first feature matters
    det = LogisticDetector(["useful", "noise"]).fit(x, y)
    assert det.coef[1] > 1.0 and abs(det.coef[2]) < 0.3
    assert auroc(det.score(x), y) > 0.8
    again = LogisticDetector.from_dict(det.to_dict())
    np.testing.assert_allclose(again.score(x), det.score(x))
    with pytest.raises(MtlError, match="all right"):
        LogisticDetector(["f"]).fit(np.zeros((3, 1)), np.zeros(3))
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        det.score(np.zeros((3, 3)))


def test_pixel_sample_is_bounded_and_keeps_rows_together():
    s = PixelSample(["a", "b"], capacity=50, seed=1)
    for start in range(0, 300, 40):
        a = np.arange(start, start + 40, dtype=float)
        s.add({"a": a, "b": 2 * a}, keep=a % 3 != 0)
    assert len(s) == 50
    assert s.seen == sum(1 for v in range(320) if v % 3)
    np.testing.assert_array_equal(s["b"], 2 * s["a"])
    assert not np.any(s["a"] % 3 == 0)
    assert len(set(s["a"])) == 50  # sampled without replacement
    small = PixelSample(["a"], capacity=1000)
    small.add({"a": np.arange(10.0)})
    assert sorted(small["a"]) == list(range(10))


def test_samples_of_two_halves_merge_into_the_sample_of_the_whole():
    rng = np.random.default_rng(3)
    values, ids = rng.random(5000), np.arange(5000) * 7 + (1 << 32)
    whole = PixelSample(["a"], capacity=300, seed=5)
    for part in np.array_split(np.arange(5000), 9):  # in pieces, in another order than the halves
        whole.add({"a": values[part]}, ids=ids[part])
    left, right = PixelSample(["a"], capacity=300, seed=5), PixelSample(["a"], capacity=300, seed=5)
    left.add({"a": values[2500:]}, ids=ids[2500:])
    right.add({"a": values[:2500]}, ids=ids[:2500])
    left.merge(right)
    assert left.seen == whole.seen == 5000 and len(left) == 300
    np.testing.assert_array_equal(left["a"], whole["a"])
    smallest = np.argsort(pixel_keys(ids, 5))[:300]  # the definition: the pixels of the 300 smallest keys
    np.testing.assert_array_equal(whole["a"], values[smallest].astype(np.float32))  # kept as float32
    travelled = PixelSample(["a"], capacity=300, seed=5)
    for part in np.array_split(np.arange(5000), 40):  # small pieces; pickled with pixels not yet selected
        travelled.add({"a": values[part]}, ids=ids[part])
        if part[0] == 2500:
            travelled = pickle.loads(pickle.dumps(travelled))
    np.testing.assert_array_equal(travelled["a"], whole["a"])
    other_seed = PixelSample(["a"], capacity=300, seed=6)
    other_seed.add({"a": values}, ids=ids)
    assert not np.array_equal(np.sort(other_seed["a"]), np.sort(whole["a"]))


def test_confident_errors_score_only_the_confident_half():
    from mtl_core.explain.stats import confident_errors

    rng = np.random.default_rng(0)
    n = 2000
    confidence = np.where(np.arange(n) < n // 2, 0.95, 0.4)  # the first half is the confident one
    wrong = rng.random(n) < 0.2
    perfect_there = np.where(np.arange(n) < n // 2, wrong.astype(float), 0.0)  # knows the confident errors only
    out = confident_errors({"perfect": perfect_there, "noise": rng.random(n), "constant": np.zeros(n)},
                           confidence, wrong, false_alarm=0.1)
    assert out["confidence_at_least"] == pytest.approx(0.675)  # the median
    assert out["pixels"] == n // 2 and out["wrong"] == int(wrong[:n // 2].sum())
    assert out["detectors"]["perfect"] == {"auroc": pytest.approx(1.0), "caught": pytest.approx(1.0)}
    assert 0.4 < out["detectors"]["noise"]["auroc"] < 0.6 and out["detectors"]["noise"]["caught"] < 0.25
    assert out["detectors"]["constant"]["auroc"] == pytest.approx(0.5) and out["detectors"]["constant"]["caught"] == 0
