"""training.metrics: Youden threshold, stratified-bootstrap AUROC interval and operating-point counts."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from training.metrics import (
    THRESHOLD_MARGIN,
    auroc,
    auroc_with_ci,
    bootstrap_note,
    confusion_at,
    youden_threshold,
)


def test_youden_threshold_and_metrics_on_hand_values():
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.35])
    targets = np.array([0, 0, 0, 1, 1, 1])
    assert youden_threshold(targets, scores) == pytest.approx(0.35)
    confusion = confusion_at(targets, scores, 0.5)
    assert (confusion["tp"], confusion["fn"], confusion["tn"], confusion["fp"]) == (2, 1, 3, 0)
    assert confusion["sensitivity"] == pytest.approx(2 / 3, abs=1e-4) and confusion["specificity"] == 1.0
    auc, low, high = auroc_with_ci(targets, scores, n_boot=200)
    assert auc == 1.0 and low == high == 1.0


def test_youden_threshold_on_a_hand_computed_roc():
    # Score ≥ t flags an image. Candidates and J = sensitivity + specificity − 1:
    #   0.9: 1/3 + 4/4 − 1 = 0.333   0.7: 2/3 + 1 − 1 = 0.667   0.5: 2/3 + 3/4 − 1 = 0.417
    #   0.4: 3/3 + 3/4 − 1 = 0.750   0.3: 1 + 2/4 − 1 = 0.5 ...   → 0.4
    targets = [0, 0, 0, 1, 0, 1, 1]
    scores = [0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 0.9]
    assert youden_threshold(targets, scores) == pytest.approx(0.4)
    at = confusion_at(targets, scores, youden_threshold(targets, scores))
    assert at["sensitivity"] + at["specificity"] - 1 == pytest.approx(0.75)


def test_youden_tie_goes_to_the_more_specific_threshold():
    # t = 0.6: sensitivity 3/4, specificity 1 → J 0.75; t = 0.5: sensitivity 1, specificity 3/4 → J 0.75.
    targets = [0, 0, 0, 0, 1, 1, 1, 1]
    scores = [0.1, 0.2, 0.3, 0.55, 0.5, 0.6, 0.8, 0.9]
    assert youden_threshold(targets, scores) == pytest.approx(0.6)


def test_youden_threshold_stays_inside_zero_one():
    # Abnormal images scoring exactly 1.0: the threshold is pulled just below 1 and still flags them.
    targets, scores = [0, 0, 1, 1], [0.2, 0.3, 1.0, 1.0]
    t = youden_threshold(targets, scores)
    assert t == pytest.approx(1 - THRESHOLD_MARGIN) and t < 1.0
    assert confusion_at(targets, scores, t)["sensitivity"] == 1.0
    # A useless score (every J ≤ 0): never +∞ (sklearn's "flag nothing" point), never exactly 0.
    t = youden_threshold([1, 1, 0, 0], [0.0, 0.0, 1.0, 1.0])
    assert np.isfinite(t) and t == pytest.approx(THRESHOLD_MARGIN)


def test_youden_threshold_needs_both_classes_and_binary_targets():
    with pytest.raises(ValueError, match="both"):
        youden_threshold([1, 1, 1], [0.2, 0.5, 0.9])
    with pytest.raises(ValueError, match="0 .normal. or 1"):
        youden_threshold([0, 2, 1], [0.2, 0.5, 0.9])


def _noisy_scores(n_pos: int, n_neg: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    scores = np.round(rng.normal(size=n_pos + n_neg) + 0.8 * targets, 1)  # rounding makes ties
    return targets, scores


def test_bootstrap_interval_contains_the_point_estimate_and_is_reproducible():
    targets, scores = _noisy_scores(60, 90)
    result = auroc_with_ci(targets, scores, n_boot=500, seed=11)
    assert result.auroc == pytest.approx(roc_auc_score(targets, scores))
    assert 0.0 <= result.low < result.auroc < result.high <= 1.0
    assert auroc_with_ci(targets, scores, n_boot=500, seed=11) == result
    assert auroc_with_ci(targets, scores, n_boot=500, seed=12) != result
    assert result.rounded() == {"auroc": round(result.auroc, 4), "ci95": [round(result.low, 4), round(result.high, 4)]}


def test_bootstrap_keeps_a_single_abnormal_image_in_every_resample():
    # An unstratified bootstrap leaves the only abnormal image out of ~37 % of resamples; stratified, each
    # resample AUROC is the share of resampled normals scoring below it, so the interval stays finite.
    targets = np.r_[1, np.zeros(30, int)]
    scores = np.r_[0.8, np.linspace(0.0, 1.0, 30)]
    result = auroc_with_ci(targets, scores, n_boot=400)
    assert np.isfinite([result.low, result.high]).all()
    assert result.low <= result.auroc <= result.high
    assert result.auroc == pytest.approx(roc_auc_score(targets, scores))


def test_bootstrap_interval_of_a_perfect_and_of_a_single_class_score():
    assert tuple(auroc_with_ci([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], n_boot=50)) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="both"):
        auroc_with_ci([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="scores for"):
        auroc_with_ci([0, 1, 1], [0.1, 0.2])


def test_resampled_auroc_equals_sklearn_with_ties():
    """The vectorised AUROC of the resamples is sklearn's, ties counted as one half."""
    from training.metrics import _mann_whitney_auroc

    rng = np.random.default_rng(5)
    pos = np.round(rng.normal(0.5, 1.0, (20, 7)), 1)
    neg = np.round(rng.normal(0.0, 1.0, (20, 11)), 1)
    expected = [roc_auc_score(np.r_[np.ones(7), np.zeros(11)], np.r_[p, n]) for p, n in zip(pos, neg)]
    np.testing.assert_allclose(_mann_whitney_auroc(pos, neg), expected, atol=1e-12)


def test_auroc_is_undefined_for_one_class_and_note_names_the_method():
    assert auroc([1, 1], [0.3, 0.4]) is None
    assert auroc([0, 1, 1], [0.1, 0.3, 0.2]) == pytest.approx(1.0)
    note = bootstrap_note(1000, 5)
    assert note["resamples"] == 1000 and note["seed"] == 5 and "stratified" in note["method"]
    assert note["interval"] == "percentile 95%"
