"""Baseline: plain convolutional autoencoder on pixels, scored by reconstruction MSE.

A reference point for the VGG16 → VAE → ViT detector: trained on normal images only (128×128
greyscale, the thumbnails cached with the VGG16 features), anomaly score = mean squared pixel error.
Reports AUROC with bootstrap CI on the test split and inference time per image (resize + forward).
Optional robust training (RCA): drop the training images whose reconstruction error is above a
percentile and retrain.

Usage:
    python -m training.baseline_autoencoder --out models/anomaly_demo_eval/baseline_autoencoder.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from tqdm import tqdm

from training.anomaly_features import DEFAULT_CACHE_DIR, THUMBNAIL_SIZE, extract_features
from training.data_args import add_data_arguments, build_extractor, resolve_splits
from training.datasets import Sample, load_image
from training.metrics import BOOTSTRAP_RESAMPLES, auroc_with_ci, bootstrap_note


class ConvAutoencoder(nn.Module):
    """128×128×1 → 8×8×64 bottleneck → 128×128×1 (stride-2 convolutions / transposed convolutions)."""

    def __init__(self) -> None:
        super().__init__()
        chans = (1, 16, 32, 64, 64)
        enc: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            enc += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        dec: list[nn.Module] = []
        rev = chans[::-1]
        for i, (cin, cout) in enumerate(zip(rev[:-1], rev[1:])):
            dec.append(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1))
            dec += [nn.BatchNorm2d(cout), nn.ReLU(inplace=True)] if i < len(rev) - 2 else [nn.Sigmoid()]
        self.encoder, self.decoder = nn.Sequential(*enc), nn.Sequential(*dec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def _tensor(thumbs: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(thumbs.astype(np.float32) / 255.0)[:, None]


@torch.no_grad()
def recon_mse(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    model.eval()
    return ((model(x) - x) ** 2).mean(dim=(1, 2, 3)).numpy()


def train_autoencoder(train: np.ndarray, val: np.ndarray, epochs: int = 30, batch_size: int = 16, lr: float = 1e-3,
                      patience: int = 5, seed: int = 0, progress: bool = True) -> nn.Module:
    """Fit on normal thumbnails (uint8 N×128×128); best model by validation MSE."""
    torch.manual_seed(seed)
    model = ConvAutoencoder()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    x_train, x_val = _tensor(train), _tensor(val)
    gen = torch.Generator().manual_seed(seed)
    best, best_state, bad = float("inf"), None, 0
    bar = tqdm(range(epochs), desc="conv AE", unit="epoch", disable=not progress)
    for _ in bar:
        model.train()
        order = torch.randperm(len(x_train), generator=gen)
        for i in range(0, len(order), batch_size):
            batch = x_train[order[i:i + batch_size]]
            if len(batch) < 2:
                continue  # BatchNorm needs two samples
            loss = ((model(batch) - batch) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        val_loss = float(recon_mse(model, x_val).mean())
        bar.set_postfix(val=f"{val_loss:.5f}")
        if val_loss < best - 1e-9:
            best, bad = val_loss, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad >= patience:
                break
    model.load_state_dict(best_state)
    return model.eval()


def inference_ms_per_image(model: nn.Module, samples: Sequence[Sample]) -> float:
    """Median time to resize one full image to 128 px and score it (milliseconds)."""
    images = [load_image(s) for s in samples]
    times = []
    for image in images[:1] + images:  # first call warms up
        start = time.perf_counter()
        small = Image.fromarray(image.astype(np.float32), mode="F").resize((THUMBNAIL_SIZE, THUMBNAIL_SIZE),
                                                                          Image.Resampling.LANCZOS)
        x = torch.from_numpy(np.clip(np.asarray(small), 0, 1))[None, None]
        recon_mse(model, x)
        times.append((time.perf_counter() - start) * 1000)
    return round(float(np.median(times[1:])), 2)


def run_baseline(train_thumbs: np.ndarray, train_normal: np.ndarray, val_thumbs: np.ndarray, val_normal: np.ndarray,
                 test_thumbs: np.ndarray, test_targets: np.ndarray, timing_samples: Sequence[Sample] = (),
                 epochs: int = 30, rca_percentile: float | None = None, n_boot: int = BOOTSTRAP_RESAMPLES,
                 progress: bool = True) -> dict[str, Any]:
    """Train on normal thumbnails and evaluate; returns the report dict."""
    normals = train_thumbs[train_normal]
    model = train_autoencoder(normals, val_thumbs[val_normal], epochs=epochs, progress=progress)
    report: dict[str, Any] = {"model": "convolutional autoencoder, 128×128 greyscale, score = pixel MSE",
                              "parameters": sum(p.numel() for p in model.parameters()),
                              "n_train_normal": int(len(normals))}
    if rca_percentile is not None:
        errors = recon_mse(model, _tensor(normals))
        keep = errors <= np.percentile(errors, rca_percentile)
        report["rca"] = {"percentile": rca_percentile, "dropped": int((~keep).sum())}
        model = train_autoencoder(normals[keep], val_thumbs[val_normal], epochs=epochs, progress=progress)
    scores = recon_mse(model, _tensor(test_thumbs))
    report.update(auroc_with_ci(test_targets, scores, n_boot).rounded())
    report.update({"n_test": int(len(scores)), "bootstrap": bootstrap_note(n_boot)})
    if timing_samples:
        report["inference_ms_per_image"] = inference_ms_per_image(model, timing_samples)
        report["timing_note"] = f"median, 1 image per call, CPU, torch threads {torch.get_num_threads()}"
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.baseline_autoencoder", description=__doc__.split("\n")[0])
    add_data_arguments(parser)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR,
                        help="feature cache (its thumbnails are reused; VGG16 runs only on a cache miss)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--rca-percentile", type=float, default=None)
    parser.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    extractor = build_extractor("demo")  # keys the shared cache; thumbnails do not depend on it
    train_s, val_s, test_s = resolve_splits(args)
    sets = [extract_features(s, extractor, args.cache_dir, desc=f"{n} images")
            for n, s in zip(("train", "val", "test"), (train_s, val_s, test_s))]
    report = run_baseline(sets[0].thumbnails, sets[0].is_normal, sets[1].thumbnails, sets[1].is_normal,
                          sets[2].thumbnails, sets[2].targets.astype(int), timing_samples=test_s[:8],
                          epochs=args.epochs, rca_percentile=args.rca_percentile)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
