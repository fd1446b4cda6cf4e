"""The published "attention heatmap" of the anomaly detector, reproduced and labelled for what it is.

Method (as published): the ViT scorer's last block, attention from the CLS token to the 8 latent patches,
averaged over heads → 8 weights → arranged as a 2×4 grid → bicubic to 384×384 → colour LUT → adaptive
overlay → three panels.

What it is NOT: the 8 "patches" are consecutive 32-value segments of the VAE's 256-d latent code of the
whole image. They have no spatial meaning, so where the colour lands on the radiograph is an arbitrary
layout. It is kept to reproduce the paper and is labelled so on the figure and in the API; use
`medsight.explain.anomaly_map.spatial_anomaly_map` for a map that is tied to image locations.
"""

from __future__ import annotations

import time
from typing import Any

import cv2
import numpy as np
import torch

from medsight.explain.render import DEFAULT_OPACITY, HeatmapResult, make_result, normalise_heat

PAPER_MAP_SIZE = 384
PATCH_GRID = (2, 4)  # rows × columns of the 8 latent patches (illustrative layout)

PAPER_MAP_TITLE = "Latent attention (paper method)"
PAPER_MAP_CAPTION = (
    "Latent attention (paper method): the 8 patches are segments of the 256-d latent code, not image "
    "regions; the layout on the image is illustrative only."
)


def attention_grid(weights: np.ndarray, grid: tuple[int, int] = PATCH_GRID, size: int = PAPER_MAP_SIZE) -> np.ndarray:
    """8 patch weights → 2×4 grid → bicubic to size×size, scaled to [0, 1].

    Args:
        weights: the CLS attention over the latent patches, shape (rows·columns,).
        grid: (rows, columns) of the layout.
        size: output side in pixels.

    Returns:
        float32 (size, size) map in [0, 1] (all zeros when every patch gets the same weight).
    """
    weights = np.asarray(weights, dtype=np.float32).ravel()
    if weights.size != grid[0] * grid[1]:
        raise ValueError(f"expected {grid[0] * grid[1]} patch weights; got {weights.size}")
    cells = normalise_heat(weights.reshape(grid))
    upsampled = cv2.resize(cells, (size, size), interpolation=cv2.INTER_CUBIC)
    return normalise_heat(np.clip(upsampled, 0.0, None))


def _score_text(score: float, threshold: float) -> str:
    verdict = "above" if score >= threshold else "below"
    return f"score {score:.3f} ({verdict} threshold {threshold:.3f})"


def paper_attention_map(detector: Any, image: np.ndarray, *, opacity: float = DEFAULT_OPACITY,
                        render: bool = True) -> HeatmapResult:
    """The published latent-attention map, with the fused score from the same forward pass.

    Args:
        detector: `medsight.models.anomaly.AnomalyDetector` (needs `preprocess`, `features`,
            `components_from_features`, `vit.cls_attention`, `threshold`, `tier`).
        image: H×W radiograph in [0, 1].
        opacity: overlay opacity.
        render: draw the three panels now (False for batch evaluation; drawn on first `png()`).

    Returns:
        HeatmapResult of kind "paper_attention"; `heat` and the panels are 384×384. `details` holds the 8
        patch weights, the score components and the threshold.

    Raises:
        ValueError: on an unusable image (message is user-facing).
    """
    start = time.perf_counter()
    x = detector.preprocess(image)
    with torch.inference_mode():
        parts = detector.components_from_features(detector.features(x))
        weights = detector.vit.cls_attention(parts["mu"])[0].float().cpu().numpy()
    heat = attention_grid(weights)
    small = cv2.resize(np.asarray(image, dtype=np.float32), (PAPER_MAP_SIZE, PAPER_MAP_SIZE), interpolation=cv2.INTER_AREA)
    score = float(parts["fused"][0])
    threshold = float(detector.threshold)
    tier = str(getattr(detector, "tier", "demo"))
    details = {
        "method": "ViT last-block CLS attention over the 8 latent patches, mean over heads, 2x4 grid, bicubic to 384",
        "spatial": False,
        "patch_weights": [round(float(w), 6) for w in weights],
        "threshold": threshold,
        "is_anomalous": score >= threshold,
        "components": {k: float(parts[k][0]) for k in ("recon", "kl", "vit")},
        "recon_error": float(parts["recon_error"][0]),
        "kl_divergence": float(parts["kl_divergence"][0]),
        "vit_score": float(parts["vit_score"][0]),
        "tier": tier,
        "seconds": round(time.perf_counter() - start, 3),
    }
    return make_result(
        "paper_attention",
        np.clip(small, 0.0, 1.0),
        heat,
        PAPER_MAP_TITLE,
        PAPER_MAP_CAPTION,
        score=score,
        subtitle=f"Anomaly detector · {tier.upper()} tier · not an image-region map",
        score_text=_score_text(score, threshold),
        opacity=opacity,
        details=details,
        render=render,
    )
