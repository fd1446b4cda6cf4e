"""Anomaly-detector checkpoints: this project's format and an importer for the published one.

Own format (`torch.save` of a plain dict, loadable with `weights_only=True`):
    format="medsight-anomaly", format_version=1, config (architecture, same keys as the published
    config), vae_state, vit_state, calibration {recon_mean, recon_std, kl_mean, kl_std, source,
    n_images}, threshold, extractor {kind, sha256, seed, label, file}, meta (training data, metrics, date).

Published format (MedSight reference code, e.g. `pulmonary_anomaly_detector.pth`): a dict with
    vae_state, vit_state, config {vgg_feat_dim, vae_hidden, latent_dim, vit_patch_dim, vit_depth,
    vit_heads, vit_mlp_dim, vit_dropout, ...}, threshold, recon_mean, recon_std, kl_mean, kl_std.
It was trained on ImageNet VGG16 features and records no extractor hash, so it is accepted only with
the ImageNet extractor.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medsight.models.anomaly.detector import PUBLISHED_THRESHOLD, AnomalyDetector, Calibration
from medsight.models.anomaly.torch_model import (
    DEMO_VGG_SEED,
    EXTRACTOR_DEMO,
    EXTRACTOR_IMAGENET,
    EXTRACTOR_LABELS,
    EXTRACTOR_PHANTOM,
    FEATURE_DIM,
    LATENT_DIM,
    VAE,
    VAE_HIDDEN,
    FeatureStandardizer,
    VIT_DEPTH,
    VIT_DROPOUT,
    VIT_HEADS,
    VIT_MLP_DIM,
    VIT_PATCH_DIM,
    VGG16Features,
    ViTAnomalyScorer,
)

FORMAT_NAME = "medsight-anomaly"
FORMAT_VERSION = 1
PREPROCESS_NAME = "xray_to_vgg_input/v1 (224 Lanczos, 3-channel, ImageNet mean/std)"

DEFAULT_CONFIG: dict[str, Any] = {
    "vgg_feat_dim": FEATURE_DIM,
    "vae_hidden": list(VAE_HIDDEN),
    "latent_dim": LATENT_DIM,
    "kl_weight": 1e-3,
    "vit_patch_dim": VIT_PATCH_DIM,
    "vit_depth": VIT_DEPTH,
    "vit_heads": VIT_HEADS,
    "vit_mlp_dim": VIT_MLP_DIM,
    "vit_dropout": VIT_DROPOUT,
    "img_size": 224,
}


class CheckpointError(ValueError):
    """A checkpoint file cannot be used; the message says why (user-facing)."""


class ExtractorMismatchError(CheckpointError):
    """The checkpoint was trained on features of another VGG16 extractor."""


@dataclass
class CheckpointData:
    """A loaded checkpoint, independent of the format it came from."""

    vae: VAE
    vit: ViTAnomalyScorer
    calibration: Calibration
    threshold: float
    extractor_kind: str
    extractor_sha256: str | None
    config: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT_NAME
    path: str | None = None
    feature_norm: FeatureStandardizer | None = None


def build_networks(config: dict[str, Any] | None = None) -> tuple[VAE, ViTAnomalyScorer]:
    """Fresh VAE and ViT for an architecture config (defaults: the published architecture)."""
    cfg = {**DEFAULT_CONFIG, **(config or {})}
    vae = VAE(int(cfg["vgg_feat_dim"]), [int(h) for h in cfg["vae_hidden"]], int(cfg["latent_dim"]))
    vit = ViTAnomalyScorer(int(cfg["latent_dim"]), int(cfg["vit_patch_dim"]), int(cfg["vit_depth"]),
                           int(cfg["vit_heads"]), int(cfg["vit_mlp_dim"]), float(cfg["vit_dropout"]))
    return vae, vit


def save_checkpoint(path: str | Path, vae: VAE, vit: ViTAnomalyScorer, calibration: Calibration, threshold: float,
                    extractor: VGG16Features, meta: dict[str, Any] | None = None,
                    config: dict[str, Any] | None = None, feature_norm: FeatureStandardizer | None = None) -> Path:
    """Write a checkpoint in this project's format (fp32 weights) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": {**DEFAULT_CONFIG, **(config or {}), "preprocess": PREPROCESS_NAME},
        "vae_state": {k: v.detach().cpu().float().clone() for k, v in vae.state_dict().items()},
        "vit_state": {k: v.detach().cpu().float().clone() for k, v in vit.state_dict().items()},
        "feature_norm": None if feature_norm is None else {
            "mean": feature_norm.mean.detach().cpu().float().clone(),
            "std": feature_norm.std.detach().cpu().float().clone(),
        },
        "calibration": calibration.to_dict(),
        "threshold": float(threshold),
        "extractor": {
            "kind": extractor.kind,
            "sha256": extractor.sha256,
            "seed": DEMO_VGG_SEED if extractor.kind in (EXTRACTOR_DEMO, EXTRACTOR_PHANTOM) else None,
            "file": Path(extractor.weights_file).name if getattr(extractor, "weights_file", None) else None,
            "label": EXTRACTOR_LABELS.get(extractor.kind, extractor.kind),
        },
        "meta": {"created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **(meta or {})},
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def save_detector(path: str | Path, detector: AnomalyDetector, meta: dict[str, Any] | None = None,
                  config: dict[str, Any] | None = None) -> Path:
    """Write a detector's VAE, ViT, feature standardisation, calibration, threshold and extractor identity."""
    return save_checkpoint(path, detector.vae, detector.vit, detector.calibration, detector.threshold,
                           detector.extractor, meta, config, feature_norm=detector.feature_norm)


def _torch_load(path: Path, trust_pickle: bool) -> Any:
    if trust_pickle:
        return torch.load(path, map_location="cpu", weights_only=False)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as first:  # noqa: BLE001 - retry with numpy scalars allowed, then explain
        try:
            import numpy as np

            allowed = [np.dtype, np._core.multiarray.scalar, *[type(np.dtype(t)) for t in ("f8", "f4", "i8")]]
            with torch.serialization.safe_globals(allowed):
                return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001
            raise CheckpointError(
                f"{path.name} holds Python objects beyond tensors and numbers, which are not unpickled "
                "for safety. Load it with trust_pickle=True only if you trust its origin. "
                f"({type(first).__name__}: {str(first).splitlines()[0][:200]})"
            ) from None


def _clean_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Undo wrapper prefixes (DataParallel `module.`, torch.compile `_orig_mod.`) and known aliases."""
    cleaned = {}
    for key, value in state.items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix):]
        key = key.replace("encoder.fc_logvar.", "encoder.fc_var.")
        cleaned[key] = value.float() if torch.is_floating_point(value) else value
    return cleaned


def _load_states(vae: VAE, vit: ViTAnomalyScorer, vae_state: dict, vit_state: dict, name: str) -> None:
    for label, module, state in (("VAE", vae, vae_state), ("ViT", vit, vit_state)):
        if not isinstance(state, dict):
            raise CheckpointError(f"{name}: {label} weights are missing or not a state dict.")
        try:
            result = module.load_state_dict(_clean_state(state), strict=False)
        except RuntimeError as exc:  # shape mismatches raise even when strict=False
            detail = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
            raise CheckpointError(f"{name}: {label} weights do not fit the architecture ({detail[:200]}).") from None
        if result.missing_keys or result.unexpected_keys:
            raise CheckpointError(
                f"{name}: {label} weights do not fit the architecture "
                f"(missing {result.missing_keys[:4]}, unexpected {result.unexpected_keys[:4]})."
            )


def _as_float(value: Any) -> float:
    return float(torch.as_tensor(value, dtype=torch.float64).reshape(-1)[0])


def import_published_checkpoint(raw: dict[str, Any], name: str = "checkpoint") -> CheckpointData:
    """Convert a checkpoint in the published MedSight format.

    Raises:
        CheckpointError: when keys are missing or the weights do not fit the configured architecture.
    """
    missing = [key for key in ("vae_state", "vit_state") if key not in raw]
    if missing:
        raise CheckpointError(f"{name}: not an anomaly-detector checkpoint (missing {', '.join(missing)}).")
    config = {**DEFAULT_CONFIG, **dict(raw.get("config") or {})}
    vae, vit = build_networks(config)
    _load_states(vae, vit, raw["vae_state"], raw["vit_state"], name)
    stats = ("recon_mean", "recon_std", "kl_mean", "kl_std")
    if all(key in raw for key in stats):
        calibration = Calibration(
            recon_mean=_as_float(raw["recon_mean"]), recon_std=max(_as_float(raw["recon_std"]), 1e-8),
            kl_mean=_as_float(raw["kl_mean"]), kl_std=max(_as_float(raw["kl_std"]), 1e-8),
            source="published checkpoint",
        )
    else:
        calibration = Calibration.published()
    has_threshold = raw.get("threshold") is not None
    threshold = _as_float(raw["threshold"]) if has_threshold else PUBLISHED_THRESHOLD
    meta = {
        "imported_from": "published MedSight checkpoint format",
        "threshold_source": "checkpoint" if has_threshold else "published default",
        "config": {k: v for k, v in config.items() if isinstance(v, (int, float, str, list))},
    }
    return CheckpointData(vae=vae, vit=vit, calibration=calibration, threshold=threshold,
                          extractor_kind=EXTRACTOR_IMAGENET, extractor_sha256=None, config=config,
                          meta=meta, format="published")


def load_checkpoint(path: str | Path, *, trust_pickle: bool = False) -> CheckpointData:
    """Read a checkpoint in either format.

    Args:
        path: checkpoint file.
        trust_pickle: allow arbitrary pickled objects (only for files of trusted origin).

    Raises:
        CheckpointError: unreadable file, unknown format, or weights that do not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint not found: {path}")
    raw = _torch_load(path, trust_pickle)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path.name}: not an anomaly-detector checkpoint (top level is not a dict).")
    if raw.get("format") != FORMAT_NAME:
        data = import_published_checkpoint(raw, path.name)
        data.path = str(path)
        return data
    if int(raw.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(f"{path.name}: written by a newer version (format {raw['format_version']}).")
    config = {**DEFAULT_CONFIG, **dict(raw.get("config") or {})}
    vae, vit = build_networks(config)
    _load_states(vae, vit, raw.get("vae_state"), raw.get("vit_state"), path.name)
    extractor = dict(raw.get("extractor") or {})
    if not extractor.get("kind"):
        raise CheckpointError(f"{path.name}: the checkpoint does not say which feature extractor it was trained on.")
    norm = raw.get("feature_norm")
    feature_norm = None
    if norm is not None:
        try:
            feature_norm = FeatureStandardizer(norm["mean"], norm["std"])
        except (KeyError, TypeError, RuntimeError) as exc:
            raise CheckpointError(f"{path.name}: unreadable feature standardisation ({exc}).") from None
        if feature_norm.mean.numel() != int(config["vgg_feat_dim"]):
            raise CheckpointError(f"{path.name}: feature standardisation has the wrong size.")
    return CheckpointData(
        vae=vae, vit=vit, feature_norm=feature_norm,
        calibration=Calibration.from_dict(raw.get("calibration")),
        threshold=float(raw["threshold"]) if raw.get("threshold") is not None else PUBLISHED_THRESHOLD,
        extractor_kind=str(extractor["kind"]), extractor_sha256=extractor.get("sha256") or None,
        config=config, meta=dict(raw.get("meta") or {}), format=FORMAT_NAME, path=str(path),
    )


def check_extractor(data: CheckpointData, extractor: VGG16Features) -> None:
    """Refuse a checkpoint trained on features of another extractor.

    Raises:
        ExtractorMismatchError: kinds differ, or hashes differ when the checkpoint records one.
    """
    name = Path(data.path).name if data.path else "checkpoint"
    if data.extractor_kind != extractor.kind:
        raise ExtractorMismatchError(
            f"{name} was trained on {EXTRACTOR_LABELS.get(data.extractor_kind, data.extractor_kind)}, but the "
            f"loaded extractor provides {EXTRACTOR_LABELS.get(extractor.kind, extractor.kind)}. Its calibration "
            "and threshold would be meaningless, so it is not used."
        )
    if data.extractor_sha256 and data.extractor_sha256 != extractor.sha256:
        raise ExtractorMismatchError(
            f"{name} was trained with a different VGG16 extractor (weights hash {data.extractor_sha256[:12]}…, "
            f"loaded {extractor.sha256[:12]}…). Its calibration and threshold would be meaningless, so it is "
            "not used; retrain it with training.train_anomaly on this extractor."
        )


def build_detector(data: CheckpointData, extractor: VGG16Features, *, device: str = "cpu",
                   provenance: dict[str, Any] | None = None) -> AnomalyDetector:
    """Assemble an `AnomalyDetector` after checking the extractor matches the checkpoint."""
    check_extractor(data, extractor)
    facts = {
        "checkpoint": data.path,
        "checkpoint_format": data.format,
        "trained_on": data.meta.get("trained_on", data.meta.get("imported_from", "")),
        **(provenance or {}),
    }
    return AnomalyDetector(extractor, data.vae, data.vit, data.calibration, data.threshold, facts, device=device,
                           feature_norm=data.feature_norm)
