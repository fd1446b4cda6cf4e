"""Unsupervised chest X-ray anomaly detector: VGG16 features → VAE → ViT scorer → fused score.

Public API:
    AnomalyDetector, AnomalyResult, Calibration, load_detector, xray_to_vgg_input, fuse_scores,
    save_checkpoint, save_detector, load_checkpoint, build_detector, CheckpointError, ExtractorMismatchError.

Importing this module registers the model slot "anomaly.detector" with sources, in order:
    FILE     a real checkpoint (`medsight_anomaly.pt`, or the published `pulmonary_anomaly_detector.pth`)
             plus ImageNet VGG16 weights (`vgg16-397923af.pth`) in the models folder → tier "real";
    CACHE    the same checkpoint with the VGG16 weights from the torch hub cache → "real";
    DOWNLOAD the same checkpoint with VGG16 weights downloaded by torchvision (only when allowed);
    BUILTIN  `models/anomaly_demo.pt`, trained here on synthetic phantoms, with the demo extractor its
             checkpoint records: the VGG16 fine-tuned on synthetic phantoms (`anomaly_vgg16_phantom.pt`) or
             the seeded random VGG16 (both "demo — not ImageNet features") → tier "demo".

Each source also attaches the per-position model of normal features (`patch.PatchDeviationModel`, for the
deviation map) when a file fitted on the same extractor is found: `anomaly_patch.pt` (fitted by the user
with `training.fit_patch_model`), else the shipped `anomaly_patch_demo.pt`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from medsight import registry
from medsight.config import Settings
from medsight.models.anomaly.checkpoint import (
    CheckpointData,
    CheckpointError,
    ExtractorMismatchError,
    build_detector,
    load_checkpoint,
    save_checkpoint,
    save_detector,
)
from medsight.models.anomaly.detector import (
    FUSION_WEIGHTS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    INPUT_SIZE,
    PUBLISHED_THRESHOLD,
    AnomalyDetector,
    AnomalyResult,
    Calibration,
    fuse_scores,
    xray_to_vgg_input,
)
from medsight.models.anomaly.patch import PatchDeviationModel
from medsight.models.anomaly.torch_model import (
    DEMO_VGG_SEED,
    EXTRACTOR_DEMO,
    EXTRACTOR_IMAGENET,
    EXTRACTOR_LABELS,
    EXTRACTOR_PHANTOM,
    LAST_CONV_RELU_INDEX,
    PHANTOM_EXTRACTOR_FILE,
    VAE,
    FeatureStandardizer,
    VGG16Features,
    ViTAnomalyScorer,
    build_demo_extractor,
    build_imagenet_extractor,
    load_phantom_extractor,
)

__all__ = [
    "AnomalyDetector", "AnomalyResult", "Calibration", "CheckpointData", "CheckpointError",
    "ExtractorMismatchError", "FeatureStandardizer", "FUSION_WEIGHTS", "IMAGENET_MEAN", "IMAGENET_STD", "INPUT_SIZE",
    "LAST_CONV_RELU_INDEX", "PUBLISHED_THRESHOLD", "SLOT_NAME", "VAE", "VGG16Features", "ViTAnomalyScorer",
    "build_demo_extractor", "build_detector", "build_imagenet_extractor", "fuse_scores", "load_checkpoint",
    "load_detector", "load_imagenet_extractor", "save_checkpoint", "save_detector", "xray_to_vgg_input",
    "DEMO_VGG_SEED", "EXTRACTOR_DEMO", "EXTRACTOR_IMAGENET", "EXTRACTOR_PHANTOM", "PHANTOM_EXTRACTOR_FILE",
    "load_demo_extractor", "load_phantom_extractor", "PatchDeviationModel", "PATCH_MODEL_NAMES",
]

SLOT_NAME = "anomaly.detector"
REAL_CHECKPOINT_NAMES = ("medsight_anomaly.pt", "pulmonary_anomaly_detector.pth", "pulmonary_anomaly.pth")
DEMO_CHECKPOINT_NAME = "anomaly_demo.pt"
VGG16_IMAGENET_FILE = "vgg16-397923af.pth"  # torchvision's file name for VGG16_Weights.IMAGENET1K_V1
PATCH_MODEL_NAMES = ("anomaly_patch.pt", "anomaly_patch_demo.pt")


def attach_patch_model(ctx: registry.LoadContext, detector: AnomalyDetector) -> None:
    """Give the detector the first patch model fitted on its own extractor, if any (else leave it None).

    A file fitted on another extractor is skipped (e.g. the demo file next to real ImageNet weights), and
    so is an unreadable one (noted in the provenance): the detector and its other maps work without one.
    """
    for name in PATCH_MODEL_NAMES:
        path = ctx.find_file(name)
        if path is None:
            continue
        try:
            model = PatchDeviationModel.load(path, extractor_sha256=detector.extractor.sha256)
        except ExtractorMismatchError:
            continue
        except CheckpointError as exc:
            detector.provenance.setdefault("patch_model_errors", []).append(str(exc))
            continue
        detector.patch_model = model
        detector.provenance["patch_model"] = {"file": str(path), **model.summary()}
        return


def patch_model_note(detector: AnomalyDetector) -> str:
    """One line for the System page: whether the deviation-from-normal map is available, and from what."""
    info = detector.provenance.get("patch_model")
    if detector.patch_model is None or not info:
        errors = detector.provenance.get("patch_model_errors")
        return "deviation map unavailable (" + ("; ".join(errors) if errors else
                                                "no model of normal features fitted on this extractor") + ")"
    return f"deviation map: {Path(info['file']).name}, fitted on {info.get('n_images')} normal images"


def hub_cache_vgg16_path() -> Path:
    """Where torchvision keeps downloaded VGG16 ImageNet weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_IMAGENET_FILE


def load_imagenet_extractor(path: str | Path) -> VGG16Features:
    """ImageNet VGG16 extractor from a torchvision weights file.

    Raises:
        ValueError: when the file is not VGG16 weights.
    """
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    return build_imagenet_extractor(state)


def _real_checkpoint(ctx: registry.LoadContext) -> CheckpointData | None:
    path = ctx.find_file(*REAL_CHECKPOINT_NAMES)
    if path is None:
        return None
    data = load_checkpoint(path)
    if data.extractor_kind != EXTRACTOR_IMAGENET:
        raise CheckpointError(
            f"{path.name} was trained on {data.extractor_kind} features, not ImageNet VGG16; it is not a real model."
        )
    return data


def _real_found(ctx: registry.LoadContext, data: CheckpointData, extractor: VGG16Features, vgg_source: str,
                vgg_path: Path | None = None) -> registry.Found:
    detector = build_detector(data, extractor, device=ctx.device, provenance={
        "tier": "real", "vgg16_weights": vgg_source,
    })
    attach_patch_model(ctx, detector)
    return registry.Found(
        model=detector, path=data.path, version=f"{data.format} checkpoint",
        notes=f"ImageNet VGG16 features ({vgg_source}); calibration: {data.calibration.source}; "
              f"threshold {data.threshold:.3f}; {patch_model_note(detector)}",
        also=(str(vgg_path),) if vgg_path else (),
    )


def _load_file(ctx: registry.LoadContext) -> registry.Found | None:
    data = _real_checkpoint(ctx)
    if data is None:
        return None
    vgg = ctx.find_file(VGG16_IMAGENET_FILE)
    if vgg is None:
        raise FileNotFoundError(
            f"checkpoint {Path(data.path).name} found, but {VGG16_IMAGENET_FILE} (ImageNet VGG16) is not in the "
            "models folder"
        )
    return _real_found(ctx, data, load_imagenet_extractor(vgg), str(vgg), vgg)


def _load_cache(ctx: registry.LoadContext) -> registry.Found | None:
    cached = hub_cache_vgg16_path()
    if not cached.is_file():
        return None
    data = _real_checkpoint(ctx)
    if data is None:
        return None
    return _real_found(ctx, data, load_imagenet_extractor(cached), f"torch hub cache {cached}", cached)


def _load_download(ctx: registry.LoadContext) -> registry.Found | None:
    data = _real_checkpoint(ctx)
    if data is None:
        return None  # ImageNet features alone are useless without a checkpoint trained on them
    from torchvision.models import VGG16_Weights

    state = VGG16_Weights.IMAGENET1K_V1.get_state_dict(progress=False, check_hash=True)
    cached = hub_cache_vgg16_path()
    return _real_found(ctx, data, build_imagenet_extractor(state), "downloaded by torchvision",
                       cached if cached.is_file() else None)


def load_demo_extractor(kind: str, phantom_file: str | Path | None = None) -> VGG16Features:
    """The demo-tier extractor a checkpoint was trained with.

    Args:
        kind: `EXTRACTOR_PHANTOM` (VGG16 fine-tuned on synthetic phantoms) or `EXTRACTOR_DEMO` (seeded random).
        phantom_file: the phantom extractor's weights file (default: the shipped `models/` copy).

    Raises:
        CheckpointError: unknown kind or missing weights file.
    """
    if kind == EXTRACTOR_DEMO:
        return build_demo_extractor()
    if kind == EXTRACTOR_PHANTOM:
        from medsight.config import SHIPPED_MODELS_DIR

        path = Path(phantom_file) if phantom_file else SHIPPED_MODELS_DIR / PHANTOM_EXTRACTOR_FILE
        if not path.is_file():
            raise CheckpointError(f"The demo checkpoint needs its extractor weights {PHANTOM_EXTRACTOR_FILE}, "
                                  "which are not in the models folder.")
        return load_phantom_extractor(path)
    raise CheckpointError(f"{EXTRACTOR_LABELS.get(kind, kind)} is not a demo extractor.")


def _load_builtin(ctx: registry.LoadContext) -> registry.Found | None:
    path = ctx.find_file(DEMO_CHECKPOINT_NAME)
    if path is None:
        return None
    data = load_checkpoint(path)
    phantom_file = ctx.find_file(PHANTOM_EXTRACTOR_FILE) if data.extractor_kind == EXTRACTOR_PHANTOM else None
    extractor = load_demo_extractor(data.extractor_kind, phantom_file)
    provenance = {"tier": "demo"}
    if phantom_file is not None:
        provenance["extractor_file"] = str(phantom_file)
    detector = build_detector(data, extractor, device=ctx.device, provenance=provenance)
    attach_patch_model(ctx, detector)
    metrics = data.meta.get("metrics", {}).get("test", {})
    auroc = metrics.get("auroc_full")
    return registry.Found(
        model=detector, path=str(path), version=f"demo {data.meta.get('created', '')}".strip(),
        notes=f"trained on synthetic phantoms; extractor: {EXTRACTOR_LABELS.get(extractor.kind, extractor.kind)}; "
              "not for clinical use" + (f"; phantom test AUROC {auroc:.3f}" if isinstance(auroc, float) else "")
              + f"; {patch_model_note(detector)}",
    )


SLOT = registry.register(registry.ModelSlot(
    name=SLOT_NAME,
    title="Anomaly detector (VGG16 → VAE → ViT)",
    task="Unsupervised anomaly score of a chest radiograph against normal anatomy",
    sources=[
        registry.Source(registry.SourceKind.FILE, "checkpoint + ImageNet VGG16 weights in models folder",
                        registry.Tier.REAL, _load_file, registry.Domain.CHEST_XR),
        registry.Source(registry.SourceKind.CACHE, "checkpoint + ImageNet VGG16 from torch hub cache",
                        registry.Tier.REAL, _load_cache, registry.Domain.CHEST_XR),
        registry.Source(registry.SourceKind.DOWNLOAD, "checkpoint + ImageNet VGG16 downloaded by torchvision",
                        registry.Tier.REAL, _load_download, registry.Domain.CHEST_XR),
        registry.Source(registry.SourceKind.BUILTIN, "demo weights trained on synthetic phantoms (models/anomaly_demo.pt)",
                        registry.Tier.DEMO, _load_builtin, registry.Domain.PHANTOM),
    ],
    labels=("normal", "anomalous"),
    input_spec="greyscale chest radiograph, H×W float in [0, 1]; resized to 224×224 (Lanczos), 3 channels, "
               "ImageNet mean/std",
    how_to_get_real=(
        "The real tier needs BOTH ImageNet VGG16 weights and a checkpoint trained on them, each a pinned published "
        "file (a checkpoint of your own loads as USER, with its model card). (1) VGG16 weights: "
        "`python -m medsight.weights fetch anomaly.detector`, or "
        f"put torchvision's {VGG16_IMAGENET_FILE} in the models folder of the data directory or in the torch hub "
        "cache (~/.cache/torch/hub/checkpoints), or set MEDSIGHT_ALLOW_DOWNLOADS=1 to let torchvision download "
        "it. (2) Checkpoint: put medsight_anomaly.pt (from `python -m training.train_anomaly --extractor imagenet` "
        "on real normal radiographs, e.g. the COVID-19 Radiography Database) or the published "
        "pulmonary_anomaly_detector.pth in the models folder. (3) Deviation map: fit its model of normal "
        "features on the same extractor with `python -m training.fit_patch_model --data <dataset> --out "
        "<data dir>/models/anomaly_patch.pt`."
    ),
))


def load_detector(settings: Settings | None = None, device: str | None = None) -> AnomalyDetector:
    """The anomaly detector from the first available registry source (cached per process).

    Raises:
        registry.ModelUnavailable: when no source can provide a detector.
    """
    loaded = registry.load(SLOT_NAME, settings=settings, device=device)
    detector: AnomalyDetector = loaded.model
    detector.provenance["registry"] = loaded.provenance.to_dict()
    return detector
