"""Image-content measures of the input gate: does the picture look like a frontal chest film?

Where the lungs sit in a frontal film comes from a prior fitted on 435 real lung masks
(``models/gate_chest_layout.npz``; see its card and ``training/fit_gate_layout.py``). The image
(MONOCHROME1 already inverted by ingest) is cut to its non-flat part (collimation, export padding)
and to the body's width (air beside a small patient), reduced to 32x32 and replaced by the rank of
each cell, so exposure, window, gamma and bit depth do not matter. The prior is scaled, shifted
and tilted over a small grid of alignments (off-centre, paediatric, tightly cropped, tilted films)
and the best value of each measure is kept:

- ``layout_correlation``: correlation between the rank grid and the lung layout inside the body
  window (lungs dark; mediastinum, neck, shoulders and abdomen bright). The gate's content score.
- ``lung_contrast``: mean-rank gap between the mediastinum band and the darker lung field.
- ``symmetry``: correlation of the picture with its mirror image, allowing +-10 degrees of tilt.
- ``edge_air``: share of the picture's outer ring that is dark background; a chest film is a crop
  through the body (neck and abdomen leave the frame), a CT slice or a hand on black is ringed by air.

``flat_fraction`` (screenshot test) counts pixels whose 3x3 neighbourhood is exactly flat: a
radiograph, even an 8-bit JPEG export, has noise everywhere, while viewer panels and drawings are
flat. Everything works on a subsampled copy: about 10 ms for a 2000 x 2500 film.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Fitted lung-layout prior (see training/fit_gate_layout.py and the .card.json beside it).
LAYOUT_PRIOR_PATH = Path(__file__).resolve().parents[2] / "models" / "gate_chest_layout.npz"
#: Side of the grid the layout is compared on.
GRID = 32
#: A grid cell belongs to a lung field when the prior gives it at least this probability.
LUNG_PROBABILITY = 0.5
#: The mediastinum band is the gap between the lung fields where the prior is below this.
MEDIASTINUM_PROBABILITY = 0.3
#: Alignments tried between the layout prior and an image (scale, shift as a fraction of the
#: frame, rotation in degrees): off-centre, paediatric, tightly cropped and tilted films.
ALIGN_SCALES = (0.7, 0.85, 1.0, 1.15)
ALIGN_SHIFTS = (-0.06, 0.0, 0.06)
ALIGN_ROTATIONS = (-10.0, 0.0, 10.0)
#: Columns where the prior exceeds this bound the body window the layout correlation is taken in
#: (the air beside the chest varies between films and is left out).
BODY_WINDOW_PROBABILITY = 0.05
#: Width of the outer ring (fraction of each side) and the level (fraction of the 2nd-98th
#: percentile range) below which a ring pixel is dark background, for ``edge_air``.
EDGE_BAND = 0.05
EDGE_AIR_LEVEL = 0.12
#: A side column is background when at most this share of it is brighter than air.
BODY_LINE_FRACTION = 0.1
#: Rotations (degrees) and axis shifts (grid cells) tried for left-right symmetry.
SYMMETRY_ROTATIONS = (-10.0, -5.0, 0.0, 5.0, 10.0)
SYMMETRY_SHIFTS = (-2, 0, 2)
#: Working copy: longest side after strided subsampling (speed; the layout needs little detail).
WORK_SIDE = 256
#: A border row or column is trimmed when its pixel spread (std, image scaled 0-1) is below this.
FLAT_BORDER_STD = 0.02
#: Pixels whose 3x3 neighbourhood spread is at most this (image scaled 0-1) count as flat.
FLAT_TOLERANCE = 0.0
#: Border rows/columns with a spread below this are exactly flat (float rounding aside): export
#: padding and collimation, trimmed before counting flat pixels.
EXACT_FLAT_STD = 1e-3


@dataclass(frozen=True)
class _Alignment:
    template: np.ndarray  # expected rank pattern inside the window: lungs dark (-prior)
    window: np.ndarray  # boolean GRID x GRID body window
    left: np.ndarray  # boolean lung-field masks and the mediastinum band between them
    right: np.ndarray
    mediastinum: np.ndarray


@functools.lru_cache(maxsize=1)
def lung_prior() -> np.ndarray:
    """The fitted GRID x GRID lung probability map."""
    with np.load(LAYOUT_PRIOR_PATH) as data:
        prior = np.asarray(data["lung_prior"], dtype=np.float32)
    if prior.shape != (GRID, GRID):
        raise ValueError(f"{LAYOUT_PRIOR_PATH.name} holds a {prior.shape} prior, expected {GRID}x{GRID}.")
    return prior


def _lung_regions(prior: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    lung = prior >= LUNG_PROBABILITY
    half = GRID // 2
    left = lung.copy()
    left[:, half:] = False
    right = lung.copy()
    right[:, :half] = False
    mediastinum = np.zeros_like(lung)
    for y in range(GRID):
        xs_left = np.flatnonzero(left[y])
        xs_right = np.flatnonzero(right[y])
        if xs_left.size and xs_right.size:
            gap = np.arange(xs_left.max() + 1, xs_right.min())
            gap = gap[prior[y, gap] < MEDIASTINUM_PROBABILITY]
            mediastinum[y, gap] = True
    if left.sum() < 8 or right.sum() < 8 or mediastinum.sum() < 4:
        return None
    return left, right, mediastinum


def _warp(grid: np.ndarray, scale: float, dx: float, dy: float, rotation: float) -> np.ndarray:
    import cv2

    centre = (GRID - 1) / 2.0
    matrix = cv2.getRotationMatrix2D((centre, centre), rotation, scale)
    matrix[0, 2] += dx * GRID
    matrix[1, 2] += dy * GRID
    return cv2.warpAffine(grid, matrix, (GRID, GRID), flags=cv2.INTER_LINEAR, borderValue=0.0)


@functools.lru_cache(maxsize=1)
def alignments() -> tuple[_Alignment, ...]:
    """The prior's template, body window and lung regions under every alignment tried."""
    import itertools

    prior = lung_prior()
    columns = np.flatnonzero(prior.max(axis=0) > BODY_WINDOW_PROBABILITY)
    window = np.zeros_like(prior)
    window[:, columns[0] : columns[-1] + 1] = 1.0
    out = []
    for scale, dx, dy, rotation in itertools.product(ALIGN_SCALES, ALIGN_SHIFTS, ALIGN_SHIFTS, ALIGN_ROTATIONS):
        warped = _warp(prior, scale, dx, dy, rotation)
        regions = _lung_regions(warped)
        if regions is None:
            continue
        inside = _warp(window, scale, dx, dy, rotation) > 0.5
        template = -warped[inside]
        template = template - template.mean()
        template = template / max(float(np.linalg.norm(template)), 1e-9)
        out.append(_Alignment(template, inside, *regions))
    return tuple(out)


def working_copy(image: np.ndarray, side: int = WORK_SIDE) -> np.ndarray:
    """Strided subsample of ``image`` with its longest side near ``side`` pixels (float32)."""
    arr = np.asarray(image, dtype=np.float32)
    step = max(1, int(math.ceil(max(arr.shape[:2]) / side)))
    return np.nan_to_num(arr[::step, ::step])


def trim_flat_borders(image: np.ndarray, tolerance: float = FLAT_BORDER_STD) -> np.ndarray:
    """Cut away border rows and columns that are (nearly) uniform: collimation, padding, letterbox."""
    rows = np.flatnonzero(image.std(axis=1) > tolerance)
    cols = np.flatnonzero(image.std(axis=0) > tolerance)
    if rows.size < 16 or cols.size < 16:
        return image
    return image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def crop_to_body(image: np.ndarray) -> np.ndarray:
    """Cut away side columns that are mostly dark background (air beside the body).

    A film taken on an oversized detector (children, portable films) shows the chest narrow in a
    frame of air; cut to the body's width, its layout is that of any other chest film. Rows are
    kept: air above and below is left to the layout and edge measures.
    """
    lo, hi = (float(v) for v in np.percentile(image, [2, 98]))
    if hi <= lo:
        return image
    body = image >= lo + EDGE_AIR_LEVEL * (hi - lo)
    cols = np.flatnonzero(body.mean(axis=0) > BODY_LINE_FRACTION)
    if cols.size < 16:
        return image
    return image[:, cols[0] : cols[-1] + 1]


def rank_grid(image: np.ndarray) -> np.ndarray:
    """GRID x GRID area-average of ``image``, each cell replaced by its rank scaled to [0, 1]."""
    import cv2

    small = cv2.resize(np.ascontiguousarray(image, dtype=np.float32), (GRID, GRID), interpolation=cv2.INTER_AREA)
    flat = small.ravel()
    ranks = np.empty(flat.size, dtype=np.float32)
    ranks[np.argsort(flat, kind="stable")] = np.arange(flat.size, dtype=np.float32)
    return (ranks / (flat.size - 1)).reshape(GRID, GRID)


@dataclass(frozen=True)
class _Tables:
    window: np.ndarray  # (A, cells) 0/1
    template: np.ndarray  # (A, cells), zero outside the window
    left: np.ndarray  # (A, cells) averaging weights
    right: np.ndarray
    mediastinum: np.ndarray


@functools.lru_cache(maxsize=1)
def _alignment_tables() -> _Tables:
    """The alignments as matrices, so every alignment is scored in one pass."""
    aligns = alignments()
    cells = GRID * GRID

    def weights(masks: list[np.ndarray]) -> np.ndarray:
        m = np.stack([mask.ravel().astype(np.float32) for mask in masks])
        return m / m.sum(axis=1, keepdims=True)

    window = np.stack([a.window.ravel().astype(np.float32) for a in aligns])
    template = np.zeros((len(aligns), cells), dtype=np.float32)
    for i, a in enumerate(aligns):
        template[i, a.window.ravel()] = a.template
    return _Tables(
        window,
        template,
        weights([a.left for a in aligns]),
        weights([a.right for a in aligns]),
        weights([a.mediastinum for a in aligns]),
    )


def _symmetry(image: np.ndarray) -> float:
    """Best correlation of the rank grid with its mirror over small tilts and axis shifts."""
    import cv2

    image = cv2.resize(
        np.ascontiguousarray(image, dtype=np.float32), (2 * GRID, 2 * GRID), interpolation=cv2.INTER_AREA
    )
    best = -1.0
    h, w = image.shape
    for rotation in SYMMETRY_ROTATIONS:
        if rotation:
            matrix = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), rotation, 1.0)
            turned = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        else:
            turned = image
        ranks = rank_grid(turned)
        for shift in SYMMETRY_SHIFTS:
            a = ranks[:, max(0, shift) : GRID + min(0, shift)]
            b = ranks[:, ::-1][:, max(0, -shift) : GRID + min(0, -shift)]
            a = a - a.mean()
            b = b - b.mean()
            norm = float(np.sqrt((a * a).sum() * (b * b).sum()))
            if norm > 0:
                best = max(best, float((a * b).sum() / norm))
    return best


def edge_air_fraction(image: np.ndarray) -> float:
    """Share of the picture's outer ring that is dark background (air around a body or object).

    A frontal chest film is a crop through the body: the neck leaves at the top and the abdomen at
    the bottom, so part of its edge is always body. A cross-sectional slice, an object photographed
    on black or a whole-body outline is surrounded by background on every side.
    """
    h, w = image.shape
    band_h, band_w = max(1, round(h * EDGE_BAND)), max(1, round(w * EDGE_BAND))
    lo, hi = (float(v) for v in np.percentile(image, [2, 98]))
    if hi <= lo:
        return 1.0
    dark = image < lo + EDGE_AIR_LEVEL * (hi - lo)
    ring = np.ones_like(dark)
    ring[band_h:-band_h, band_w:-band_w] = False
    return round(float(dark[ring].mean()), 4)


def layout_measures(image: np.ndarray) -> dict[str, float]:
    """Chest-layout measures of a display image (HxW, [0, 1], bright = dense).

    Returns:
        ``layout_correlation`` (best correlation, -1..1, between the image's rank grid and the
        real-film lung layout inside the body window: lungs dark, mediastinum, neck and abdomen
        bright), ``lung_contrast`` (best mean-rank gap between the mediastinum band and the
        darker lung field, -1..1), ``symmetry`` (best left-right mirror correlation, -1..1) and
        ``trimmed_fraction`` (share of the frame kept after cutting flat borders and side air).
    """
    work = working_copy(image)
    span = float(work.max() - work.min()) if work.size else 0.0
    if span <= 0:
        return {
            "edge_air": 1.0,
            "layout_correlation": -1.0,
            "lung_contrast": -1.0,
            "symmetry": -1.0,
            "trimmed_fraction": 1.0,
        }
    scaled = (work - work.min()) / span
    trimmed = crop_to_body(trim_flat_borders(scaled))
    ranks = rank_grid(trimmed)
    tables = _alignment_tables()
    flat = ranks.ravel()
    windowed = tables.window * flat  # (A, cells): each alignment's window, other cells zero
    counts = tables.window.sum(axis=1)
    means = windowed.sum(axis=1) / counts
    centred = (windowed - means[:, None]) * tables.window
    norms = np.linalg.norm(centred, axis=1)
    corr = (centred * tables.template).sum(axis=1) / np.maximum(norms, 1e-9)
    best_corr = float(corr.max()) if norms.max() > 0 else -1.0
    darker_lung = np.minimum(tables.left @ flat, tables.right @ flat)
    best_contrast = float((tables.mediastinum @ flat - darker_lung).max())
    return {
        # Exactly flat borders (shutters, export padding) are not background air; noisy air is.
        "edge_air": edge_air_fraction(trim_flat_borders(scaled, EXACT_FLAT_STD)),
        "layout_correlation": round(best_corr, 4),
        "lung_contrast": round(best_contrast, 4),
        "symmetry": round(_symmetry(trimmed), 4),
        "trimmed_fraction": round(trimmed.size / scaled.size, 4),
    }


def flat_fraction(image: np.ndarray, tolerance: float = FLAT_TOLERANCE) -> float:
    """Share of pixels (inside the trimmed frame) whose 3x3 neighbourhood is exactly flat.

    Pixels at pure black or full white are not counted: a film exported with a hard window clips
    air or bone to those levels, which is not a sign of a screenshot. ``image`` is in [0, 1].
    """
    import cv2

    work = working_copy(image, side=512)
    trimmed = trim_flat_borders(work, tolerance=EXACT_FLAT_STD)
    if trimmed.shape[0] < 3 or trimmed.shape[1] < 3:
        return 1.0
    kernel = np.ones((3, 3), np.uint8)
    spread = cv2.dilate(trimmed, kernel) - cv2.erode(trimmed, kernel)
    counted = (trimmed > 0.0) & (trimmed < 1.0)
    if not counted.any():
        return 1.0
    return round(float(np.mean((spread <= tolerance) & counted)), 4)
