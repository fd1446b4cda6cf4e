"""What the Heatmap page offers and remembers: the maps with their explanations, label scores, recent maps."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

CACHE_SIZE = 8  # maps kept per session (each holds the radiograph and the map at full resolution)

KIND_HELP = {
    "paper_attention": "The published method. Not an image-region map: it shows the ViT's attention over 8 "
                       "segments of the latent code, laid out on the image for illustration only.",
    "patch_deviation": "Each position of the last VGG16 block compared with the same position in normal "
                       "training images: where the image's features leave the normal range. Normal areas stay "
                       "dark.",
    "spatial_anomaly": "Grad-CAM of the fused anomaly score through the last VGG16 block: where image "
                       "features raise the anomaly score. Localises findings poorly (see the model card); "
                       "the deviation map is the better guide to where.",
    "pathology_gradcam": "Grad-CAM of one pathology label through DenseNet121's last dense block.",
}


def map_captions(has_detector: bool, has_patch_model: bool, has_classifier: bool) -> dict[str, str]:
    """Map kind → one line under its choice: what it shows, or why it is not available."""
    no_detector = "not available: anomaly detector missing"
    return {
        "paper_attention": "published method · not spatial" if has_detector else no_detector,
        "patch_deviation": ("deviation from normal, per position" if has_patch_model
                            else "not available: no model of normal features fitted" if has_detector else no_detector),
        "spatial_anomaly": "Grad-CAM of the anomaly score" if has_detector else no_detector,
        "pathology_gradcam": "per-label Grad-CAM" if has_classifier else "not available in this build",
    }


def label_scores(prediction: Any) -> dict[str, tuple[float, float | None]]:
    """label → (probability, decision threshold or None) from a pathology prediction (object or dict)."""
    probs = getattr(prediction, "probabilities", None)
    thresholds = getattr(prediction, "thresholds", None) or {}
    if isinstance(prediction, dict):
        probs = prediction.get("probabilities", probs)
        thresholds = prediction.get("thresholds", thresholds) or {}
    if not isinstance(probs, dict):
        labels = list(getattr(prediction, "labels", []) or [])
        probs = dict(zip(labels, list(probs or [])))
    if not isinstance(thresholds, dict):
        thresholds = {}
    return {str(k): (float(v), None if thresholds.get(k) is None else float(thresholds[k])) for k, v in probs.items()}


def remember(cache: MutableMapping, key: tuple, result: Any, size: int = CACHE_SIZE) -> None:
    """Keep `result` as the most recent map; the oldest beyond `size` are dropped."""
    cache.pop(key, None)
    cache[key] = result
    while len(cache) > size:
        cache.pop(next(iter(cache)))


def analysis_map_keys(analysis: Mapping | None, maps: Mapping[str, Any] | None, study_id: str) -> dict[tuple, Any]:
    """The maps an analysis of this study already drew, under the Heatmap page's keys (study, kind, label).

    The analysis keys its maps "patch_deviation", "spatial_anomaly" or "pathology:<label>"; maps of another
    study's analysis are not returned.
    """
    if not maps or (analysis or {}).get("study_id") != study_id:
        return {}
    keyed = {}
    for key, result in maps.items():
        kind, _, label = str(key).partition(":")
        keyed[(study_id, "pathology_gradcam" if kind == "pathology" else kind, label)] = result
    return keyed


def computed_seconds(details: dict) -> float | None:
    """How long the map took, from its details (seconds, or a "total" timing in milliseconds)."""
    seconds = details.get("seconds")
    if seconds is None and isinstance(details.get("timings"), dict) and "total" in details["timings"]:
        seconds = float(details["timings"]["total"]) / 1000
    return seconds
