"""How well a map points at a known lesion: metrics against ground-truth masks, each with its chance level.

Three measures, computed with the map resized (bicubic) to the mask's resolution:

- Pointing game (Zhang et al., 2016): a hit when the map's maximum lies inside the mask (optionally within
  `tolerance_px` of it). Chance = the mask's area fraction (a uniformly random point hits that often).
- Top-x % IoU: the `fraction` of pixels with the highest values (ties broken by position, so exactly
  round(fraction · N) pixels) against the mask. Chance = the expected IoU of a random region of that size,
  ``E[I] / (k + m − E[I])`` with ``E[I] = k·m/N``.
- Energy inside the mask: the share of the map's total mass inside the mask. Chance = area fraction.

Chance levels can also be taken within a region (e.g. the lung fields) — a stricter baseline, because a map
that merely points "somewhere in the lungs" then scores only at chance.

Example:
    >>> import numpy as np
    >>> heat = np.zeros((10, 10)); heat[2, 3] = 1
    >>> mask = np.zeros((10, 10), bool); mask[:5, :5] = True
    >>> localisation_scores(heat, mask).pointing_hit
    True
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage

from medsight.explain.render import resize_heat


@dataclass
class LocalisationScores:
    """Localisation of one map against one ground-truth mask, with chance levels.

    Attributes:
        pointing_hit: the map's maximum falls inside the mask (within the tolerance).
        top_iou: IoU between the top `top_fraction` of the map and the mask.
        energy_inside: share of the map's mass inside the mask.
        mask_fraction: mask area / image area (chance of the pointing game and of energy inside).
        chance_iou: expected top-x % IoU of a random region of the same size.
        region_chance: mask area inside `region` / region area (stricter pointing chance), or None.
        top_fraction: the x of top-x %.
        peak_yx: (row, column) of the map's maximum at mask resolution.
        empty_map: the map was constant (no maximum to point with); counted as a miss.
    """

    pointing_hit: bool
    top_iou: float
    energy_inside: float
    mask_fraction: float
    chance_iou: float
    region_chance: float | None
    top_fraction: float
    peak_yx: tuple[int, int]
    empty_map: bool

    def to_dict(self) -> dict:
        data = asdict(self)
        data["peak_yx"] = list(self.peak_yx)
        return data


def _validate(heat: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mask = np.asarray(mask).astype(bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D; got shape {mask.shape}")
    if not mask.any():
        raise ValueError("mask is empty: localisation needs at least one lesion pixel")
    heat = np.asarray(heat, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f"heatmap must be 2-D; got shape {heat.shape}")
    if heat.shape != mask.shape:
        heat = resize_heat(np.clip(heat, 0.0, 1.0), mask.shape)
    return np.nan_to_num(heat, nan=0.0), mask


def pointing_hit(heat: np.ndarray, mask: np.ndarray, tolerance_px: int = 0) -> bool:
    """True when the map's maximum lies inside the mask (dilated by `tolerance_px`); a constant map misses."""
    heat, mask = _validate(heat, mask)
    if float(heat.max() - heat.min()) <= 1e-12:
        return False
    target = ndimage.binary_dilation(mask, iterations=tolerance_px) if tolerance_px > 0 else mask
    row, col = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return bool(target[row, col])


def top_region(heat: np.ndarray, fraction: float) -> np.ndarray:
    """Boolean mask of exactly round(fraction · N) highest-valued pixels (ties broken by raster order)."""
    heat = np.asarray(heat, dtype=np.float32)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1]; got {fraction}")
    k = max(1, int(round(fraction * heat.size)))
    order = np.argsort(-heat.ravel(), kind="stable")[:k]
    region = np.zeros(heat.size, dtype=bool)
    region[order] = True
    return region.reshape(heat.shape)


def top_fraction_iou(heat: np.ndarray, mask: np.ndarray, fraction: float = 0.10) -> float:
    """IoU between the top `fraction` of the map and the mask."""
    heat, mask = _validate(heat, mask)
    region = top_region(heat, fraction)
    union = np.logical_or(region, mask).sum()
    return float(np.logical_and(region, mask).sum() / union)


def energy_inside(heat: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's (non-negative) mass inside the mask; 0 for an all-zero map."""
    heat, mask = _validate(heat, mask)
    heat = np.clip(heat, 0.0, None)
    total = float(heat.sum())
    return float(heat[mask].sum() / total) if total > 0 else 0.0


def chance_iou(mask_pixels: int, region_pixels: int, total_pixels: int) -> float:
    """Expected IoU of a uniformly random region of `region_pixels` with a mask of `mask_pixels`."""
    expected_intersection = region_pixels * mask_pixels / total_pixels
    return float(expected_intersection / (region_pixels + mask_pixels - expected_intersection))


def localisation_scores(
    heat: np.ndarray,
    mask: np.ndarray,
    *,
    top_fraction: float = 0.10,
    tolerance_px: int = 0,
    region: np.ndarray | None = None,
) -> LocalisationScores:
    """All localisation measures of one map against one mask.

    Args:
        heat: map (any size; resized to the mask).
        mask: boolean ground-truth lesion mask.
        top_fraction: x of the top-x % IoU.
        tolerance_px: pointing-game tolerance in mask pixels.
        region: optional boolean region (e.g. lung fields) for the stricter pointing chance level.

    Returns:
        LocalisationScores.

    Raises:
        ValueError: on an empty mask or shapes that are not 2-D.
    """
    heat, mask = _validate(heat, mask)
    empty = float(heat.max() - heat.min()) <= 1e-12
    row, col = np.unravel_index(int(np.argmax(heat)), heat.shape)
    k = max(1, int(round(top_fraction * heat.size)))
    region_chance = None
    if region is not None:
        region = np.asarray(region).astype(bool) | mask  # the lesion counts as part of the searched region
        region_chance = float(mask.sum() / region.sum())
    return LocalisationScores(
        pointing_hit=False if empty else pointing_hit(heat, mask, tolerance_px),
        top_iou=top_fraction_iou(heat, mask, top_fraction),
        energy_inside=energy_inside(heat, mask),
        mask_fraction=float(mask.mean()),
        chance_iou=chance_iou(int(mask.sum()), k, heat.size),
        region_chance=region_chance,
        top_fraction=float(top_fraction),
        peak_yx=(int(row), int(col)),
        empty_map=bool(empty),
    )


def wilson_interval(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion (sensible for small n and rates near 0 or 1)."""
    if n <= 0:
        return (float("nan"), float("nan"))
    p = hits / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def summarise(scores: Sequence[LocalisationScores] | Iterable[LocalisationScores]) -> dict:
    """Aggregate per-image scores: rates and means next to their chance levels.

    Returns:
        dict with n, pointing_hit_rate (+ 95 % Wilson CI), pointing_chance, pointing_region_chance,
        top_iou_mean, top_iou_chance, energy_inside_mean, energy_chance, empty_maps.
    """
    scores = list(scores)
    n = len(scores)
    if n == 0:
        raise ValueError("no scores to summarise")
    hits = sum(s.pointing_hit for s in scores)
    region = [s.region_chance for s in scores if s.region_chance is not None]
    low, high = wilson_interval(hits, n)
    return {
        "n": n,
        "pointing_hit_rate": hits / n,
        "pointing_hit_rate_ci95": [round(low, 4), round(high, 4)],
        "pointing_chance": float(np.mean([s.mask_fraction for s in scores])),
        "pointing_region_chance": float(np.mean(region)) if region else None,
        "top_fraction": scores[0].top_fraction,
        "top_iou_mean": float(np.mean([s.top_iou for s in scores])),
        "top_iou_chance": float(np.mean([s.chance_iou for s in scores])),
        "energy_inside_mean": float(np.mean([s.energy_inside for s in scores])),
        "energy_chance": float(np.mean([s.mask_fraction for s in scores])),
        "empty_maps": int(sum(s.empty_map for s in scores)),
    }
