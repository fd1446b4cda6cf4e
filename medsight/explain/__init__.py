"""Explanation maps: where a model looks, drawn the same way everywhere.

- `render`: colour LUT, CLAHE, adaptive-alpha overlay, three-panel figure, PNG bytes, `HeatmapResult`.
- `gradcam`: a generic Grad-CAM (target layer + scalar score function → map at image resolution).
- `attention`: the published "latent attention" map of the anomaly detector (not spatial; labelled so).
- `anomaly_map`: a spatially grounded map of the fused anomaly score (Grad-CAM through the last VGG16 block).
- `localisation`: pointing game, top-x % IoU and energy-inside-mask against ground-truth masks.

The torch-based modules are imported lazily so that rendering stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

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
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medsight.explain' has no attribute {name!r}")
