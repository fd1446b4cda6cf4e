"""Domain rule: an image model's outputs are shown only for inputs inside the domain its weights were trained on.

Every image-model source in the registry declares a `registry.Domain`. For each analysis this module decides,
per loaded image model, whether the study lies inside that domain:

- `Domain.PHANTOM` (every DEMO image model, trained on this application's synthetic phantoms): a measured
  test, `PhantomDomainModel`, that places the image in a feature space of phantom layout and texture and
  compares its Mahalanobis distance with a threshold calibrated on held-out phantoms (re-saved copies
  included, because a phantom exported as a screenshot loses the generator's marker). Real radiographs lie
  several times further out than any phantom (figures in `models/phantom_domain.card.json`).
- `Domain.CHEST_XR` (published chest X-ray weights): inside when the input gate accepted the study as a frontal
  chest radiograph, or the radiologist overrode a refusal.
- `Domain.UNKNOWN` (weights of unknown provenance with no model card): never inside.
- `Domain.NONE` (text, speech and rule engines): the rule does not apply.

Outputs of a model outside its domain are *withheld*: they never reach the headline, risk, fusion,
verification, chat, PDF, History or batch output. `Withheld` records what was withheld and why.

Example:
    >>> from medsight import domain
    >>> verdict = domain.phantom_verdict(study.image)        # doctest: +SKIP
    >>> verdict.inside, round(verdict.distance, 1)           # doctest: +SKIP
    (False, 492.1)
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medsight.config import SHIPPED_MODELS_DIR
from medsight.registry import DOMAIN_DESCRIPTIONS, Domain

if TYPE_CHECKING:
    from medsight.ingest.study import CodedImage

PHANTOM_DOMAIN_FILE = "phantom_domain.npz"
FEATURE_VERSION = 1
# The working copy the features are computed on: fine enough for rib-scale texture, cheap on a 2k × 2.5k film.
WORK_SIZE = 256
# Texture energies are pooled over a coarse 4 × 4 layout at every scale and a fine 8 × 8 one at the two finest
# scales (layout matters, not just texture: the fine grid lifted the nearest real film from 1.1× to 1.45× the
# threshold in the fitting experiments).
GRID, FINE_GRID = 4, 8
LOG_SIGMAS = (1.0, 2.0, 4.0)  # Laplacian-of-Gaussian scales, in pixels of the working copy
FINE_SIGMAS = (1.0, 2.0)
HIST_BINS = 16

# What each slot's withheld output is called on screen and in records.
SLOT_OUTPUTS = {
    "anomaly.detector": "anomaly score and anomaly maps",
    "pathology.classifier": "pathology probabilities and Grad-CAM maps",
    "retrieval.image_embedder": "similar cases found by image",
}

HOW_TO_GET_REAL = "python -m medsight.weights fetch (or the System page's Fetch buttons) installs the published weights"


# Rows converted to bytes per step: the step's float64 temporaries stay in the CPU cache.
_BYTE_ROWS = 16


def _to_bytes(values: np.ndarray, lo: float, span: float) -> np.ndarray:
    """Robust [0, 1] rescale of ``values`` (``lo`` → 0, ``lo + span`` → 1, clipped) as bytes 0–255."""
    return np.round(np.clip((values - lo) / span, 0.0, 1.0) * 255).astype(np.uint8)


def normalised_bytes(image: np.ndarray, coded: CodedImage | None = None) -> np.ndarray:
    """The image rescaled between its 1st and 99th percentiles as bytes 0–255, so a different display window
    gives the same features.

    The rescale is elementwise, so it is computed once per stored code when ``coded`` (the image's
    `CodedImage`) is given, else in row blocks: the same bytes either way.
    """
    a = np.asarray(image, dtype=np.float32)
    step = max(1, int(np.sqrt(a.size / 250_000)))
    lo, hi = np.percentile(a[::step, ::step], [1, 99])
    span = max(float(hi - lo), 1e-6)
    if coded is not None and coded.describes(image):
        return coded.map(lambda values: _to_bytes(values, lo, span))
    if a.ndim != 2:
        return _to_bytes(a, lo, span)
    out = np.empty(a.shape, dtype=np.uint8)
    for top in range(0, a.shape[0], _BYTE_ROWS):
        out[top:top + _BYTE_ROWS] = _to_bytes(a[top:top + _BYTE_ROWS], lo, span)
    return out


def domain_features(image: np.ndarray, coded: CodedImage | None = None) -> np.ndarray:
    """Layout-and-texture features of a greyscale image (192 numbers).

    Laplacian-of-Gaussian energy (log) at three scales pooled over a 4 × 4 grid and at the two finest scales
    over an 8 × 8 grid, and a 16-bin intensity histogram, all on a 256 × 256 working copy of the
    percentile-normalised image. ``coded``: the image as stored codes, when ingest kept them (faster, same numbers).
    """
    from PIL import Image
    from scipy import ndimage

    small = Image.fromarray(normalised_bytes(image, coded)).resize((WORK_SIZE, WORK_SIZE), Image.Resampling.BOX)
    work = np.asarray(small, dtype=np.float32) / 255.0
    parts = []
    for sigma in LOG_SIGMAS:
        energy = np.abs(ndimage.gaussian_laplace(work, sigma))
        for grid in (GRID, FINE_GRID) if sigma in FINE_SIGMAS else (GRID,):
            cell = WORK_SIZE // grid
            parts.append(np.log(energy.reshape(grid, cell, grid, cell).mean(axis=(1, 3)).ravel() + 1e-4))
    parts.append(np.histogram(work, bins=HIST_BINS, range=(0.0, 1.0))[0] / work.size)
    return np.concatenate(parts).astype(np.float64)


@dataclass
class PhantomVerdict:
    """Whether an image lies inside the synthetic-phantom domain of the DEMO weights."""

    inside: bool
    distance: float
    threshold: float
    marked_synthetic: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PhantomDomainModel:
    """Gaussian model of phantom features: mean, shrunk precision matrix and a calibrated distance threshold."""

    mean: np.ndarray
    precision: np.ndarray
    threshold: float
    version: int = FEATURE_VERSION

    def distance(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of feature rows (or one row) to the phantom training set."""
        diff = np.atleast_2d(features) - self.mean
        return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", diff, self.precision, diff), 0.0))

    def verdict(self, image: np.ndarray, *, marked_synthetic: bool = False,
                coded: CodedImage | None = None) -> PhantomVerdict:
        distance = float(self.distance(domain_features(image, coded))[0])
        return PhantomVerdict(distance <= self.threshold, round(distance, 2), round(self.threshold, 2), marked_synthetic)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        np.savez(path, mean=self.mean, precision=self.precision, threshold=np.float64(self.threshold),
                 version=np.int64(self.version))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "PhantomDomainModel":
        with np.load(path) as data:
            version = int(data["version"])
            if version != FEATURE_VERSION:
                raise ValueError(f"{path} was fitted on domain features version {version}, this build computes "
                                 f"version {FEATURE_VERSION}; refit with python -m training.fit_phantom_domain")
            return cls(data["mean"], data["precision"], float(data["threshold"]), version)

    @classmethod
    def fit(cls, features: np.ndarray, threshold: float) -> "PhantomDomainModel":
        """Mean and Ledoit–Wolf shrunk covariance of phantom feature rows."""
        from sklearn.covariance import LedoitWolf

        lw = LedoitWolf().fit(np.asarray(features, dtype=np.float64))
        return cls(lw.location_, lw.precision_, float(threshold))


@functools.lru_cache(maxsize=1)
def phantom_model() -> PhantomDomainModel:
    """The shipped phantom-domain model (`models/phantom_domain.npz`)."""
    return PhantomDomainModel.load(SHIPPED_MODELS_DIR / PHANTOM_DOMAIN_FILE)


def phantom_verdict(image: np.ndarray, *, marked_synthetic: bool = False,
                    coded: CodedImage | None = None) -> PhantomVerdict:
    """Is this image inside the synthetic-phantom domain of the DEMO weights? (measured, not the marker)

    ``coded``: the study's `coded_image`, when it has one (the same verdict, faster on a large film).
    """
    return phantom_model().verdict(image, marked_synthetic=marked_synthetic, coded=coded)


@dataclass
class SlotVerdict:
    """The domain decision for one image-model slot on one input."""

    slot: str
    domain: str
    inside: bool
    reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def gate_accepts_chest(gate: dict | None) -> bool:
    """The input gate's word on "this is a frontal chest radiograph" (a radiologist's override counts)."""
    return bool(gate) and gate.get("decision") in ("accepted", "overridden")


def _declared_domain(provenance: dict) -> Domain:
    # Provenance recorded before domains existed: a DEMO image model was trained on phantoms.
    tier = str(provenance.get("tier", ""))
    return Domain(provenance.get("domain") or (Domain.PHANTOM.value if tier == "demo" else ""))


def slot_needs_phantom_test(provenance: dict) -> bool:
    """Whether deciding this slot's domain needs the (cheap, but not free) phantom-domain test."""
    return _declared_domain(provenance) is Domain.PHANTOM


def slot_verdict(slot: str, provenance: dict, *, gate: dict | None, phantom: PhantomVerdict | None) -> SlotVerdict:
    """Decide whether `slot`'s loaded weights (their provenance) can speak about this input."""
    domain = _declared_domain(provenance)
    described = DOMAIN_DESCRIPTIONS[domain]
    if domain is Domain.NONE:
        return SlotVerdict(slot, domain.value, True)
    if domain is Domain.PHANTOM:
        if phantom is not None and phantom.inside:
            return SlotVerdict(slot, domain.value, True)
        detail = f" (distance {phantom.distance:.0f} from the phantoms, limit {phantom.threshold:.0f})" if phantom else ""
        return SlotVerdict(slot, domain.value, False,
                           f"these weights were trained only on {described}; this image is not one{detail}, so "
                           "their output says nothing about it")
    if domain is Domain.CHEST_XR:
        if gate_accepts_chest(gate):
            return SlotVerdict(slot, domain.value, True)
        why = (gate or {}).get("reason") or "the input gate did not accept it as a frontal chest radiograph"
        return SlotVerdict(slot, domain.value, False, f"these weights read {described} only: {why}")
    return SlotVerdict(slot, domain.value, False,
                       "the weights' provenance is unknown and no model card states what they were trained on; "
                       "add the card written by training/, or install the published weights")


@dataclass
class Assessment:
    """The input gate's decision, the phantom-domain test (when needed) and each slot's domain verdict."""

    gate: dict
    phantom: PhantomVerdict | None
    verdicts: dict[str, SlotVerdict]

    @property
    def inside(self) -> set[str]:
        return {slot for slot, verdict in self.verdicts.items() if verdict.inside}

    @property
    def outside(self) -> dict[str, SlotVerdict]:
        return {slot: verdict for slot, verdict in self.verdicts.items() if not verdict.inside}


def assess(study, provenances: dict[str, dict], gate: dict | None = None) -> Assessment:
    """Gate (unless given) and domain verdicts for `study` against each loaded image model's provenance.

    Used by every path that shows image-model output (pipeline, batch CLI, Heatmap page), so each decides the
    same way. A refused study gets verdicts too (CHEST_XR weights are then outside), so callers need not
    special-case it.
    """
    if gate is None:
        from medsight.gate import check_study

        gate = check_study(study).to_dict()
    needs_phantom = any(slot_needs_phantom_test(p) for p in provenances.values())
    phantom = (phantom_verdict(study.image, marked_synthetic=bool(getattr(study, "synthetic", False)),
                               coded=getattr(study, "coded_image", None))
               if needs_phantom else None)
    verdicts = {slot: slot_verdict(slot, prov, gate=gate, phantom=phantom) for slot, prov in provenances.items()}
    return Assessment(gate, phantom, verdicts)


def withheld_entry(verdict: SlotVerdict, provenance: dict) -> dict:
    """What a record keeps of a withheld output: which, why and the way out — never the numbers."""
    return {
        "slot": verdict.slot,
        "what": SLOT_OUTPUTS.get(verdict.slot, "output"),
        "tier": provenance.get("tier", ""),
        "domain": verdict.domain,
        "reason": verdict.reason,
        "how_to_get_real": HOW_TO_GET_REAL,
    }
