"""Train the anomaly detector (VGG16 → VAE → ViT) and write a checkpoint.

Steps:
    1. VGG16 feature vectors of train / validation / test images (cached, see training.anomaly_features).
    2. Phase 1, VAE on NORMAL training images only (unsupervised): AdamW lr 1e-4, weight decay 1e-5,
       batch 32, loss = feature MSE + β·KL with β = 0.001, ReduceLROnPlateau(factor 0.5, patience 3) and
       early stopping (patience 10) on the validation normals' loss; gradient accumulation; AMP on CUDA.
       Optional robust training (RCA): drop training normals whose reconstruction error is above a
       percentile and retrain the VAE from scratch on the rest.
    3. Phase 2, ViT scorer on the frozen VAE's latent (posterior samples z ~ q(z|x) in training, as the
       published forward feeds it in training mode; means at validation and inference): AdamW lr 5e-5, weight decay 1e-5, BCE
       with normal = 0 and anomalous = 1. This phase USES LABELS (as the published design does), so
       the fused score is not purely unsupervised; the reconstruction and KL terms are.
    4. Calibration: mean/std of reconstruction error and KL over the normal training images.
    5. Threshold: Youden's J (max sensitivity + specificity − 1) of the fused score on validation.
Demo extractors (`--extractor phantom`: VGG16 whose block 5 was fine-tuned on labelled synthetic phantoms by
training.train_vgg_extractor, the shipped demo's; `--extractor demo`: seeded random VGG16; or a path to a
phantom-extractor weights file): their vectors are standardised per feature with the normal training
images' statistics before the VAE (stored in the checkpoint; `--standardise-features`) — the seeded
random vectors vary little between images (std ≈ 0.006 around ≈ 0.09). ImageNet runs keep raw vectors,
as published.
Each epoch writes a resumable state to --work-dir; `--resume` continues an interrupted run.

Examples:
    python -m training.train_vgg_extractor train        # phantom-trained extractor (models/anomaly_vgg16_phantom.pt)
    python -m training.train_anomaly --demo            # rebuild models/anomaly_demo.pt (+ card, evaluation)
    python -m training.train_anomaly --data covid:/data/COVID-19_Radiography_Dataset --extractor imagenet \\
        --out ~/.medsight/models/medsight_anomaly.pt
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from medsight.config import SHIPPED_MODELS_DIR
from medsight.models.anomaly import (
    DEMO_VGG_SEED,
    EXTRACTOR_IMAGENET,
    EXTRACTOR_LABELS,
    EXTRACTOR_PHANTOM,
    PHANTOM_EXTRACTOR_FILE,
    AnomalyDetector,
    Calibration,
    FeatureStandardizer,
    VGG16Features,
    save_detector,
)
from medsight.models.anomaly.checkpoint import DEFAULT_CONFIG, build_networks
from medsight.models.anomaly.torch_model import kl_per_sample, recon_error_per_sample, vae_loss
from training.anomaly_features import DEFAULT_CACHE_DIR, FeatureSet, extract_features
from training.data_args import add_data_arguments, build_extractor, describe_data, resolve_splits
from training.evaluate_anomaly import evaluate, write_card
from training.metrics import auroc, youden_threshold

DEMO_DISCLAIMERS = {
    "phantom": "demo — trained on synthetic phantoms; VGG16 fine-tuned on synthetic phantoms, not ImageNet "
               "features; not for clinical use",
    "demo": "demo — trained on synthetic phantoms, seeded random VGG16 features, not for clinical use",
}
DEMO_EXTRACTOR = "phantom"  # extractor of the shipped demo (`--demo`)
DEMO_CHECKPOINT = SHIPPED_MODELS_DIR / "anomaly_demo.pt"
DEMO_CARD = SHIPPED_MODELS_DIR / "anomaly_demo.card.json"
DEMO_EVAL_DIR = SHIPPED_MODELS_DIR / "anomaly_demo_eval"
# The published 50 / 30 epochs were sized for ~7,000 normal images; a few hundred phantoms need more passes
# for a comparable number of optimiser steps (early stopping still ends training on a plateau).
DEMO_EPOCHS = (600, 200)


@dataclass
class TrainConfig:
    """Optimisation settings (defaults are the published ones)."""

    vae_epochs: int = 50
    vit_epochs: int = 30
    batch_size: int = 32
    accum_steps: int = 1
    lr_vae: float = 1e-4
    lr_vit: float = 5e-5
    weight_decay: float = 1e-5
    beta: float = 1e-3
    patience: int = 10
    plateau_factor: float = 0.5
    plateau_patience: int = 3
    rca_percentile: float | None = None
    standardise_features: bool | None = None  # None: on for the demo (seeded) extractor, off for ImageNet
    vit_on_posterior_samples: bool = True
    seed: int = 0
    device: str = "cpu"


# ---- phases ---------------------------------------------------------------------------------------
def _save_state(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _load_state(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)  # our own work file


def _resume(state_path: Path | None, resume: bool, model: nn.Module, opt, gen: torch.Generator, sched=None):
    """Restore a phase's work file: (start epoch, best loss, best state, bad epochs, history, finished)."""
    saved = _load_state(state_path) if (resume and state_path) else None
    if saved is None:
        return 0, math.inf, None, 0, [], False
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["opt"])
    if sched is not None:
        sched.load_state_dict(saved["sched"])
    gen.set_state(saved["gen"])
    torch.set_rng_state(saved["rng"])
    if saved.get("done"):
        model.load_state_dict(saved["best_state"])
    return saved["epoch"], saved["best"], saved["best_state"], saved["bad"], saved["history"], bool(saved.get("done"))


def _save_progress(state_path: Path, model: nn.Module, opt, gen: torch.Generator, epoch: int, best: float,
                   best_state, bad: int, history: list, done: bool, sched=None) -> None:
    """Write a phase's work file (the counterpart of `_resume`)."""
    state = {"model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
             "rng": torch.get_rng_state(), "epoch": epoch, "best": best, "best_state": best_state, "bad": bad,
             "history": history, "done": done}
    if sched is not None:
        state["sched"] = sched.state_dict()
    _save_state(state_path, state)


def train_vae(train_x: np.ndarray, val_x: np.ndarray, cfg: TrainConfig, work_dir: Path | None = None,
              resume: bool = False, tag: str = "phase1_vae", progress: bool = True) -> tuple[nn.Module, list[dict]]:
    """Phase 1: VAE on normal feature vectors; returns the best (lowest validation loss) model and history."""
    device = torch.device(cfg.device)
    amp = device.type == "cuda"
    torch.manual_seed(cfg.seed)
    vae, _ = build_networks()
    vae.to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr_vae, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=cfg.plateau_factor,
                                                       patience=cfg.plateau_patience)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    gen = torch.Generator().manual_seed(cfg.seed)
    x_train = torch.from_numpy(train_x).float().to(device)
    x_val = torch.from_numpy(val_x).float().to(device)
    state_path = work_dir / f"{tag}.pt" if work_dir else None
    start, best, best_state, bad, history, done = _resume(state_path, resume, vae, opt, gen, sched)
    if done:
        return vae.eval(), history
    bar = tqdm(range(start, cfg.vae_epochs), desc="phase 1 VAE", unit="epoch", disable=not progress)
    for epoch in bar:
        vae.train()
        order = torch.randperm(len(x_train), generator=gen)
        batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for step, index in enumerate(batches):
            with torch.autocast(device_type=device.type, enabled=amp):
                x_hat, mu, log_var, _ = vae(x_train[index])
                loss, _, _ = vae_loss(x_hat.float(), x_train[index], mu.float(), log_var.float(), cfg.beta)
            scaler.scale(loss / cfg.accum_steps).backward()
            if (step + 1) % cfg.accum_steps == 0 or step == len(batches) - 1:
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
            total += float(loss.detach()) * len(index)
        vae.eval()
        with torch.no_grad():
            x_hat, mu, log_var, _ = vae(x_val)
            val_loss, val_recon, val_kl = (float(v) for v in vae_loss(x_hat, x_val, mu, log_var, cfg.beta))
        sched.step(val_loss)
        improved = val_loss < best - 1e-9
        if improved:
            best, bad = val_loss, 0
            best_state = copy.deepcopy(vae.state_dict())
        else:
            bad += 1
        history.append({"epoch": epoch + 1, "train_loss": total / len(x_train), "val_loss": val_loss,
                        "val_recon": val_recon, "val_kl": val_kl, "lr": opt.param_groups[0]["lr"]})
        bar.set_postfix(val=f"{val_loss:.5f}", recon=f"{val_recon:.5f}", kl=f"{val_kl:.3f}")
        stop = bad >= cfg.patience
        if state_path:
            _save_progress(state_path, vae, opt, gen, epoch + 1, best, best_state, bad, history,
                           stop or epoch + 1 == cfg.vae_epochs, sched)
        if stop:
            break
    bar.close()
    vae.load_state_dict(best_state)
    return vae.eval(), history


@torch.no_grad()
def latent_means(vae: nn.Module, x: np.ndarray, device: str = "cpu") -> torch.Tensor:
    vae.eval()
    return vae.encoder(torch.from_numpy(x).float().to(device))[0]


def train_vit(vae: nn.Module, train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
              cfg: TrainConfig, work_dir: Path | None = None, resume: bool = False, tag: str = "phase2_vit",
              progress: bool = True) -> tuple[nn.Module, list[dict]]:
    """Phase 2: ViT on the frozen VAE's posterior means, BCE normal 0 / anomalous 1; best by validation loss."""
    device = torch.device(cfg.device)
    amp = device.type == "cuda"
    torch.manual_seed(cfg.seed + 1)
    _, vit = build_networks()
    vit.to(device)
    with torch.no_grad():
        vae.eval()
        mu_train, logvar_train = vae.encoder(torch.from_numpy(train_x).float().to(device))
        std_train = torch.exp(0.5 * logvar_train)
    z_train, z_val = mu_train, latent_means(vae, val_x, cfg.device)
    y_train = torch.from_numpy(train_y).float().to(device)
    y_val = torch.from_numpy(val_y).float().to(device)
    opt = torch.optim.AdamW(vit.parameters(), lr=cfg.lr_vit, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    bce = nn.BCELoss()
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    state_path = work_dir / f"{tag}.pt" if work_dir else None
    start, best, best_state, bad, history, done = _resume(state_path, resume, vit, opt, gen)
    if done:
        return vit.eval(), history
    bar = tqdm(range(start, cfg.vit_epochs), desc="phase 2 ViT", unit="epoch", disable=not progress)
    for epoch in bar:
        vit.train()
        order = torch.randperm(len(z_train), generator=gen)
        batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for step, index in enumerate(batches):
            z = z_train[index]
            if cfg.vit_on_posterior_samples:  # z ~ q(z|x), as the published forward feeds in training mode
                noise = torch.randn(z.shape, generator=gen).to(device)
                z = z + noise * std_train[index]
            with torch.autocast(device_type=device.type, enabled=amp):
                prob = vit(z).float().clamp(1e-6, 1 - 1e-6)
            loss = bce(prob, y_train[index])
            scaler.scale(loss / cfg.accum_steps).backward()
            if (step + 1) % cfg.accum_steps == 0 or step == len(batches) - 1:
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
            total += float(loss.detach()) * len(index)
        vit.eval()
        with torch.no_grad():
            prob = vit(z_val).clamp(1e-6, 1 - 1e-6)
            val_loss = float(bce(prob, y_val))
        val_auc = auroc(val_y, prob.cpu().numpy())
        val_auc = float("nan") if val_auc is None else val_auc
        if val_loss < best - 1e-9:
            best, bad = val_loss, 0
            best_state = copy.deepcopy(vit.state_dict())
        else:
            bad += 1
        history.append({"epoch": epoch + 1, "train_loss": total / len(z_train), "val_loss": val_loss,
                        "val_auroc": val_auc})
        bar.set_postfix(val=f"{val_loss:.4f}", auroc=f"{val_auc:.3f}")
        stop = bad >= cfg.patience
        if state_path:
            _save_progress(state_path, vit, opt, gen, epoch + 1, best, best_state, bad, history,
                           stop or epoch + 1 == cfg.vit_epochs)
        if stop:
            break
    bar.close()
    vit.load_state_dict(best_state)
    return vit.eval(), history


@torch.no_grad()
def raw_errors(vae: nn.Module, x: np.ndarray, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Per-image reconstruction error and KL (posterior mean, no sampling)."""
    vae.eval()
    feats = torch.from_numpy(x).float().to(device)
    mu, log_var = vae.encoder(feats)
    recon = recon_error_per_sample(vae.decoder(mu), feats)
    return recon.cpu().numpy(), kl_per_sample(mu, log_var).cpu().numpy()


def calibrate(vae: nn.Module, normal_x: np.ndarray, source: str, device: str = "cpu") -> Calibration:
    """Reconstruction/KL statistics over normal training images."""
    recon, kl = raw_errors(vae, normal_x, device)
    return Calibration(recon_mean=float(recon.mean()), recon_std=float(max(recon.std(ddof=1), 1e-8)),
                       kl_mean=float(kl.mean()), kl_std=float(max(kl.std(ddof=1), 1e-8)),
                       source=source, n_images=int(len(normal_x)))


# ---- whole run ------------------------------------------------------------------------------------
def fit(train: FeatureSet, val: FeatureSet, extractor: VGG16Features, cfg: TrainConfig,
        work_dir: Path | None = None, resume: bool = False, progress: bool = True
        ) -> tuple[AnomalyDetector, dict[str, Any]]:
    """Run both phases, calibrate and pick the threshold; returns the detector and a training summary."""
    standardise = cfg.standardise_features
    if standardise is None:
        standardise = extractor.kind != EXTRACTOR_IMAGENET
    feature_norm = FeatureStandardizer.fit(torch.from_numpy(train.features[train.is_normal])) if standardise else None

    def vae_inputs(x: np.ndarray) -> np.ndarray:
        if feature_norm is None:
            return x
        with torch.no_grad():
            return feature_norm(torch.from_numpy(x)).numpy()

    train_x, val_x = vae_inputs(train.features), vae_inputs(val.features)
    normal_train = train_x[train.is_normal]
    normal_val = val_x[val.is_normal]
    if len(normal_train) < 2 or len(normal_val) < 1:
        raise ValueError("Training needs at least two normal training images and one normal validation image.")
    vae, vae_history = train_vae(normal_train, normal_val, cfg, work_dir, resume, progress=progress)
    summary: dict[str, Any] = {"vae_history": vae_history, "n_normal_train": int(len(normal_train))}
    kept = normal_train
    if cfg.rca_percentile is not None:
        recon, _ = raw_errors(vae, normal_train, cfg.device)
        limit = float(np.percentile(recon, cfg.rca_percentile))
        kept = normal_train[recon <= limit]
        summary["rca"] = {"percentile": cfg.rca_percentile, "recon_limit": limit,
                          "dropped": int(len(normal_train) - len(kept)), "kept": int(len(kept))}
        vae, vae_history = train_vae(kept, normal_val, cfg, work_dir, resume, tag="phase1_vae_rca", progress=progress)
        summary["vae_history_rca"] = vae_history
    for param in vae.parameters():
        param.requires_grad_(False)
    vit, vit_history = train_vit(vae, train_x, train.targets, val_x, val.targets, cfg, work_dir,
                                 resume, progress=progress)
    summary["vit_history"] = vit_history
    calibration = calibrate(vae, kept, f"{len(kept)} normal training images", cfg.device)
    detector = AnomalyDetector(extractor, vae, vit, calibration, 0.5, device=cfg.device, feature_norm=feature_norm)
    summary["feature_standardisation"] = feature_norm is not None
    with torch.inference_mode():
        val_scores = detector.components_from_features(torch.from_numpy(val.features))["fused"].cpu().numpy()
    if len(np.unique(val.targets)) == 2:
        detector.threshold = youden_threshold(val.targets, val_scores)
        summary["val_auroc_full"] = auroc(val.targets, val_scores)
        summary["threshold_method"] = "Youden J on validation"
    else:
        detector.threshold = float(np.percentile(val_scores, 95))
        summary["threshold_method"] = "95th percentile of validation normals (no anomalous validation images)"
    detector.provenance["threshold"] = detector.threshold
    summary["threshold"] = detector.threshold
    summary["calibration"] = calibration.to_dict()
    return detector, summary


def _short_history(history: list[dict]) -> dict[str, Any]:
    if not history:
        return {}
    best = min(history, key=lambda h: h["val_loss"])
    return {"epochs_run": len(history), "best_epoch": best["epoch"],
            "best": {k: (round(v, 6) if isinstance(v, float) else v) for k, v in best.items()}}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.train_anomaly", description=__doc__.split("\n")[0],
                                     epilog="Phase 2 uses normal/anomalous labels; phase 1 sees normals only.")
    parser.add_argument("--demo", action="store_true",
                        help="rebuild the shipped demo weights, model card and evaluation from phantoms")
    add_data_arguments(parser)
    parser.add_argument("--extractor", default=None,
                        help="phantom: VGG16 fine-tuned on synthetic phantoms (models/" + PHANTOM_EXTRACTOR_FILE
                             + "; default with --demo); demo: seeded random VGG16 (default otherwise); a path to a "
                             "phantom-extractor .pt file; imagenet: torchvision IMAGENET1K_V1")
    parser.add_argument("--out", type=Path, default=None, help="checkpoint path (default: artifacts/anomaly.pt)")
    parser.add_argument("--work-dir", type=Path, default=Path("artifacts") / "anomaly_train",
                        help="resumable per-epoch states")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR, help="feature cache")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run from --work-dir")
    parser.add_argument("--eval-dir", type=Path, default=None, help="also evaluate on the test split, write here")
    parser.add_argument("--card", type=Path, default=None,
                        help="also write a model card JSON here (needs --eval-dir; --demo: models/anomaly_demo.card.json)")
    defaults = TrainConfig()
    parser.add_argument("--vae-epochs", type=int, default=None,
                        help=f"maximum VAE epochs (default {defaults.vae_epochs}; --demo: {DEMO_EPOCHS[0]})")
    parser.add_argument("--vit-epochs", type=int, default=None,
                        help=f"maximum ViT epochs (default {defaults.vit_epochs}; --demo: {DEMO_EPOCHS[1]})")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--accum-steps", type=int, default=defaults.accum_steps, help="gradient accumulation")
    parser.add_argument("--lr-vae", type=float, default=defaults.lr_vae)
    parser.add_argument("--lr-vit", type=float, default=defaults.lr_vit)
    parser.add_argument("--beta", type=float, default=defaults.beta, help="KL weight")
    parser.add_argument("--patience", type=int, default=defaults.patience, help="early-stopping patience")
    parser.add_argument("--rca-percentile", type=float, default=None,
                        help="robust training: drop training normals above this reconstruction-error percentile "
                             "and retrain the VAE")
    parser.add_argument("--standardise-features", choices=("auto", "on", "off"), default="auto",
                        help="standardise VGG16 vectors with normal-training statistics before the VAE "
                             "(auto: on for the demo extractor, whose random features vary too little)")
    parser.add_argument("--vit-on-means", action="store_true",
                        help="phase 2 on posterior means instead of posterior samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the machine may be shared)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    epochs = DEMO_EPOCHS if args.demo else (defaults.vae_epochs, defaults.vit_epochs)
    args.vae_epochs = args.vae_epochs or epochs[0]
    args.vit_epochs = args.vit_epochs or epochs[1]
    if args.demo:
        args.data, args.extractor = "phantoms", args.extractor or DEMO_EXTRACTOR
        args.out = args.out or DEMO_CHECKPOINT
        args.eval_dir = args.eval_dir or DEMO_EVAL_DIR
        args.card = args.card or DEMO_CARD
    args.extractor = args.extractor or "demo"
    out = args.out or Path("artifacts") / "anomaly.pt"
    torch.set_num_threads(args.threads)
    cfg = TrainConfig(vae_epochs=args.vae_epochs, vit_epochs=args.vit_epochs, batch_size=args.batch_size,
                      accum_steps=args.accum_steps, lr_vae=args.lr_vae, lr_vit=args.lr_vit, beta=args.beta,
                      patience=args.patience, rca_percentile=args.rca_percentile, seed=args.seed, device=args.device,
                      standardise_features={"auto": None, "on": True, "off": False}[args.standardise_features],
                      vit_on_posterior_samples=not args.vit_on_means)
    progress = not args.no_progress
    started = time.time()
    extractor = build_extractor(args.extractor).to(cfg.device)
    train_s, val_s, test_s = resolve_splits(args)
    train = extract_features(train_s, extractor, args.cache_dir, desc="train features", progress=progress)
    val = extract_features(val_s, extractor, args.cache_dir, desc="val features", progress=progress)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    detector, summary = fit(train, val, extractor, cfg, args.work_dir, args.resume, progress)
    meta: dict[str, Any] = {
        "trained_on": describe_data(args),
        "data": {"train": len(train_s), "val": len(val_s), "test": len(test_s),
                 "train_normal": int(train.is_normal.sum()), "val_normal": int(val.is_normal.sum())},
        "train_config": asdict(cfg),
        "phase1_vae": _short_history(summary.get("vae_history_rca") or summary["vae_history"]),
        "phase2_vit": _short_history(summary["vit_history"]),
        "rca": summary.get("rca"),
        "threshold_method": summary["threshold_method"],
        "feature_standardisation": summary["feature_standardisation"],
        "metrics": {"val": {"auroc_full": summary.get("val_auroc_full")}},
        "phase2_uses_labels": True,
        "command": "python -m training.train_anomaly " + " ".join(
            shlex.quote(a) for a in (argv or sys.argv[1:]) if a != "--resume"),
        "train_seconds": round(time.time() - started, 1),
    }
    if extractor.kind != EXTRACTOR_IMAGENET:
        meta["disclaimer"] = DEMO_DISCLAIMERS["phantom" if extractor.kind == EXTRACTOR_PHANTOM else "demo"]
        meta["extractor"] = {"label": EXTRACTOR_LABELS.get(extractor.kind, extractor.kind),
                             "file": Path(getattr(extractor, "weights_file", "") or "").name or None}
    save_detector(out, detector, meta, config=DEFAULT_CONFIG)
    print(f"checkpoint: {out}  threshold {detector.threshold:.4f}  val AUROC {summary.get('val_auroc_full')}")
    if args.eval_dir is not None:
        test = extract_features(test_s, extractor, args.cache_dir, desc="test features", progress=progress)
        report = evaluate(detector, test, args.eval_dir, timing_samples=test_s[:8], title=describe_data(args))
        meta["metrics"]["test"] = report["headline"]
        save_detector(out, detector, meta, config=DEFAULT_CONFIG)
        print(json.dumps(report["headline"], indent=2))
        if args.card is not None:
            seed = DEMO_VGG_SEED if extractor.kind != EXTRACTOR_IMAGENET else None
            write_card(args.card, out, detector, meta, report, extractor_seed=seed)
            print(f"model card: {args.card}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
