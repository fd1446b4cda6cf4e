"""Synthetic frontal chest radiograph phantoms with ground-truth masks, labels and reports.

The phantoms are procedural (analytic anatomy, seeded textures, vectorised numpy/scipy) and clearly
labelled synthetic everywhere they go. They feed the tests, the demo-tier weights, the bundled demo
studies and the benchmarks; they are not patient images and say so.

Example:
    >>> from medsight.synthetic import generate_phantom
    >>> p = generate_phantom(7, size=224, findings=("effusion",))
    >>> p.image.shape, p.labels, p.laterality["effusion"] in ("left", "right", "bilateral")
    ((224, 224), ('effusion',), True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from medsight.synthetic import lesions
from medsight.synthetic.anatomy import (
    FIELD_OF_VIEW_CM,
    Grid,
    cardiothoracic_ratio,
    expose,
    render_normal,
    sample_anatomy,
    set_heart_ctr,
)
from medsight.synthetic.reports import compose_report

FINDINGS = ("consolidation", "nodule", "effusion", "pneumothorax", "cardiomegaly")

SYNTHETIC_LABEL = "SYNTHETIC PHANTOM"

__all__ = [
    "FINDINGS",
    "FIELD_OF_VIEW_CM",
    "SYNTHETIC_LABEL",
    "Phantom",
    "cardiothoracic_ratio",
    "dataset_plan",
    "generate_dataset",
    "generate_phantom",
    "write_jpeg",
    "write_png",
]


@dataclass
class Phantom:
    """One synthetic PA chest radiograph and its ground truth.

    Attributes:
        image: float32 HxW in [0, 1], displayed radiograph convention (bright = dense, air dark).
        masks: one bool HxW mask per present finding (cardiomegaly: the cardiac silhouette).
        lung_mask: bool HxW visible lung fields (the cardiac silhouette excluded).
        labels: present findings in ``FINDINGS`` order; empty for a normal study.
        laterality: patient side per finding: "right", "left", "bilateral" or "n/a". PA view, so the
            patient's left is on the image right.
        report: matching radiology report with "FINDINGS:" and "IMPRESSION:" sections.
        seed: the seed that reproduces it with ``generate_phantom(seed, size, labels)``.
        heart_mask: bool HxW cardiac silhouette (present for every phantom, for CTR measurements).
        details: per-finding description (lobe, zone, size words, measurements) and ``ctr``.
        synthetic: always True.
    """

    image: np.ndarray
    masks: dict[str, np.ndarray]
    lung_mask: np.ndarray
    labels: tuple[str, ...]
    laterality: dict[str, str]
    report: str
    seed: int
    heart_mask: np.ndarray | None = None
    details: dict[str, Any] = field(default_factory=dict)
    synthetic: bool = True

    @property
    def is_normal(self) -> bool:
        """True when no finding is present."""
        return not self.labels

    @property
    def size(self) -> int:
        return int(self.image.shape[0])

    @property
    def ctr(self) -> float:
        """Cardiothoracic ratio measured on the ground-truth masks."""
        return float(self.details.get("ctr", float("nan")))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description without arrays (mask areas and bounding boxes instead)."""
        boxes = {}
        for name, m in self.masks.items():
            rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
            boxes[name] = [int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1] if rows.size else None
        return {
            "seed": int(self.seed),
            "size": self.size,
            "labels": list(self.labels),
            "laterality": dict(self.laterality),
            "is_normal": self.is_normal,
            "report": self.report,
            "details": self.details,
            "mask_area_px": {k: int(v.sum()) for k, v in self.masks.items()},
            "mask_bbox_rc": boxes,  # [row0, col0, row1, col1), pixel rows/cols
            "synthetic": True,
            "description": "synthetic phantom",
        }


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) % (2**63), stream])


def _validate(findings: Sequence[str]) -> tuple[str, ...]:
    if isinstance(findings, str):
        findings = (findings,)
    unknown = [f for f in findings if f not in FINDINGS]
    if unknown:
        raise ValueError(f"Unknown finding(s) {unknown}; choose from {', '.join(FINDINGS)}.")
    return tuple(f for f in FINDINGS if f in set(findings))


def _drop_specks(mask: np.ndarray) -> np.ndarray:
    """Remove slivers of lung left between the heart and the diaphragm (under 1% of the lung area)."""
    lab, n = ndimage.label(mask)
    if n <= 2:
        return mask
    areas = np.bincount(lab.ravel())
    keep = areas >= 0.01 * areas[1:].sum()
    keep[0] = False
    return keep[lab]


def generate_phantom(seed: int, size: int = 512, findings: Sequence[str] | None = None) -> Phantom:
    """Generate one synthetic PA chest radiograph.

    The same ``seed`` always gives the same patient (anatomy, exposure, texture), so a seed rendered
    with and without a finding differs only by that finding.

    Args:
        seed: any integer.
        size: output height and width in pixels (at least 32).
        findings: names from ``FINDINGS`` to include; ``()`` for a normal study; ``None`` lets the seed
            choose (about half normal, sometimes two findings).

    Returns:
        The phantom with image, masks, labels, laterality and report.

    Raises:
        ValueError: unknown finding name or a size below 32 pixels.
    """
    size = int(size)
    if size < 32:
        raise ValueError("Phantom size must be at least 32 pixels.")
    if findings is None:
        pick = _rng(seed, 2)
        if pick.random() < 0.5:
            findings = ()
        else:
            k = 2 if pick.random() < 0.3 else 1
            findings = tuple(pick.choice(FINDINGS, size=k, replace=False))
    labels = _validate(findings)

    anat = sample_anatomy(_rng(seed, 1))
    if "cardiomegaly" in labels:
        set_heart_ctr(anat, lesions.cardiomegaly_ctr(_rng(seed, 30)))
    grid = Grid.make(size, anat.rotation_deg, anat.scale, anat.shift)
    layers = render_normal(anat, grid, _rng(seed, 3))

    found: dict[str, lesions.Lesion] = {}
    for name in labels:
        if name in lesions.PAINTERS:
            found[name] = lesions.PAINTERS[name](_rng(seed, 10 + FINDINGS.index(name)), anat, layers)

    image = expose(layers.density + layers.vessels, anat, _rng(seed, 4))
    heart_mask = layers.heart_soft >= 0.5
    lung_mask = _drop_specks(((layers.lung_sdf["right"] > 0) | (layers.lung_sdf["left"] > 0)) & (layers.medi_soft < 0.5))
    if "cardiomegaly" in labels:
        found["cardiomegaly"] = lesions.describe_cardiomegaly(heart_mask, lung_mask)

    masks = {name: found[name].mask for name in labels}
    laterality = {name: found[name].laterality for name in labels}
    details: dict[str, Any] = {name: found[name].details for name in labels}
    details["ctr"] = round(cardiothoracic_ratio(heart_mask, lung_mask), 3)
    report = compose_report(labels, laterality, details, seed)
    return Phantom(image, masks, lung_mask, labels, laterality, report, int(seed), heart_mask, details)


def generate_dataset(n: int, seed: int = 0, size: int = 512, normal_fraction: float = 0.5) -> list[Phantom]:
    """Generate ``n`` phantoms with an exact share of normals and balanced findings.

    Abnormal phantoms cycle through ``FINDINGS`` as their primary finding (so classes are balanced);
    about a quarter get a second finding.

    Args:
        n: number of phantoms.
        seed: dataset seed; each phantom gets its own derived seed (stored in ``Phantom.seed``).
        size: image size in pixels.
        normal_fraction: share of normal studies, rounded to the nearest whole phantom.

    Returns:
        The phantoms in a seeded random order.

    Raises:
        ValueError: negative ``n`` or ``normal_fraction`` outside [0, 1].
    """
    return [generate_phantom(child, size=size, findings=chosen) for child, chosen in dataset_plan(n, seed, normal_fraction)]


def dataset_plan(n: int, seed: int = 0, normal_fraction: float = 0.5) -> list[tuple[int, tuple[str, ...]]]:
    """(phantom seed, findings) of each phantom `generate_dataset` makes, without rendering any.

    Lets training code render phantoms one at a time instead of holding a whole set in memory.

    Raises:
        ValueError: negative ``n`` or ``normal_fraction`` outside [0, 1].
    """
    if n < 0:
        raise ValueError("n must be non-negative.")
    if not 0.0 <= normal_fraction <= 1.0:
        raise ValueError("normal_fraction must be between 0 and 1.")
    rng = _rng(seed, 99)
    n_normal = int(round(n * normal_fraction))
    is_normal = np.zeros(n, bool)
    is_normal[:n_normal] = True
    rng.shuffle(is_normal)
    offset = int(rng.integers(len(FINDINGS)))
    plan, j = [], 0
    for i in range(n):
        child = int(np.random.SeedSequence([int(seed) % (2**63), i]).generate_state(1)[0])
        if is_normal[i]:
            chosen: tuple[str, ...] = ()
        else:
            primary = FINDINGS[(offset + j) % len(FINDINGS)]
            j += 1
            chosen = (primary,)
            if rng.random() < 0.25:
                others = [f for f in FINDINGS if f != primary]
                chosen += (others[int(rng.integers(len(others)))],)
        plan.append((child, chosen))
    return plan


def _as_unit_image(phantom_or_array: Phantom | np.ndarray) -> np.ndarray:
    img = phantom_or_array.image if isinstance(phantom_or_array, Phantom) else np.asarray(phantom_or_array)
    if img.ndim != 2:
        raise ValueError(f"Expected a 2-D greyscale image, got shape {img.shape}.")
    if np.issubdtype(img.dtype, np.integer):
        info = np.iinfo(img.dtype)
        return img.astype(np.float64) / info.max
    return np.clip(np.nan_to_num(img.astype(np.float64)), 0.0, 1.0)


def write_png(phantom_or_array: Phantom | np.ndarray, path: str | Path, bits: int = 8) -> Path:
    """Write a phantom (or a [0, 1] float / integer image) as an 8- or 16-bit greyscale PNG.

    Args:
        phantom_or_array: a Phantom or a 2-D array (float in [0, 1], or uint8/uint16 full range).
        path: output file; parent folders are created.
        bits: 8 or 16.

    Returns:
        The written path.

    Raises:
        ValueError: bits not 8 or 16, or not a 2-D image.
    """
    from PIL import Image

    if bits not in (8, 16):
        raise ValueError("PNG bit depth must be 8 or 16.")
    from PIL.PngImagePlugin import PngInfo

    img = _as_unit_image(phantom_or_array)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngInfo()
    if isinstance(phantom_or_array, Phantom):  # ingest reads this marker and labels the study synthetic
        info.add_text("Comment", SYNTHETIC_LABEL)
    if bits == 8:
        Image.fromarray(np.round(img * 255).astype(np.uint8), mode="L").save(path, format="PNG", optimize=True, pnginfo=info)
    else:
        Image.fromarray(np.round(img * 65535).astype(np.uint16)).save(path, format="PNG", pnginfo=info)
    return path


def write_jpeg(phantom_or_array: Phantom | np.ndarray, path: str | Path, quality: int = 90) -> Path:
    """Write a phantom (or [0, 1] image) as an 8-bit greyscale JPEG (lossy, as clinics often export).

    Args:
        phantom_or_array: a Phantom or 2-D array.
        path: output file; parent folders are created.
        quality: JPEG quality 1-95.

    Returns:
        The written path.
    """
    from PIL import Image

    img = _as_unit_image(phantom_or_array)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {"comment": SYNTHETIC_LABEL} if isinstance(phantom_or_array, Phantom) else {}
    Image.fromarray(np.round(img * 255).astype(np.uint8), mode="L").save(path, format="JPEG", quality=int(quality), **extra)
    return path
