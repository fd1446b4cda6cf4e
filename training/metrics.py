"""The figures every training and evaluation script reports: AUROC, its bootstrap confidence interval, the
Youden operating threshold, and sensitivity / specificity at a threshold.

One implementation of each, so that the numbers on every model card are computed the same way.
Scores are "higher = more likely abnormal"; targets are 0 (normal / label absent) and 1 (abnormal / present).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score, roc_curve

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
CONFIDENCE_LEVEL = 0.95
# A probability threshold of exactly 0 or 1 flags every image or none, and torchxrayvision-style
# calibration (op_norm) divides by t and by 1 - t; operating thresholds stay this far inside (0, 1).
THRESHOLD_MARGIN = 1e-4


class AurocInterval(NamedTuple):
    """AUROC with the bounds of its confidence interval (unpacks as `auroc, low, high`)."""

    auroc: float
    low: float
    high: float

    def rounded(self, digits: int = 4) -> dict[str, Any]:
        """`{"auroc": …, "ci95": [low, high]}` as written to reports and model cards."""
        return {"auroc": round(self.auroc, digits), "ci95": [round(self.low, digits), round(self.high, digits)]}


def _binary(targets: Any) -> np.ndarray:
    targets = np.asarray(targets).astype(float).ravel()
    if not np.isin(targets, (0.0, 1.0)).all():
        raise ValueError("targets must be 0 (normal) or 1 (abnormal)")
    return targets.astype(bool)


def auroc(targets: Any, scores: Any) -> float | None:
    """Area under the ROC curve, or None when the targets hold only one class (AUROC is undefined)."""
    positive = _binary(targets)
    if positive.all() or not positive.any():
        return None
    return float(roc_auc_score(positive, np.asarray(scores, dtype=float).ravel()))


_RESAMPLES_PER_BLOCK = 250  # bounds the memory of the vectorised resamples


def _mann_whitney_auroc(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """AUROC of each row pair: P(abnormal score > normal score) + ½·P(equal), from average ranks; the same
    value as roc_auc_score, computed for a block of resamples at once."""
    n_pos, n_neg = pos.shape[1], neg.shape[1]
    ranks = rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    return (ranks[:, :n_pos].sum(axis=1) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def auroc_with_ci(targets: Any, scores: Any, n_boot: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                  level: float = CONFIDENCE_LEVEL) -> AurocInterval:
    """AUROC and its stratified-bootstrap percentile confidence interval.

    Method: each of `n_boot` resamples draws, with replacement, as many abnormal images from the abnormal
    ones and as many normal images from the normal ones as the sample holds (stratified bootstrap, as pROC's
    `ci.auc` does by default). Every resample therefore has both classes in the original proportions, so
    no resample is skipped or redrawn: skipping single-class resamples, as an unstratified bootstrap must,
    over-samples the balanced resamples and narrows the interval when one class is small. The interval is
    the (1 − level)/2 and (1 + level)/2 percentiles of the resampled AUROCs; the generator is seeded with
    `seed`, so the interval is reproducible, and the same seed resamples the same images for every score of
    one set of targets (ablations are compared on paired resamples).

    Raises:
        ValueError: targets not 0/1, lengths differ, or only one class (AUROC undefined).
    """
    positive = _binary(targets)
    scores = np.asarray(scores, dtype=float).ravel()
    if len(scores) != len(positive):
        raise ValueError(f"{len(scores)} scores for {len(positive)} targets")
    point = auroc(positive, scores)
    if point is None:
        raise ValueError("AUROC needs both normal and abnormal images")
    pos, neg = scores[positive], scores[~positive]
    rng = np.random.default_rng(seed)
    values = []
    for start in range(0, n_boot, _RESAMPLES_PER_BLOCK):
        rows = min(_RESAMPLES_PER_BLOCK, n_boot - start)
        values.append(_mann_whitney_auroc(pos[rng.integers(0, len(pos), (rows, len(pos)))],
                                          neg[rng.integers(0, len(neg), (rows, len(neg)))]))
    values = np.concatenate(values)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return AurocInterval(point, float(low), float(high))


def bootstrap_note(n_boot: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                   level: float = CONFIDENCE_LEVEL) -> dict[str, Any]:
    """How `auroc_with_ci` computed an interval, for the report or card that shows it."""
    return {"method": "stratified bootstrap (abnormal and normal images resampled separately; "
                      "training/metrics.py auroc_with_ci)",
            "resamples": n_boot, "seed": seed, "interval": f"percentile {level:.0%}"}


def youden_threshold(targets: Any, scores: Any) -> float:
    """Operating threshold on a probability-like score (0–1) that maximises Youden's J = sensitivity +
    specificity − 1; an image is flagged when its score is at or above it.

    Candidates are the observed scores (sklearn's `roc_curve`); its "flag nothing" point (threshold +∞) is
    not a score and is left out; it has J = 0, as does flagging everything, so it never beats a useful
    threshold. Ties in J go to the highest threshold, the more specific of the equally good points. The
    result is kept within [1e-4, 1 − 1e-4]: a threshold of 0 or 1 would flag every image or none, and the
    probability calibration divides by t and 1 − t. Per-label thresholds call this once per label.

    Raises:
        ValueError: targets not 0/1 or only one class.
    """
    positive = _binary(targets)
    if positive.all() or not positive.any():
        raise ValueError("a Youden threshold needs both normal and abnormal images")
    fpr, tpr, thresholds = roc_curve(positive, np.asarray(scores, dtype=float).ravel())
    j = np.where(np.isfinite(thresholds), tpr - fpr, -np.inf)
    best = float(thresholds[int(np.argmax(j))])
    return float(np.clip(best, THRESHOLD_MARGIN, 1.0 - THRESHOLD_MARGIN))


def confusion_at(targets: Any, scores: Any, threshold: float) -> dict[str, Any]:
    """Confusion counts, sensitivity, specificity, PPV, NPV and accuracy when score ≥ threshold flags an image
    (a ratio with an empty denominator is None)."""
    positive = _binary(targets)
    predicted = np.asarray(scores, dtype=float).ravel() >= threshold
    tp, fn = int((predicted & positive).sum()), int((~predicted & positive).sum())
    tn, fp = int((~predicted & ~positive).sum()), int((predicted & ~positive).sum())
    ratio = lambda a, b: round(a / b, 4) if b else None  # noqa: E731
    return {"threshold": round(float(threshold), 4), "tp": tp, "fp": fp, "tn": tn, "fn": fn,
            "sensitivity": ratio(tp, tp + fn), "specificity": ratio(tn, tn + fp),
            "ppv": ratio(tp, tp + fp), "npv": ratio(tn, tn + fn), "accuracy": ratio(tp + tn, len(positive))}
