"""Extract and cache VGG16 feature vectors (512-d) for anomaly-detector training and evaluation.

Feature extraction dominates training cost on a CPU (~0.15 s per image at 224 px), so vectors are
cached as `.npy` keyed by a fingerprint of the sample ids, the extractor's weight hash and the
preprocessing name; a cache hit skips extraction entirely. Partial progress is saved every few
batches, so an interrupted run resumes where it stopped. A small 8-bit thumbnail of every image is
cached alongside for the pixel-space baseline.

Usage:
    python -m training.anomaly_features --data phantoms --n 200 --seed 1 --cache-dir artifacts/anomaly_cache
    python -m training.anomaly_features --data covid:/data/COVID-19_Radiography_Dataset --extractor imagenet
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from medsight.models.anomaly import VGG16Features, xray_to_vgg_input
from medsight.models.anomaly.checkpoint import PREPROCESS_NAME
from training.data_args import add_data_arguments, build_extractor, resolve_splits
from training.datasets import Sample, load_image

THUMBNAIL_SIZE = 128
DEFAULT_CACHE_DIR = Path("artifacts") / "anomaly_cache"


@dataclass
class FeatureSet:
    """Cached VGG16 vectors with their sample facts (row i belongs to samples[i])."""

    features: np.ndarray  # (N, 512) float32
    thumbnails: np.ndarray  # (N, 128, 128) uint8 greyscale
    samples: list[Sample]
    extractor_sha256: str

    @property
    def is_normal(self) -> np.ndarray:
        return np.array([s.is_normal for s in self.samples], dtype=bool)

    @property
    def targets(self) -> np.ndarray:
        """0 for normal, 1 for anomalous."""
        return (~self.is_normal).astype(np.float32)

    @property
    def labels(self) -> list[str]:
        return [s.label for s in self.samples]

    def subset(self, mask: np.ndarray) -> "FeatureSet":
        index = np.flatnonzero(mask)
        return FeatureSet(self.features[index], self.thumbnails[index], [self.samples[i] for i in index],
                          self.extractor_sha256)


def fingerprint(samples: Sequence[Sample], extractor: VGG16Features) -> str:
    digest = hashlib.sha256()
    digest.update(extractor.sha256.encode())
    digest.update(PREPROCESS_NAME.encode())
    for sample in samples:
        digest.update(f"\n{sample.id}|{sample.label}".encode())
    return digest.hexdigest()[:20]


def _thumbnail(image: np.ndarray) -> np.ndarray:
    small = Image.fromarray(np.clip(image, 0, 1).astype(np.float32), mode="F").resize(
        (THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.LANCZOS)
    return np.round(np.clip(np.asarray(small), 0, 1) * 255).astype(np.uint8)


def extract_features(samples: Sequence[Sample], extractor: VGG16Features, cache_dir: str | Path | None = DEFAULT_CACHE_DIR,
                     batch_size: int = 16, desc: str = "VGG16 features", progress: bool = True) -> FeatureSet:
    """VGG16 512-vectors of `samples`, from the cache when present.

    Args:
        samples: images to encode.
        extractor: frozen VGG16 trunk (its hash keys the cache).
        cache_dir: where `<fingerprint>.npy` files live; None disables caching.
        batch_size: images per forward pass.
        desc: progress-bar label.
        progress: show a tqdm bar.
    """
    samples = list(samples)
    key = fingerprint(samples, extractor)
    paths = None
    if cache_dir is not None:
        cache_dir = Path(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        paths = {name: cache_dir / f"{key}.{name}.npy" for name in ("features", "thumbs")}
        meta_path = cache_dir / f"{key}.json"
        if all(p.is_file() for p in paths.values()) and meta_path.is_file():
            return FeatureSet(np.load(paths["features"]), np.load(paths["thumbs"]), samples, extractor.sha256)
    n = len(samples)
    features = np.zeros((n, extractor.out_dim), np.float32)
    thumbs = np.zeros((n, THUMBNAIL_SIZE, THUMBNAIL_SIZE), np.uint8)
    start = 0
    partial = cache_dir / f"{key}.partial.npz" if cache_dir is not None else None
    if partial is not None and partial.is_file():
        saved = np.load(partial)
        start = int(saved["done"])
        features[:start], thumbs[:start] = saved["features"][:start], saved["thumbs"][:start]
    device = next(extractor.parameters()).device
    bar = tqdm(total=n, initial=start, desc=desc, unit="img", disable=not progress)
    with torch.inference_mode():
        for begin in range(start, n, batch_size):
            chunk = samples[begin:begin + batch_size]
            images = [load_image(s) for s in chunk]
            x = torch.cat([xray_to_vgg_input(img) for img in images]).to(device)
            features[begin:begin + len(chunk)] = extractor(x).float().cpu().numpy()
            thumbs[begin:begin + len(chunk)] = np.stack([_thumbnail(img) for img in images])
            bar.update(len(chunk))
            done = begin + len(chunk)
            if partial is not None and (done // batch_size) % 8 == 0 and done < n:
                np.savez(partial, features=features, thumbs=thumbs, done=done)
    bar.close()
    if paths is not None:
        np.save(paths["features"], features)
        np.save(paths["thumbs"], thumbs)
        meta = {"n": n, "extractor_sha256": extractor.sha256, "preprocess": PREPROCESS_NAME,
                "ids": [s.id for s in samples], "labels": [s.label for s in samples]}
        (cache_dir / f"{key}.json").write_text(json.dumps(meta))
        if partial is not None and partial.is_file():
            partial.unlink()
    return FeatureSet(features, thumbs, samples, extractor.sha256)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.anomaly_features", description=__doc__.split("\n")[0])
    add_data_arguments(parser)
    parser.add_argument("--extractor", default="demo",
                        help="demo (seeded random), phantom (VGG16 fine-tuned on phantoms), a .pt file, or imagenet")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the machine may be shared)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    extractor = build_extractor(args.extractor)
    for name, samples in zip(("train", "val", "test"), resolve_splits(args)):
        feats = extract_features(samples, extractor, args.cache_dir, desc=f"{name} features")
        print(f"{name}: {len(samples)} images ({int(feats.is_normal.sum())} normal), features {feats.features.shape}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
