"""Spatially grounded anomaly map: Grad-CAM of the fused anomaly score through the last VGG16 block.

The whole detector is differentiable (VGG16 → global pool → VAE mean → reconstruction error, KL and ViT →
fused score), so the fused score can be traced back to the 14×14 activation grid of VGG16's last
convolutional block (conv5_3 + ReLU, before the final max-pool, at 224×224 input). Grad-CAM weights each
of the 512 channels by its mean gradient and keeps the positive sum: the locations whose features raise the
anomaly score. The 14×14 grid is resized back to the radiograph (the detector's 224×224 input is a plain
resize of the whole image, so the mapping is a plain resize too).

One forward/backward pass gives both the map and the score with its components, so a caller that needs
both need not run the detector twice.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from medsight.explain.gradcam import GradCAM
from medsight.explain.render import DEFAULT_OPACITY, HeatmapResult, make_result

SPATIAL_MAP_TITLE = "Spatial anomaly map"
SPATIAL_MAP_CAPTION = (
    "Grad-CAM of the fused anomaly score through the last VGG16 convolutional block (14×14 grid, "
    "resized to the image): bright areas are where image features raise the score. It is coarse and "
    "shows where the model's evidence lies, not the outline of a lesion."
)
DEMO_NOTE = (" Demo tier: a detector trained on synthetic phantoms, on VGG16 features that are not ImageNet "
             "features; not for clinical use.")


def _score_details(score: float, threshold: float, components: dict[str, float], recon_error: float,
                   kl_divergence: float, vit_score: float) -> dict[str, Any]:
    """The fused score's facts every anomaly map carries in its `details`."""
    return {
        "threshold": threshold,
        "is_anomalous": score >= threshold,
        "margin": score - threshold,
        "components": {k: float(components[k]) for k in ("recon", "kl", "vit")},
        "recon_error": float(recon_error),
        "kl_divergence": float(kl_divergence),
        "vit_score": float(vit_score),
    }


def spatial_anomaly_map(detector: Any, image: np.ndarray, *, opacity: float = DEFAULT_OPACITY,
                        render: bool = True) -> HeatmapResult:
    """Grad-CAM map of the fused anomaly score at the radiograph's resolution, plus the score itself.

    Args:
        detector: `medsight.models.anomaly.AnomalyDetector`.
        image: H×W radiograph in [0, 1].
        opacity: overlay opacity.
        render: draw the three panels now (False for batch evaluation; drawn on first `png()`).

    Returns:
        HeatmapResult of kind "spatial_anomaly": `heat` is H×W in [0, 1]; `score` is the fused score of
        the same forward pass; `details` holds the threshold, components, raw errors and timings.

    Raises:
        ValueError: on an unusable image (message is user-facing).
    """
    start = time.perf_counter()
    gray = np.asarray(image, dtype=np.float32)
    x = detector.preprocess(gray)
    parts: dict[str, Any] = {}

    def fused(batch):
        out = detector.components_from_features(detector.extractor(batch.to(detector.device)))
        parts.update({k: v.detach() for k, v in out.items()})
        return out["fused"]

    cam = GradCAM(detector.target_layer, fused, model=[detector.extractor, detector.vae, detector.vit])
    out = cam(x, output_size=gray.shape[:2])
    score = float(out.scores[0])
    threshold = float(detector.threshold)
    tier = str(getattr(detector, "tier", "demo"))
    details = {
        "method": f"Grad-CAM of the fused score at {detector.target_layer_name}",
        "spatial": True,
        **_score_details(score, threshold, {k: float(parts[k][0]) for k in ("recon", "kl", "vit")},
                         float(parts["recon_error"][0]), float(parts["kl_divergence"][0]),
                         float(parts["vit_score"][0])),
        "empty_map": bool(out.empty[0]),
        "grid": list(out.raw.shape[1:]),
        "tier": tier,
        "seconds": round(time.perf_counter() - start, 3),
    }
    caption = SPATIAL_MAP_CAPTION + (DEMO_NOTE if tier == "demo" else "")
    if out.empty[0]:
        caption += " No location raised the score for this image, so the map is blank."
    verdict = "above" if score >= threshold else "below"
    return make_result(
        "spatial_anomaly",
        gray,
        out.heat[0],
        SPATIAL_MAP_TITLE,
        caption,
        score=score,
        subtitle=f"Anomaly detector · {tier.upper()} tier · Grad-CAM, last VGG16 block",
        score_text=f"score {score:.3f} ({verdict} threshold {threshold:.3f})",
        opacity=opacity,
        details=details,
        render=render,
    )


PATCH_MAP_TITLE = "Anomaly map (deviation from normal)"
PATCH_MAP_CAPTION = (
    "Each cell of the last VGG16 block's 14×14 grid is compared with the same cell in normal training "
    "images (Mahalanobis distance of its features; PaDiM-style). Bright areas are where the image's features "
    "leave the normal range; cells within the normal range stay dark, so a normal image shows little. "
    "Coarse: it shows where the evidence lies, not the outline of a lesion."
)


def patch_deviation_map(detector: Any, image: np.ndarray, *, opacity: float = DEFAULT_OPACITY,
                        render: bool = True, precomputed: tuple[Any, Any] | None = None) -> HeatmapResult:
    """Per-position deviation of the image's features from normal, plus the fused score of the same pass.

    One forward pass of VGG16 gives both the last block's activation map (for the deviation map) and the
    pooled vector (for the fused score); no backward pass is needed.

    Args:
        detector: `medsight.models.anomaly.AnomalyDetector` with a `patch_model` fitted on its extractor.
        image: H×W radiograph in [0, 1].
        opacity: overlay opacity.
        render: draw the three panels now.
        precomputed: `detector.score_with_activations(image)` when the caller already ran it (the pipeline's
            anomaly stage), so VGG16 does not run again.

    Returns:
        HeatmapResult of kind "patch_deviation": `heat` H×W in [0, 1] on the normal-image scale; `details`
        holds the peak distance, the normal threshold, the 14×14 distance grid, the fused score and parts.

    Raises:
        ValueError: when the detector has no patch model, or on an unusable image (messages are user-facing).
    """
    model = getattr(detector, "patch_model", None)
    if model is None:
        raise ValueError("This anomaly detector has no model of normal features per position, so the deviation "
                         "map is unavailable; fit one with `python -m training.fit_patch_model`. The Grad-CAM "
                         "spatial map is available instead.")
    start = time.perf_counter()
    gray = np.asarray(image, dtype=np.float32)
    scored, activations = precomputed if precomputed is not None else detector.score_with_activations(gray)
    grid = model.distances(activations)[0]
    heat = model.heat(grid, gray.shape[:2])
    peak = float(grid.max())
    score = float(scored.fused_score)
    threshold = float(detector.threshold)
    scale = model.scale
    unusual = bool(scale is not None and peak >= scale.peak_threshold)
    tier = str(getattr(detector, "tier", "demo"))
    details = {
        "method": f"Mahalanobis distance per cell from normal features (PaDiM-style) at {detector.target_layer_name}",
        "spatial": True,
        **_score_details(score, threshold, scored.components, scored.recon_error, scored.kl_divergence,
                         scored.vit_score),
        "peak_deviation": round(peak, 4),
        "peak_threshold": None if scale is None else round(scale.peak_threshold, 4),
        "peak_unusual": unusual,
        "distance_grid": np.round(grid.numpy(), 3).tolist(),
        "grid": list(model.grid),
        "within_normal_range": bool(peak <= scale.patch_high) if scale is not None else None,
        "tier": tier,
        "seconds": round(time.perf_counter() - start, 3),
    }
    caption = PATCH_MAP_CAPTION + (DEMO_NOTE if tier == "demo" else "")
    if details["within_normal_range"]:
        caption += " No position left the normal range, so the map stays dark."
    peak_text = f"deviation {peak:.1f}" + (f" (normal ≤{scale.peak_threshold:.1f})" if scale else "")
    return make_result(
        "patch_deviation",
        gray,
        heat,
        PATCH_MAP_TITLE,
        caption,
        score=score,
        subtitle=f"Anomaly detector · {tier.upper()} tier · deviation from normal per position",
        score_text=f"score {score:.3f} · {peak_text}",
        opacity=opacity,
        details=details,
        render=render,
    )
