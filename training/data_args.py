"""Command-line data options shared by the anomaly-detector scripts: which images, how they are split, and
which VGG16 trunk encodes them.

Used by training.train_anomaly, training.evaluate_anomaly, training.anomaly_features,
training.baseline_autoencoder and training.fit_patch_model, so every script reads the same phantoms or the same
70/15/15 split of a real dataset from the same flags.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medsight.config import SHIPPED_MODELS_DIR, get_settings
from medsight.models.anomaly import (
    PHANTOM_EXTRACTOR_FILE,
    VGG16Features,
    build_demo_extractor,
    build_imagenet_extractor,
    hub_cache_vgg16_path,
    load_imagenet_extractor,
    load_phantom_extractor,
)
from training.datasets import Sample, phantom_samples, read_dataset, split_samples


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the "data" option group (--data, phantom sizes and seeds, --split-seed) to a parser."""
    group = parser.add_argument_group("data")
    group.add_argument("--data", default="phantoms",
                       help="phantoms, or covid:<root>, folders:<root>, csv:<manifest.csv>, dicom:<root>")
    group.add_argument("--n-train", type=int, default=600, help="phantoms: training images")
    group.add_argument("--n-val", type=int, default=200, help="phantoms: validation images")
    group.add_argument("--n-test", type=int, default=200, help="phantoms: test images")
    group.add_argument("--phantom-size", type=int, default=512, help="phantoms: image side in pixels")
    group.add_argument("--phantom-seed", type=int, default=1,
                       help="phantoms: dataset seed of the training split (validation +1, test +2)")
    group.add_argument("--normal-fraction", type=float, default=0.5, help="phantoms: share of normal images")
    group.add_argument("--split-seed", type=int, default=0, help="file datasets: seed of the 70/15/15 split")


def resolve_splits(args: argparse.Namespace) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """Train / validation / test samples for the parsed data arguments."""
    if args.data == "phantoms":
        make = lambda n, k: phantom_samples(n, seed=args.phantom_seed + k, size=args.phantom_size,  # noqa: E731
                                            normal_fraction=args.normal_fraction)
        return make(args.n_train, 0), make(args.n_val, 1), make(args.n_test, 2)
    return split_samples(read_dataset(args.data), seed=args.split_seed)


def describe_data(args: argparse.Namespace) -> str:
    """One line naming the images and split, for model cards and reports."""
    if args.data == "phantoms":
        return (f"synthetic phantoms (medsight.synthetic, {args.phantom_size} px, dataset seeds "
                f"{args.phantom_seed}/{args.phantom_seed + 1}/{args.phantom_seed + 2}, normal fraction "
                f"{args.normal_fraction})")
    return f"{args.data} (stratified 70/15/15 split, seed {args.split_seed})"


def build_extractor(kind: str) -> VGG16Features:
    """VGG16 trunk: "demo" (seeded), "phantom" (shipped phantom-trained file), a phantom-extractor .pt path,
    or "imagenet" (local files or, if allowed, a download).

    Raises:
        SystemExit: ImageNet weights requested but unavailable.
    """
    if kind == "demo":
        return build_demo_extractor()
    if kind == "phantom" or kind.endswith(".pt"):
        path = Path(kind) if kind != "phantom" else SHIPPED_MODELS_DIR / PHANTOM_EXTRACTOR_FILE
        if not path.is_file():
            raise SystemExit(f"Phantom-trained extractor {path} not found; build it with "
                             "`python -m training.train_vgg_extractor train`.")
        return load_phantom_extractor(path)
    if kind != "imagenet":
        raise SystemExit(f"Unknown extractor {kind!r}: use demo, phantom, imagenet or a .pt weights file.")
    settings = get_settings()
    for candidate in (settings.models_dir / "vgg16-397923af.pth", SHIPPED_MODELS_DIR / "vgg16-397923af.pth",
                      hub_cache_vgg16_path()):
        if candidate.is_file():
            return load_imagenet_extractor(candidate)
    if settings.allow_network:
        # torchvision is imported only for the one-off ImageNet download path.
        from torchvision.models import VGG16_Weights

        return build_imagenet_extractor(VGG16_Weights.IMAGENET1K_V1.get_state_dict(progress=True))
    raise SystemExit("ImageNet VGG16 weights (vgg16-397923af.pth) not found in the models folder or the torch hub "
                     "cache; place the file there or set MEDSIGHT_ALLOW_DOWNLOADS=1.")
