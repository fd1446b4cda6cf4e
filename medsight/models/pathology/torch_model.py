"""Plain networks and preprocessing of the pathology classifier (no registry, no I/O).

Two networks share one interface, `PathologyNet`: ``features`` (the DenseNet trunk ending in ``norm5``),
an explicit, non-in-place ReLU, global average pooling and a linear ``classifier``.

- Real tier: torchxrayvision's DenseNet-121 (``densenet121-res224-all``, 18 labels). Its own
  ``forward`` applies ``F.relu(features, inplace=True)``, resizes and rescales the outputs with
  ``op_norm``; `PathologyNet` re-implements that forward step by step so the logits, the raw sigmoid
  probability and the operating-point calibration are each available, and so Grad-CAM can hook the
  post-ReLU activations of the last dense block without an in-place operation in the way.
- Demo tier: torchvision's ``DenseNet`` class in a reduced configuration (`DEMO_ARCH`), one input
  channel, trained here on synthetic phantoms. It is a DenseNet-family network, not DenseNet-121.

Preprocessing is torchxrayvision's for both tiers (`XRayPreprocess`): scale to [-1024, 1024] with
``xrv.utils.normalize``, centre-crop the long side (``XRayCenterCrop``), resize (``XRayResizer``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: Reduced DenseNet configuration of the demo network (DenseNet-121 is growth 32, blocks (6, 12, 24, 16),
#: 64 initial features, 7.0 M parameters; this one has about 0.33 M and trains on two shared CPU cores).
DEMO_ARCH: dict[str, Any] = {
    "family": "DenseNet (torchvision.models.DenseNet), reduced",
    "growth_rate": 12,
    "block_config": (3, 6, 12, 8),
    "num_init_features": 24,
    "bn_size": 4,
    "in_channels": 1,
}


@dataclass(frozen=True)
class CropBox:
    """Where the square model input came from in the original image (rows/cols, half-open)."""

    top: int
    left: int
    size: int


class XRayPreprocess:
    """torchxrayvision's preprocessing for a single greyscale radiograph.

    ``[0, 1]`` image (bright = dense) → ×255 → ``xrv.utils.normalize(img, 255)`` ([-1024, 1024]) →
    ``XRayCenterCrop`` (square crop of the long side) → ``XRayResizer(size)`` → tensor (1, 1, size, size).

    Args:
        size: side of the model input in pixels (224 for the torchxrayvision DenseNet).
    """

    def __init__(self, size: int):
        import torchxrayvision as xrv

        self.size = int(size)
        self._normalize = xrv.utils.normalize
        self._crop = xrv.datasets.XRayCenterCrop()
        self._resize = xrv.datasets.XRayResizer(self.size)

    @staticmethod
    def crop_box(shape: Sequence[int]) -> CropBox:
        """The square region `XRayCenterCrop` keeps for an image of this (H, W)."""
        height, width = int(shape[0]), int(shape[1])
        side = min(height, width)
        return CropBox(top=height // 2 - side // 2, left=width // 2 - side // 2, size=side)

    def array(self, image: np.ndarray) -> np.ndarray:
        """Preprocessed float32 array (1, size, size) in [-1024, 1024].

        The crop comes before the (pixel-wise) scaling, which gives the same values with less work; the
        resize is `resize_like_xrv`, torchxrayvision's resize with a faster anti-aliasing filter.
        """
        image = validate_image(image)
        cropped = self._crop(image[None, :, :])
        scaled = self._normalize(cropped * 255.0, 255)
        return resize_like_xrv(scaled, self.size)

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        """Preprocessed tensor (1, 1, size, size)."""
        return torch.from_numpy(self.array(image))[None]


def resize_like_xrv(image: np.ndarray, size: int) -> np.ndarray:
    """torchxrayvision's `XRayResizer` (scikit-image `resize`, mode "constant") of a (1, H, W) array.

    scikit-image smooths the whole full-size image with scipy's Gaussian before sampling it; on a 2k film
    that filter took most of a second. Here OpenCV applies the same Gaussian (same sigma, same radius,
    zero padding), then scipy samples it exactly as scikit-image does, and the result is clipped to the
    input's range as scikit-image clips it. Values agree with `XRayResizer` to about 1e-4 on the
    [-1024, 1024] scale.
    """
    import cv2
    from scipy import ndimage

    plane = np.asarray(image[0], dtype=np.float32)
    if plane.shape == (size, size):
        return plane[None].copy()
    factors = np.array(plane.shape, dtype=np.float64) / size
    sigmas = np.maximum(0.0, (factors - 1.0) / 2.0)
    filtered = plane
    if np.any(sigmas > 0):
        # scipy's kernel: radius int(4σ + 0.5) (truncate=4), normalised; zero beyond the edges.
        radii = [int(4.0 * float(sg) + 0.5) for sg in sigmas]
        filtered = cv2.GaussianBlur(plane, (2 * radii[1] + 1, 2 * radii[0] + 1), sigmaX=float(sigmas[1]),
                                    sigmaY=float(sigmas[0]), borderType=cv2.BORDER_CONSTANT)
    out = ndimage.zoom(filtered, 1.0 / factors, order=1, mode="grid-constant", cval=0.0, grid_mode=True)
    low, high = float(plane.min()), float(plane.max())
    if not low <= 0.0 <= high and float(out.min()) <= 0.0 <= float(out.max()):
        low, high = min(low, 0.0), max(high, 0.0)  # the padding value widens the range, as in scikit-image
    np.clip(out, low, high, out=out)
    return out[None].astype(np.float32, copy=False)


def validate_image(image: Any) -> np.ndarray:
    """Check a radiograph and return it as float32 HxW in [0, 1].

    Raises:
        ValueError: with a user-facing message for anything that is not a 2-D greyscale image in [0, 1].
    """
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise ValueError(f"The pathology classifier needs a 2-D greyscale image; got an array of shape {array.shape}.")
    if min(array.shape) < 32:
        raise ValueError(f"The image is too small for the pathology classifier ({array.shape[0]}×{array.shape[1]} px; at least 32×32).")
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"The image must hold numbers; got dtype {array.dtype}.")
    array = array.astype(np.float32, copy=False)
    low, high = float(array.min()), float(array.max())
    if not (math.isfinite(low) and math.isfinite(high)):  # min and max carry any NaN or infinity
        raise ValueError("The image contains NaN or infinite pixel values.")
    if low < -1e-3 or high > 1.0 + 1e-3:
        raise ValueError(f"The image must be scaled to [0, 1] (windowed); its values span [{low:.3g}, {high:.3g}].")
    if low >= 0.0 and high <= 1.0:
        return array  # already in range: no full-size copy
    return np.clip(array, 0.0, 1.0)


class PathologyNet(nn.Module):
    """DenseNet trunk + explicit ReLU + average pooling + linear head, with the logits exposed.

    Args:
        features: the DenseNet ``features`` Sequential (ending in ``norm5``).
        classifier: the final ``nn.Linear``.
    """

    def __init__(self, features: nn.Module, classifier: nn.Linear):
        super().__init__()
        self.features = features
        # Not in place: Grad-CAM hooks this module's output, and torchvision/xrv's forward would otherwise
        # overwrite norm5's output with F.relu(..., inplace=True).
        self.relu = nn.ReLU(inplace=False)
        self.classifier = classifier

    @property
    def target_layer(self) -> nn.Module:
        """The layer Grad-CAM explains: the last dense block's activations after norm5 and its ReLU."""
        return self.relu

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Raw logits (B, n_labels)."""
        activations = self.relu(self.features(x))
        pooled = F.adaptive_avg_pool2d(activations, (1, 1)).flatten(1)
        return self.classifier(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Sigmoid probabilities (B, n_labels), before any operating-point calibration."""
        return torch.sigmoid(self.logits(x))


class LogitsAndActivations(nn.Module):
    """A `PathologyNet`'s pass returning the logits and the activations they are pooled from (what the maps
    are drawn from): the graph ONNX Runtime runs, and the PyTorch pass that keeps the activations."""

    OUTPUTS = ("logits", "activations")

    def __init__(self, net: PathologyNet):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        activations = self.net.relu(self.net.features(x))
        pooled = F.adaptive_avg_pool2d(activations, (1, 1)).flatten(1)
        return self.net.classifier(pooled), activations


def build_demo_densenet(n_labels: int, arch: dict[str, Any] | None = None) -> PathologyNet:
    """The reduced torchvision DenseNet of the demo tier with a one-channel stem (random init).

    Args:
        n_labels: number of outputs.
        arch: configuration (defaults to `DEMO_ARCH`).
    """
    import torchvision

    arch = dict(DEMO_ARCH if arch is None else arch)
    net = torchvision.models.DenseNet(
        growth_rate=int(arch["growth_rate"]),
        block_config=tuple(int(b) for b in arch["block_config"]),
        num_init_features=int(arch["num_init_features"]),
        bn_size=int(arch.get("bn_size", 4)),
        num_classes=int(n_labels),
    )
    # Radiographs are single-channel: a 1-channel stem instead of repeating grey into RGB.
    net.features.conv0 = nn.Conv2d(int(arch.get("in_channels", 1)), int(arch["num_init_features"]), kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(net.features.conv0.weight)
    return PathologyNet(net.features, net.classifier)


def wrap_xrv_densenet(model: nn.Module) -> PathologyNet:
    """Wrap a torchxrayvision DenseNet so logits and Grad-CAM layers are explicit."""
    return PathologyNet(model.features, model.classifier)


def op_norm(probabilities: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Operating-point calibration as torchxrayvision's ``op_norm``: threshold ↦ 0.5, piecewise linear.

    ``p < t`` → ``p / (2 t)``; ``p ≥ t`` → ``1 - (1 - p) / (2 (1 - t))``. Labels without a threshold (NaN)
    keep their raw probability.

    Args:
        probabilities: raw sigmoid outputs (..., n_labels).
        thresholds: operating thresholds (n_labels,), NaN where a label has none.

    Returns:
        Calibrated probabilities, same shape, monotone in the raw ones.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    t = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), p.shape)
    known = ~np.isnan(t)
    safe_t = np.where(known, np.clip(t, 1e-12, 1 - 1e-12), 0.5)
    below = p / (2.0 * safe_t)
    above = 1.0 - (1.0 - p) / (2.0 * (1.0 - safe_t))
    out = np.where(p < safe_t, below, above)
    return np.where(known, out, p).astype(np.float32)


def finite_or_none(value: float) -> float | None:
    """JSON-safe float (NaN → None)."""
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value
