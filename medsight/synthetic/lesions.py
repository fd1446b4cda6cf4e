"""Findings painted onto a rendered normal chest, each with its ground-truth mask and description.

Each finding function takes the random stream for that finding, the anatomy and the rendered layers,
modifies the layers in place (adds density, erases lung markings) and returns a ``Lesion`` with its
mask, patient-side laterality and the words a report needs (lobe/zone, size).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from medsight.synthetic.anatomy import (
    FIELD_OF_VIEW_CM,
    Anatomy,
    Rendered,
    cardiothoracic_ratio,
    smoothstep,
    texture,
)


@dataclass
class Lesion:
    """Ground truth for one finding."""

    name: str
    mask: np.ndarray
    laterality: str  # patient side: "right" | "left" | "bilateral" | "n/a"
    details: dict = field(default_factory=dict)


def _pick_side(rng: np.random.Generator, p_bilateral: float = 0.0) -> str:
    r = rng.random()
    if r < p_bilateral:
        return "bilateral"
    return "right" if rng.random() < 0.5 else "left"


def _sides(side: str) -> tuple[str, ...]:
    return ("right", "left") if side == "bilateral" else (side,)


def _lung_of(anat: Anatomy, side: str):
    return anat.right if side == "right" else anat.left


def _lobe(side: str, t: float) -> str:
    """Lobe name from the height fraction ``t`` of a point in its lung (0 apex, 1 base)."""
    if side == "right":
        return "upper lobe" if t < 0.42 else ("middle lobe" if t < 0.62 else "lower lobe")
    return "upper lobe" if t < 0.45 else ("lingula" if t < 0.63 else "lower lobe")


def _zone(t: float) -> str:
    return "upper zone" if t < 0.36 else ("mid zone" if t < 0.66 else "lower zone")


def _sample_point(rng: np.random.Generator, anat: Anatomy, side: str, min_depth: float,
                  t_range: tuple[float, float]) -> tuple[float, float]:
    """A random point inside one lung, at least ``min_depth`` from its edges, in patient coordinates.

    Drawn by rejection sampling on the analytic outline, so the same seed places a lesion at the
    same anatomical spot whatever the image size.
    """
    lung = _lung_of(anat, side)
    for depth in (min_depth, min_depth / 2, 0.0):
        n = 512
        xm = rng.uniform(0.0, lung.x_lateral, n)
        t = rng.uniform(t_range[0], t_range[1], n)
        y = lung.y_apex + t * (lung.y_cp - lung.y_apex)
        x = lung.sign * xm
        medial_limit = anat.mediastinum[0 if side == "right" else 1] + 0.02
        ok = (lung.sdf(x, y) > depth) & (xm > medial_limit + depth) & (anat.heart.soft(x, y, 0.01) < 0.01)
        idx = np.flatnonzero(ok)
        if idx.size:
            i = int(idx[0])
            return float(x[i]), float(y[i])
    raise ValueError("No room in the lung for the lesion.")


def consolidation(rng: np.random.Generator, anat: Anatomy, r: Rendered) -> Lesion:
    """Patchy airspace opacity: a lumpy blob confined to the lung, with air bronchograms."""
    g = r.grid
    side = _pick_side(rng, 0.12)
    lumpy = texture(rng, g.size, (2.5, 8.0))
    bronchi = texture(rng, g.size, (1.0, 3.0))
    mask = np.zeros(g.x.shape, bool)
    descr = []
    amp = rng.uniform(0.28, 0.5)
    for s in _sides(side):
        lung = _lung_of(anat, s)
        t_lo, t_hi = [(0.1, 0.4), (0.4, 0.62), (0.62, 0.92)][rng.integers(3)]
        cx, cy = _sample_point(rng, anat, s, 0.08, (t_lo, t_hi))
        rad = rng.uniform(0.10, 0.24)
        field_ = np.zeros_like(g.x)
        for _ in range(int(rng.integers(2, 5))):
            ox, oy = rng.normal(0, rad * 0.45, 2)
            rr = rad * rng.uniform(0.5, 0.9)
            field_ += np.exp(-(((g.x - cx - ox) ** 2 + ((g.y - cy - oy) * 0.9) ** 2) / rr**2))
        # Ill-defined, fluffy margins: a soft ramp of summed blobs broken up by coarse texture.
        blob = smoothstep(0.25, 0.85, field_ + 0.15 * lumpy)
        blob *= r.lung_soft[s]
        # Air bronchograms: lucent branching lines kept open inside the opacity.
        bronchogram = np.exp(-((bronchi / 0.25) ** 2)) * smoothstep(0.6, 0.95, blob) * 0.35
        r.density += amp * blob * (1.0 - bronchogram) + 0.04 * lumpy * blob
        r.vessels *= 1.0 - 0.6 * blob
        # Generous outline, as annotators draw ill-defined airspace disease; never outside the lung.
        m = (blob > 0.1) & (r.lung_sdf[s] > 0) & (r.medi_soft < 0.5)
        mask |= m
        lung_px = max(int((r.lung_sdf[s] > 0).sum()), 1)
        frac = m.sum() / lung_px
        t = lung.height_fraction(cy)
        descr.append({"side": s, "lobe": _lobe(s, t), "zone": _zone(t), "fraction_of_lung": round(float(frac), 3)})
    frac = max(d["fraction_of_lung"] for d in descr)
    size = "small" if frac < 0.07 else ("moderate" if frac < 0.16 else "large")
    return Lesion("consolidation", mask, side, {"sites": descr, "size": size, "intensity": round(float(amp), 3)})


def nodule(rng: np.random.Generator, anat: Anatomy, r: Rendered) -> Lesion:
    """A round, slightly lobulated dense lesion (a mass when 3 cm or more)."""
    g = r.grid
    side = _pick_side(rng)
    lung = _lung_of(anat, side)
    diameter_cm = float(np.exp(rng.uniform(np.log(1.0), np.log(5.0))))
    rad = diameter_cm / FIELD_OF_VIEW_CM  # normalised units: image width is 2
    cx, cy = _sample_point(rng, anat, side, rad + 0.04, (0.12, 0.85))
    dx, dy = g.x - cx, g.y - cy
    theta = np.arctan2(dy, dx)
    lobulation = 1.0 + rng.uniform(0.02, 0.1) * np.cos(int(rng.integers(3, 7)) * theta + rng.uniform(0, 6.3))
    d = np.sqrt(dx**2 + dy**2) / (rad * lobulation)
    amp = rng.uniform(0.28, 0.5) * (0.8 + 0.2 * min(diameter_cm / 3.0, 1.5))
    # Projection of a sphere: thickest at the centre.
    profile = np.sqrt(np.clip(1.0 - d**2, 0.0, 1.0)) ** 0.6 * smoothstep(1.0 + g.px / rad, 1.0 - g.px / rad, d)
    r.density += amp * profile
    mask = d < 1.0
    t = lung.height_fraction(cy)
    kind = "mass" if diameter_cm >= 3.0 else "nodule"
    return Lesion("nodule", mask, side, {
        "lobe": _lobe(side, t), "zone": _zone(t), "diameter_cm": round(diameter_cm, 1), "kind": kind,
        "intensity": round(float(amp), 3),
    })


def effusion(rng: np.random.Generator, anat: Anatomy, r: Rendered) -> Lesion:
    """Dependent pleural fluid: a dense base with a meniscus climbing the lateral wall."""
    g = r.grid
    side = _pick_side(rng, 0.2)
    mask = np.zeros(g.x.shape, bool)
    heights = []
    for s in _sides(side):
        lung = _lung_of(anat, s)
        h = rng.uniform(0.12, 0.48)  # fraction of lung height filled at the lateral wall
        xm = lung.sign * g.x
        span = lung.x_lateral - lung.x_medial
        lat = np.clip((xm - lung.x_medial) / span, 0.0, 1.2)
        y_lateral = lung.y_cp - h * (lung.y_cp - lung.y_apex)
        meniscus = rng.uniform(0.10, 0.2)
        # The fluid surface is concave upward: highest at the lateral chest wall.
        level = y_lateral + meniscus * (1.0 - np.clip(lat, 0, 1) ** 2)
        fill = smoothstep(level - 0.01, level + 0.05, g.y)
        # A thin layer of fluid tracks up the lateral chest wall above the meniscus.
        wall = smoothstep(0.035, 0.0, r.lung_sdf[s]) * smoothstep(y_lateral - 0.12, y_lateral, g.y) * (lat > 0.6)
        fill = np.maximum(fill, 0.8 * wall)
        region = smoothstep(-g.px, g.px, r.lung_sdf[s]) * (1.0 - r.medi_soft)
        fluid = fill * region
        # Fluid replaces aerated lung, so the base turns as dense as soft tissue and hides the diaphragm.
        r.density += r.air * fluid * rng.uniform(0.9, 1.0) + 0.04 * fluid
        r.vessels *= 1.0 - fluid
        mask |= (fluid > 0.25) & (r.lung_sdf[s] > 0)
        heights.append(h)
    h = max(heights)
    size = "small" if h < 0.22 else ("moderate" if h < 0.36 else "large")
    return Lesion("effusion", mask, side, {"size": size, "height_fraction": [round(float(v), 3) for v in heights]})


def pneumothorax(rng: np.random.Generator, anat: Anatomy, r: Rendered) -> Lesion:
    """Air in the pleural space: a lucent rim without markings outside a visible visceral pleural line."""
    g = r.grid
    side = _pick_side(rng)
    lung = _lung_of(anat, side)
    factor = rng.uniform(0.62, 0.9)
    # Collapse towards the lower medial lung (the hilum and the tethered base).
    cx = lung.x_medial + 0.25 * (lung.x_lateral - lung.x_medial)
    cy = lung.y_cp - 0.05
    collapsed = lung.scaled(factor, cx, cy)
    d_in = collapsed.sdf(g.x, g.y)
    outer = r.lung_sdf[side]
    gap = smoothstep(-g.px, g.px, outer) * smoothstep(g.px, -g.px, d_in) * (1.0 - r.medi_soft)
    r.vessels *= 1.0 - gap
    r.density -= rng.uniform(0.08, 0.16) * gap
    # Visceral pleural line: a thin white line at the edge of the collapsed lung.
    line = np.exp(-((d_in / (1.2 * g.px + 0.004)) ** 2)) * smoothstep(0.0, 0.02, outer)
    r.density += rng.uniform(0.08, 0.16) * line
    mask = (gap > 0.5) & (outer > 0)
    apical_gap_cm = (1 - factor) * (cy - lung.y_apex) * FIELD_OF_VIEW_CM / 2.0
    size = "small" if factor > 0.83 else ("moderate" if factor > 0.72 else "large")
    return Lesion("pneumothorax", mask, side, {
        "size": size, "apical_gap_cm": round(float(apical_gap_cm), 1), "collapse_factor": round(float(factor), 3),
    })


def cardiomegaly_ctr(rng: np.random.Generator) -> float:
    """Target cardiothoracic ratio for an enlarged heart."""
    return float(rng.uniform(0.60, 0.72))


def describe_cardiomegaly(heart_mask: np.ndarray, lung_mask: np.ndarray) -> Lesion:
    ctr = cardiothoracic_ratio(heart_mask, lung_mask)
    size = "mild" if ctr < 0.62 else ("moderate" if ctr < 0.67 else "marked")
    return Lesion("cardiomegaly", heart_mask, "n/a", {"ctr": round(ctr, 3), "size": size})


PAINTERS = {
    "consolidation": consolidation,
    "nodule": nodule,
    "effusion": effusion,
    "pneumothorax": pneumothorax,
}

__all__ = ["Lesion", "PAINTERS", "cardiomegaly_ctr", "describe_cardiomegaly"]
