"""Patch deviation model: where in the image the features leave normal anatomy (PaDiM-style).

The published detector pools VGG16's last block into one 512-vector, so its score carries no position;
Grad-CAM of that score localises findings poorly. This model keeps the position: for each cell of the
14×14 grid of the last conv block (conv5_3 + ReLU at 224 px) it fits a Gaussian to the features of normal
training images, and measures a new image's feature at that cell by its Mahalanobis distance from it
(Defard et al., "PaDiM", ICPR 2021). Chest radiographs are roughly aligned, so a per-position model also
catches normal tissue in an abnormal place (an enlarged heart), which a position-free patch memory would
miss.

Details:
- Features are projected on the first `n_components` principal axes of the normal patch features (pooled
  over positions) before fitting, because a full 512×512 covariance per cell cannot be estimated from a
  few hundred images; ``eps·I`` is added to every covariance.
- The model is fitted on normal images only (unsupervised). Scales for display and the image-level
  threshold come from held-out normal images (`calibrate`).
- It uses the same frozen extractor as the detector and records that extractor's hash; loading it
  against another extractor is refused, like a detector checkpoint.

Example:
    >>> model = PatchDeviationModel.fit(normal_activations, extractor_sha256=extractor.sha256)  # doctest: +SKIP
    >>> model = model.calibrate(held_out_normal_activations)                                  # doctest: +SKIP
    >>> model.distances(activations)  # (B, 14, 14) Mahalanobis distances                      # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medsight.models.anomaly.checkpoint import CheckpointError, ExtractorMismatchError
from medsight.models.anomaly.torch_model import LAYER_NAME

FORMAT_NAME = "medsight-patch-deviation"
FORMAT_VERSION = 1
DEFAULT_COMPONENTS = 64
DEFAULT_EPS = 0.01
NORMAL_PATCH_PERCENTILE = 99.0  # a cell above this share of normal cells is "unusual"
NORMAL_IMAGE_PERCENTILE = 95.0  # image-level threshold: 95 % of normal images stay below it
NORMAL_RANGE_HEAT = 0.1  # display value at the top of the normal range (dark; transparent in the overlay)
#: Longest side at which `heat` smooths the map; larger outputs are upsampled from it once.
HEAT_WORKING_SIDE = 512
BASIS_IMAGES = 512  # the principal axes come from (up to) the first 512 normal training images


@dataclass
class NormalScale:
    """Statistics of held-out normal images that put distances on a readable scale.

    Attributes:
        patch_median: median cell distance of normal images.
        patch_high: `NORMAL_PATCH_PERCENTILE`th percentile of normal cell distances (map starts above it).
        image_high: 99th percentile of the per-image peak distance of normal images (sets the map's spread).
        peak_threshold: `NORMAL_IMAGE_PERCENTILE`th percentile of the normal per-image peak distance.
        n_images: how many normal images were measured.
    """

    patch_median: float
    patch_high: float
    image_high: float
    peak_threshold: float
    n_images: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def principal_axes(activations: torch.Tensor, n_components: int = DEFAULT_COMPONENTS) -> torch.Tensor:
    """(C, d) float64 principal axes of the cells of normal activation maps (N, C, H, W), pooled over positions.

    Raises:
        ValueError: a wrong shape, or fewer channels than components.
    """
    acts = torch.as_tensor(activations, dtype=torch.float64)
    if acts.ndim != 4:
        raise ValueError(f"expected activation maps (N, C, H, W); got shape {tuple(acts.shape)}")
    if acts.shape[1] < n_components:
        raise ValueError(f"{acts.shape[1]} channels cannot give {n_components} components")
    cells = acts.permute(0, 2, 3, 1).reshape(-1, acts.shape[1])
    centred = cells - cells.mean(0)
    # A strided subset of the cells keeps the SVD small.
    step = max(1, len(centred) // 20_000)
    _, _, vh = torch.linalg.svd(centred[::step], full_matrices=False)
    return vh[:n_components].T.contiguous()


class NormalCellStatistics:
    """Running per-cell sums of projected normal features, so any number of images can be fitted in batches.

    Args:
        basis: (C, d) projection (`principal_axes` of a first set of normal images).
        grid: (H, W) of the activation maps.
    """

    def __init__(self, basis: torch.Tensor, grid: tuple[int, int]) -> None:
        self.basis = torch.as_tensor(basis, dtype=torch.float64)
        self.grid = (int(grid[0]), int(grid[1]))
        cells, d = self.grid[0] * self.grid[1], self.basis.shape[1]
        self.n = 0
        self.total = torch.zeros(cells, d, dtype=torch.float64)
        self.outer = torch.zeros(cells, d, d, dtype=torch.float64)

    def add(self, activations: torch.Tensor) -> None:
        """Add a batch of normal activation maps (B, C, H, W)."""
        acts = torch.as_tensor(activations, dtype=torch.float64)
        if acts.ndim != 4 or tuple(acts.shape[2:]) != self.grid or acts.shape[1] != self.basis.shape[0]:
            raise ValueError(f"activation maps of shape {tuple(acts.shape)} do not match the basis "
                             f"({self.basis.shape[0]} channels, grid {self.grid})")
        projected = torch.einsum("bchw,cd->hwbd", acts, self.basis).reshape(-1, len(acts), self.basis.shape[1])
        self.total += projected.sum(1)
        self.outer += projected.transpose(1, 2) @ projected
        self.n += len(acts)


@dataclass
class PatchDeviationModel:
    """Per-cell Gaussian model of normal last-block VGG16 features.

    Attributes:
        basis: (C, d) projection on the principal axes of normal patch features.
        mean: (P, d) mean projected feature of each of the P = H·W cells.
        precision: (P, d, d) inverse covariance of each cell.
        grid: (H, W) of the activation map.
        extractor_sha256: hash of the extractor whose activations it models.
        scale: normal-image statistics (None until `calibrate`).
        meta: how it was fitted (data, counts, date).
    """

    basis: torch.Tensor
    mean: torch.Tensor
    precision: torch.Tensor
    grid: tuple[int, int]
    extractor_sha256: str
    scale: NormalScale | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    # ---- fitting --------------------------------------------------------------------------------------
    @classmethod
    def fit(cls, activations: torch.Tensor, *, extractor_sha256: str, n_components: int = DEFAULT_COMPONENTS,
            eps: float = DEFAULT_EPS, meta: dict[str, Any] | None = None) -> "PatchDeviationModel":
        """Fit on the activation maps (N, C, H, W) of normal training images held in memory.

        For more images than fit in memory, feed `NormalCellStatistics` batch by batch and call
        `from_statistics` (what `training.fit_patch_model` does).

        Raises:
            ValueError: too few images for the number of components, or a wrong shape.
        """
        acts = torch.as_tensor(activations)
        if acts.ndim != 4:
            raise ValueError(f"expected activation maps (N, C, H, W); got shape {tuple(acts.shape)}")
        stats = NormalCellStatistics(principal_axes(acts[:BASIS_IMAGES], n_components), tuple(acts.shape[2:]))
        stats.add(acts)
        return cls.from_statistics(stats, extractor_sha256=extractor_sha256, eps=eps, meta=meta)

    @classmethod
    def from_statistics(cls, stats: "NormalCellStatistics", *, extractor_sha256: str, eps: float = DEFAULT_EPS,
                        meta: dict[str, Any] | None = None) -> "PatchDeviationModel":
        """The model of accumulated per-cell sums: mean and inverse of (covariance + eps·I) for each cell.

        Raises:
            ValueError: too few images for the number of components.
        """
        n, d = stats.n, stats.basis.shape[1]
        if n <= d:
            raise ValueError(f"{n} normal images cannot fit {d} components; use more images")
        mean = stats.total / n
        cov = (stats.outer - n * mean[:, :, None] * mean[:, None, :]) / (n - 1)
        precision = torch.linalg.inv(cov + eps * torch.eye(d, dtype=torch.float64))
        info = {"n_images": n, "n_components": d, "eps": eps, "layer": LAYER_NAME,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **(meta or {})}
        return cls(basis=stats.basis.float(), mean=mean.float(), precision=precision.float(), grid=stats.grid,
                   extractor_sha256=extractor_sha256, meta=info)

    def calibrate(self, normal_activations: torch.Tensor) -> "PatchDeviationModel":
        """A copy with `scale` measured on activation maps of held-out normal images."""
        return self.calibrate_distances(self.distances(normal_activations))

    def calibrate_distances(self, normal_distances: torch.Tensor | np.ndarray) -> "PatchDeviationModel":
        """A copy with `scale` measured on the distance grids (N, H, W) of held-out normal images."""
        dist = np.asarray(normal_distances, dtype=np.float64).reshape(len(normal_distances), -1)
        peaks = dist.max(1)
        scale = NormalScale(
            patch_median=float(np.median(dist)),
            patch_high=float(np.percentile(dist, NORMAL_PATCH_PERCENTILE)),
            image_high=float(np.percentile(peaks, 99.0)),
            peak_threshold=float(np.percentile(peaks, NORMAL_IMAGE_PERCENTILE)),
            n_images=len(peaks),
        )
        return replace(self, scale=scale)

    # ---- inference ------------------------------------------------------------------------------------
    def distances(self, activations: torch.Tensor) -> torch.Tensor:
        """Mahalanobis distance of each cell from normal: (B, C, H, W) activations → (B, H, W) float32."""
        acts = torch.as_tensor(activations).detach().float().cpu()
        if acts.ndim != 4 or tuple(acts.shape[2:]) != tuple(self.grid) or acts.shape[1] != self.basis.shape[0]:
            raise ValueError(f"activation maps of shape {tuple(acts.shape)} do not match this model "
                             f"({self.basis.shape[0]} channels, grid {self.grid})")
        batch = acts.shape[0]
        projected = torch.einsum("bchw,cd->hwbd", acts, self.basis).reshape(-1, batch, self.basis.shape[1])
        dev = projected - self.mean[:, None]
        squared = torch.einsum("pbd,pde,pbe->pb", dev, self.precision, dev).clamp_min(0)
        return squared.sqrt().T.reshape(batch, *self.grid).contiguous()

    def heat(self, distances: np.ndarray | torch.Tensor, output_size: tuple[int, int],
             smoothing: float = 4.0) -> np.ndarray:
        """Display map in [0, 1] at `output_size` from one (H, W) distance grid.

        The grid is resized bilinearly and smoothed (Gaussian, σ = `smoothing` pixels at 224 px, scaled to
        the output); an output larger than `HEAT_WORKING_SIDE` is computed at that side and upsampled
        bilinearly. Distances up to `patch_high` (the normal range) map to at most `NORMAL_RANGE_HEAT`
        (dark, transparent in the overlay) as ``NORMAL_RANGE_HEAT·(d / patch_high)²``; above it the map rises
        as ``NORMAL_RANGE_HEAT + (1 − NORMAL_RANGE_HEAT)·(1 − exp(−(d − patch_high) / spread))``, where
        `spread` is the normal images' peak distance minus their median cell distance. So a normal
        radiograph shows an (almost) empty map, the map is monotone in the distance (its maximum is still
        the most deviant place) and it never saturates.
        """
        from scipy import ndimage

        if self.scale is None:
            raise ValueError("this patch model has no normal-image scale; calibrate it on held-out normals")
        grid = torch.as_tensor(distances, dtype=torch.float32)
        if grid.ndim != 2:
            raise ValueError(f"expected one (H, W) distance grid; got shape {tuple(grid.shape)}")
        height, width = int(output_size[0]), int(output_size[1])
        # A full-size film is smoothed at a working size and upsampled once: the smoothed map holds no
        # detail finer than the working grid, and a 40-pixel Gaussian over 5 million pixels took seconds.
        shrink = min(1.0, HEAT_WORKING_SIDE / max(height, width))
        work = (max(1, round(height * shrink)), max(1, round(width * shrink)))
        full = torch.nn.functional.interpolate(grid[None, None], size=work, mode="bilinear",
                                               align_corners=False)[0, 0].numpy()
        sigma = smoothing * max(work) / 224.0
        if sigma > 0:
            full = ndimage.gaussian_filter(full, sigma)
        spread = max(self.scale.image_high - self.scale.patch_median, 1e-6)
        high = max(self.scale.patch_high, 1e-6)
        inside = NORMAL_RANGE_HEAT * np.square(np.clip(full, 0.0, high) / high)
        above = (1.0 - NORMAL_RANGE_HEAT) * (1.0 - np.exp(-np.maximum(full - high, 0.0) / spread))
        heat = (inside + above).astype(np.float32)
        if work != (height, width):
            import cv2

            heat = cv2.resize(heat, (width, height), interpolation=cv2.INTER_LINEAR)
        return heat

    # ---- storage --------------------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """Plain dict for `torch.save` (loadable with `weights_only=True`); matrices in fp16 to stay small."""
        return {
            "format": FORMAT_NAME, "format_version": FORMAT_VERSION,
            "basis": self.basis.half(), "mean": self.mean.half(), "precision": self.precision.half(),
            "grid": list(self.grid), "extractor_sha256": self.extractor_sha256,
            "scale": self.scale.to_dict() if self.scale else None, "meta": self.meta,
        }

    def save(self, path: str | Path) -> Path:
        """Write the model. It is rounded to fp16 first, so what was calibrated is what is stored."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(self.to_state(), path)
        return path

    def rounded(self) -> "PatchDeviationModel":
        """The model as it is after a save/load round trip (fp16 matrices upcast to fp32)."""
        return replace(self, basis=self.basis.half().float(), mean=self.mean.half().float(),
                       precision=self.precision.half().float())

    @classmethod
    def load(cls, path: str | Path, extractor_sha256: str | None = None) -> "PatchDeviationModel":
        """Read a saved model; with `extractor_sha256`, refuse one fitted on another extractor.

        Raises:
            CheckpointError: not a patch deviation file. ExtractorMismatchError: other extractor.
        """
        path = Path(path)
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same user-facing message
            raise CheckpointError(f"{path.name} is not a readable patch deviation file ({type(exc).__name__}).") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT_NAME:
            raise CheckpointError(f"{path.name} is not a patch deviation file.")
        if extractor_sha256 and raw.get("extractor_sha256") != extractor_sha256:
            raise ExtractorMismatchError(
                f"{path.name} was fitted on features of another VGG16 extractor "
                f"({str(raw.get('extractor_sha256'))[:12]}… vs {extractor_sha256[:12]}…); its distances would be "
                "meaningless. Refit it with `python -m training.fit_patch_model`.")
        scale = raw.get("scale")
        return cls(basis=raw["basis"].float(), mean=raw["mean"].float(), precision=raw["precision"].float(),
                   grid=tuple(int(v) for v in raw["grid"]), extractor_sha256=str(raw["extractor_sha256"]),
                   scale=NormalScale(**scale) if scale else None, meta=dict(raw.get("meta") or {}))

    def summary(self) -> dict[str, Any]:
        """Facts for provenance and model cards."""
        return {"layer": LAYER_NAME, "grid": list(self.grid), "components": int(self.basis.shape[1]),
                "n_images": self.meta.get("n_images"), "scale": self.scale.to_dict() if self.scale else None,
                "created": self.meta.get("created")}


def peak_is_unusual(peak: float, scale: NormalScale | None) -> bool | None:
    """Whether an image's peak distance is above the normal-image threshold (None when uncalibrated)."""
    if scale is None or not math.isfinite(peak):
        return None
    return peak >= scale.peak_threshold
