"""Explanation maps: where a model looks, drawn the same way everywhere.

- `render`: colour LUT, CLAHE, adaptive-alpha overlay, three-panel figure, PNG bytes, `HeatmapResult`.
- `gradcam`: a generic Grad-CAM (target layer + scalar score function → map at image resolution).
- `attention`: the published "latent attention" map of the anomaly detector (not spatial; labelled so).
- `anomaly_map`: spatially grounded anomaly maps: Grad-CAM of the fused score through the last VGG16 block,
  and the deviation of each position's features from normal (PaDiM-style; needs a fitted patch model).
- `localisation`: pointing game, top-x % IoU and energy-inside-mask against ground-truth masks.

The torch-based modules are imported lazily so that rendering stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

from medsight.device import MODELS_IN_USE
from medsight.explain.render import (
    DEFAULT_OPACITY,
    LUT,
    LUT_ANCHORS,
    MAP_KINDS,
    HeatmapResult,
    apply_colormap,
    clahe,
    make_result,
    normalise_heat,
    overlay,
    resize_heat,
    three_panels,
    to_png_bytes,
)

_LAZY = {
    "GradCAM": "medsight.explain.gradcam",
    "grad_cam": "medsight.explain.gradcam",
    "paper_attention_map": "medsight.explain.attention",
    "spatial_anomaly_map": "medsight.explain.anomaly_map",
    "patch_deviation_map": "medsight.explain.anomaly_map",
    "LocalisationScores": "medsight.explain.localisation",
    "localisation_scores": "medsight.explain.localisation",
}

__all__ = [
    "DEFAULT_OPACITY",
    "LUT",
    "LUT_ANCHORS",
    "MAP_KINDS",
    "HeatmapResult",
    "apply_colormap",
    "clahe",
    "make_result",
    "normalise_heat",
    "overlay",
    "resize_heat",
    "three_panels",
    "to_png_bytes",
    "MAP_LABELS",
    "compute_map",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medsight.explain' has no attribute {name!r}")


MAP_LABELS = {
    "paper_attention": "Paper attention",
    "patch_deviation": "Anomaly map (deviation from normal)",
    "spatial_anomaly": "Spatial anomaly map (Grad-CAM)",
    "pathology_gradcam": "Pathology Grad-CAM",
}


def compute_map(kind: str, image: Any, *, detector: Any = None, classifier: Any = None, label: str = "",
                opacity: float = DEFAULT_OPACITY) -> HeatmapResult:
    """Compute one map of the given kind over a radiograph (the Heatmap page's single entry point).

    Args:
        kind: "paper_attention", "spatial_anomaly", "patch_deviation" or "pathology_gradcam".
        image: H×W radiograph in [0, 1].
        detector: the anomaly detector (for the two anomaly maps).
        classifier: the pathology classifier (for "pathology_gradcam"); it provides `gradcam(image, label)`.
        label: pathology label for "pathology_gradcam".
        opacity: overlay opacity.

    Raises:
        ValueError: unknown kind, missing model or label, or an unusable image (messages are user-facing).
    """
    with MODELS_IN_USE:
        return _compute_map(kind, image, detector=detector, classifier=classifier, label=label, opacity=opacity)


def _compute_map(kind: str, image: Any, *, detector: Any, classifier: Any, label: str, opacity: float
                 ) -> HeatmapResult:
    """`compute_map` without the shared-model lock."""
    if kind in ("paper_attention", "spatial_anomaly", "patch_deviation"):
        if detector is None:
            raise ValueError("The anomaly detector is not loaded, so this map cannot be computed.")
        if kind == "paper_attention":
            from medsight.explain.attention import paper_attention_map

            return paper_attention_map(detector, image, opacity=opacity)
        if kind == "patch_deviation":
            from medsight.explain.anomaly_map import patch_deviation_map

            return patch_deviation_map(detector, image, opacity=opacity)
        from medsight.explain.anomaly_map import spatial_anomaly_map

        return spatial_anomaly_map(detector, image, opacity=opacity)
    if kind == "pathology_gradcam":
        if classifier is None:
            raise ValueError("The pathology classifier is not loaded, so per-label maps cannot be computed.")
        if not label:
            raise ValueError("Choose a pathology label to explain.")
        gradcam = getattr(classifier, "gradcam", None)
        if gradcam is None:
            raise ValueError("This pathology classifier does not provide Grad-CAM maps.")
        result = gradcam(image, label)
        if abs(getattr(result, "opacity", opacity) - opacity) > 1e-6 and getattr(result, "image", None) is not None:
            result = result.with_opacity(opacity)
        return result
    raise ValueError(f"Unknown map kind {kind!r}; choose one of {', '.join(MAP_LABELS)}.")
