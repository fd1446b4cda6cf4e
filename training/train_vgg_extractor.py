"""Train the demo-tier VGG16 extractor on labelled synthetic phantoms ("domain pretraining").

ImageNet VGG16 weights are not available offline. Instead of random features, this script starts from
the seeded VGG16 of the demo tier (`build_demo_extractor`, seed 1606), keeps conv blocks 1–4 frozen at
those seeded weights, and trains conv block 5 (conv5_1–conv5_3) with a small multi-label head
(VGG16 trunk → max-pool → AdaptiveAvgPool 1×1 → BatchNorm → Linear 512→5) on the findings of synthetic phantoms
(consolidation, nodule, effusion, pneumothorax, cardiomegaly), with the detector's exact preprocessing
(`xray_to_vgg_input`). This is a SUPERVISED pretraining of the extractor, analogous to ImageNet
pretraining: the extractor has seen labelled phantoms. Its phantom seeds (dataset seeds 1000/1001 by
default) are disjoint from the anomaly detector's training, validation and test phantoms (dataset seeds
1/2/3); the script refuses overlapping seeds.

The frozen trunk's activations (block-4 output after max-pool, 512×14×14 per image) are computed once
and cached as .npy, so each optimisation step runs only block 5. Only the trained block-5 weights are
shipped (fp16, ~14 MB): the loader rebuilds blocks 1–4 from the seed and loads block 5. The trained
weights are rounded to fp16 *before* anything downstream uses them, so the fp32 extractor used for
training the VAE/ViT, for the recorded hash and at inference is exactly the fp16 file upcast.

Subcommands:
    train        cache trunk activations of the extractor's phantoms, train block 5, write the weights file
    cache-splits cache trunk activations (and thumbnails) of the anomaly detector's train/val/test phantoms
    prime-cache  from those, write the anomaly feature cache (training.anomaly_features) for the trained
                 extractor, so `training.train_anomaly --extractor phantom` skips full VGG16 passes
    card         (re)write the extractor's model card JSON from the facts stored in its weights file

Examples:
    python -m training.train_vgg_extractor train --n-train 500 --n-val 100 --epochs 10
    python -m training.train_vgg_extractor cache-splits
    python -m training.train_vgg_extractor prime-cache
    python -m training.train_anomaly --demo
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from medsight.config import SHIPPED_MODELS_DIR
from medsight.models.anomaly import xray_to_vgg_input
from medsight.models.anomaly.torch_model import (
    DEMO_VGG_SEED,
    PHANTOM_EXTRACTOR_FILE,
    PHANTOM_TRAINABLE_FROM,
    VGG16Features,
    build_demo_extractor,
    load_phantom_extractor,
    save_phantom_extractor,
)
from training.anomaly_features import DEFAULT_CACHE_DIR, THUMBNAIL_SIZE, _thumbnail, fingerprint
from training.datasets import Sample, load_image, phantom_samples
from training.metrics import auroc

FINDING_NAMES = ("consolidation", "nodule", "effusion", "pneumothorax", "cardiomegaly")
DEFAULT_WORK_DIR = Path("artifacts") / "vgg_extractor"
DEFAULT_OUT = SHIPPED_MODELS_DIR / PHANTOM_EXTRACTOR_FILE
ANOMALY_DATASET_SEEDS = (1, 2, 3)  # training.train_anomaly defaults: train / validation / test


# ---- trunk activation cache ------------------------------------------------------------------------
def frozen_trunk(base: VGG16Features | None = None) -> nn.Sequential:
    """Blocks 1–4 of the seeded VGG16 (through pool4): the part that stays frozen."""
    base = base or build_demo_extractor()
    return base.features[:PHANTOM_TRAINABLE_FROM]


def cache_trunk(samples: Sequence[Sample], path: Path, trunk: nn.Module, batch_size: int = 8,
                desc: str = "trunk", progress: bool = True) -> dict[str, np.ndarray]:
    """Trunk activations (N, 512, 14, 14) float32, finding targets and thumbnails, cached and resumable.

    Partial progress is saved every few batches to `<path>.partial.npz`; a finished cache is `<path>.npz`.
    """
    samples = list(samples)
    final = path.with_suffix(".npz")
    ids = np.array([s.id for s in samples])
    if final.is_file():
        data = dict(np.load(final))
        if list(data["ids"]) == list(ids):
            return data
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    n = len(samples)
    acts = np.zeros((n, 512, 14, 14), np.float32)
    thumbs = np.zeros((n, THUMBNAIL_SIZE, THUMBNAIL_SIZE), np.uint8)
    start = 0
    if partial.is_file():
        saved = np.load(partial)
        if list(saved["ids"]) == list(ids):
            start = int(saved["done"])
            acts[:start], thumbs[:start] = saved["acts"][:start], saved["thumbs"][:start]
    targets = np.array([[f in (s.phantom_findings or ()) for f in FINDING_NAMES] for s in samples], np.float32)
    bar = tqdm(total=n, initial=start, desc=desc, unit="img", disable=not progress)
    with torch.inference_mode():
        for begin in range(start, n, batch_size):
            chunk = samples[begin:begin + batch_size]
            images = [load_image(s) for s in chunk]
            x = torch.cat([xray_to_vgg_input(img) for img in images])
            acts[begin:begin + len(chunk)] = trunk(x).numpy()
            thumbs[begin:begin + len(chunk)] = np.stack([_thumbnail(img) for img in images])
            bar.update(len(chunk))
            done = begin + len(chunk)
            if (done // batch_size) % 10 == 0 and done < n:
                np.savez(partial, acts=acts[:done], thumbs=thumbs[:done], done=done, ids=ids)
    bar.close()
    np.savez(final, acts=acts, thumbs=thumbs, targets=targets, ids=ids)
    if partial.is_file():
        partial.unlink()
    return {"acts": acts, "thumbs": thumbs, "targets": targets, "ids": ids}


def check_disjoint(extractor_samples: Sequence[Sample], anomaly_samples: Sequence[Sample]) -> None:
    """Refuse extractor phantoms that also occur in the anomaly detector's splits.

    Raises:
        SystemExit: when any phantom seed is shared.
    """
    shared = {s.phantom_seed for s in extractor_samples} & {s.phantom_seed for s in anomaly_samples}
    if shared:
        raise SystemExit(f"{len(shared)} extractor phantoms also occur in the anomaly detector's train/val/test "
                         "splits; choose another --phantom-seed.")


def anomaly_splits(n: tuple[int, int, int] = (600, 200, 200), size: int = 512,
                   seeds: Sequence[int] = ANOMALY_DATASET_SEEDS) -> dict[str, list[Sample]]:
    """The anomaly detector's default phantom splits (as `training.train_anomaly` builds them)."""
    return {name: phantom_samples(k, seed=seed, size=size)
            for name, k, seed in zip(("train", "val", "test"), n, seeds)}


# ---- model -----------------------------------------------------------------------------------------
class Block5WithHead(nn.Module):
    """Trainable part: conv block 5 (+ pool5) of VGG16 → AdaptiveAvgPool 1×1 → BatchNorm → Linear 512→k logits."""

    def __init__(self, base: VGG16Features, n_out: int = len(FINDING_NAMES)) -> None:
        super().__init__()
        self.block5 = copy.deepcopy(base.features[PHANTOM_TRAINABLE_FROM:])
        for param in self.block5.parameters():
            param.requires_grad_(True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        # The pooled vectors vary little between images (std ≈ 0.006 around ≈ 0.08 with the seeded trunk);
        # a plain Linear would need huge weights to read them, so the head standardises them first.
        self.head = nn.Sequential(nn.BatchNorm1d(512), nn.Linear(512, n_out))

    def embed(self, acts: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.block5(acts)), 1)

    def forward(self, acts: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(acts))


def _auroc_per_finding(targets: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    columns = {name: (targets[:, j], logits[:, j]) for j, name in enumerate(FINDING_NAMES)}
    columns["any finding (max logit)"] = (targets.max(axis=1), logits.max(axis=1))
    values = {name: auroc(y, s) for name, (y, s) in columns.items()}
    return {name: round(v, 4) for name, v in values.items() if v is not None}


def train_block5(train: dict[str, np.ndarray], val: dict[str, np.ndarray], epochs: int, batch_size: int,
                 lr: float, weight_decay: float, seed: int, work_dir: Path, resume: bool,
                 progress: bool = True) -> tuple[Block5WithHead, list[dict]]:
    """Fine-tune block 5 + head with BCE on the five findings; keeps the epoch with the best mean val AUROC."""
    torch.manual_seed(seed)
    model = Block5WithHead(build_demo_extractor())
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    x_train = torch.from_numpy(train["acts"])
    y_train = torch.from_numpy(train["targets"])
    x_val = torch.from_numpy(val["acts"])
    y_val = val["targets"]
    pos = y_train.mean(0).clamp(0.02, 0.98)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=(1 - pos) / pos)  # findings are rare per label
    gen = torch.Generator().manual_seed(seed)
    state_path = work_dir / "block5_state.pt"
    start, best, best_state, history = 0, float("inf"), None, []
    if resume and state_path.is_file():
        saved = torch.load(state_path, map_location="cpu", weights_only=False)  # our own work file
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        gen.set_state(saved["gen"])
        start, best, best_state, history = saved["epoch"], saved["best"], saved["best_state"], saved["history"]
    for epoch in range(start, epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=gen)
        total, t0 = 0.0, time.time()
        bar = tqdm(range(0, len(order), batch_size), desc=f"epoch {epoch + 1}/{epochs}", unit="step",
                   disable=not progress)
        for begin in bar:
            index = order[begin:begin + batch_size]
            loss = loss_fn(model(x_train[index]), y_train[index])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(index)
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        bar.close()
        model.eval()
        with torch.no_grad():
            logits = torch.cat([model(x_val[i:i + 32]) for i in range(0, len(x_val), 32)])
            val_loss = float(loss_fn(logits, torch.from_numpy(y_val)))
        aucs = _auroc_per_finding(y_val, logits.numpy())
        row = {"epoch": epoch + 1, "train_loss": round(total / len(x_train), 5), "val_loss": round(val_loss, 5),
               "val_auroc": aucs, "seconds": round(time.time() - t0, 1)}
        # Selection by the findings' mean validation AUROC: the BCE of a freshly trained BatchNorm head is
        # dominated by calibration, not by how well the pooled vector separates the findings.
        score = -float(np.mean([aucs[name] for name in FINDING_NAMES if name in aucs]))
        row["val_mean_auroc"] = round(-score, 4)
        if score < best:
            best, best_state = score, copy.deepcopy(model.state_dict())
        history.append(row)
        print(json.dumps(row), flush=True)
        tmp = state_path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
                    "epoch": epoch + 1, "best": best, "best_state": best_state, "history": history}, tmp)
        tmp.replace(state_path)
    model.load_state_dict(best_state)
    return model.eval(), history


# ---- commands --------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    train_s = phantom_samples(args.n_train, seed=args.phantom_seed, size=args.phantom_size)
    val_s = phantom_samples(args.n_val, seed=args.phantom_seed + 1, size=args.phantom_size)
    check_disjoint(train_s + val_s, [s for split in anomaly_splits(size=args.phantom_size).values() for s in split])
    trunk = frozen_trunk()
    train = cache_trunk(train_s, work / f"trunk_seed{args.phantom_seed}_n{args.n_train}", trunk, desc="train trunk",
                        progress=not args.no_progress)
    val = cache_trunk(val_s, work / f"trunk_seed{args.phantom_seed + 1}_n{args.n_val}", trunk, desc="val trunk",
                      progress=not args.no_progress)
    started = time.time()
    model, history = train_block5(train, val, args.epochs, args.batch_size, args.lr, args.weight_decay, args.seed,
                                  work, args.resume, progress=not args.no_progress)
    best = max(history, key=lambda h: h["val_mean_auroc"])
    meta = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "base": f"seeded VGG16 (demo extractor, seed {DEMO_VGG_SEED}); blocks 1-4 frozen at the seeded weights",
        "trained": "conv block 5 (conv5_1-conv5_3) + head AdaptiveAvgPool 1x1 -> BatchNorm1d -> Linear 512->5",
        "objective": "multi-label BCE on phantom findings " + ", ".join(FINDING_NAMES) + " (pos_weight balanced)",
        "labels_used": True,
        "data": {"description": f"synthetic phantoms ({args.phantom_size} px), dataset seeds {args.phantom_seed} "
                                f"(train, n={args.n_train}) / {args.phantom_seed + 1} (validation, n={args.n_val}); "
                                "disjoint from the anomaly detector's dataset seeds 1/2/3",
                 "train": args.n_train, "val": args.n_val,
                 "train_normal": int((train["targets"].max(1) == 0).sum())},
        "preprocess": "xray_to_vgg_input (224 Lanczos, 3-channel, ImageNet mean/std)",
        "optimiser": {"name": "AdamW", "lr": args.lr, "weight_decay": args.weight_decay,
                      "batch_size": args.batch_size, "epochs": args.epochs, "seed": args.seed},
        "best_epoch": best["epoch"], "history": history,
        "val_auroc_best_epoch": best["val_auroc"],
        "train_seconds": round(time.time() - started, 1),
        "command": "python -m training.train_vgg_extractor " + " ".join(a for a in sys.argv[1:] if a != "--resume"),
    }
    extractor = save_phantom_extractor(args.out, model.block5, model.head, meta)
    reloaded = load_phantom_extractor(args.out)
    assert reloaded.sha256 == extractor.sha256
    print(f"model card: {write_extractor_card(args.out)}")
    print(f"extractor: {args.out}  sha256 {extractor.sha256[:16]}…  best epoch {best['epoch']} "
          f"val AUROC {best['val_auroc']}")
    return 0


def write_extractor_card(weights: Path) -> Path:
    """Model card JSON next to the extractor weights file (`<name>.card.json`), from the facts stored in it."""
    from medsight.registry import sha256_of

    raw = torch.load(weights, map_location="cpu", weights_only=True)
    meta = dict(raw.get("meta") or {})
    card = {
        "name": "MedSight VGG16 extractor — demo, fine-tuned on synthetic phantoms",
        "tier": "demo",
        "label": raw.get("label"),
        "disclaimer": "demo — VGG16 fine-tuned on synthetic phantoms, not ImageNet features; its features say "
                      "nothing about real radiographs; not for clinical use",
        "file": weights.name,
        "file_sha256": sha256_of(weights),
        "extractor_sha256": raw.get("sha256"),
        "extractor_sha256_note": "SHA-256 over the full VGG16 `features` state dict in float32 (seeded blocks 1-4 + "
                                 "the stored block 5 upcast from fp16); anomaly checkpoints record it",
        "storage": "block 5 (conv5_1-conv5_3, 7,079,424 parameters) in fp16; blocks 1-4 rebuilt from seed "
                   f"{raw.get('base_seed')}. The weights were rounded to fp16 before any downstream use, so the fp32 "
                   "extractor that trained and runs the detector is exactly this file upcast.",
        "labels_used": "YES — supervised multi-label training on phantom findings (domain pretraining, analogous "
                       "to ImageNet pretraining); the anomaly detector built on it is therefore not purely "
                       "unsupervised",
        **{k: meta.get(k) for k in ("created", "base", "trained", "objective", "data", "preprocess", "optimiser",
                                    "best_epoch", "val_auroc_best_epoch", "train_seconds", "command")},
        "selection": "epoch with the best mean per-finding validation AUROC",
        "history": meta.get("history"),
    }
    path = weights.with_name(weights.name.replace(".pt", ".card.json"))
    path.write_text(json.dumps(card, indent=2))
    return path


def cmd_cache_splits(args: argparse.Namespace) -> int:
    trunk = frozen_trunk()
    for name, samples in anomaly_splits((args.n_train, args.n_val, args.n_test), args.phantom_size).items():
        cache_trunk(samples, args.work_dir / f"anomaly_{name}_{fingerprint(samples, build_demo_extractor())[:10]}",
                    trunk, desc=f"{name} trunk", progress=not args.no_progress)
    return 0


def cmd_prime_cache(args: argparse.Namespace) -> int:
    extractor = load_phantom_extractor(args.out)
    seeded = build_demo_extractor()
    tail = extractor.features[PHANTOM_TRAINABLE_FROM:]
    for name, samples in anomaly_splits((args.n_train, args.n_val, args.n_test), args.phantom_size).items():
        path = args.work_dir / f"anomaly_{name}_{fingerprint(samples, seeded)[:10]}.npz"
        if not path.is_file():
            raise SystemExit(f"{path} missing; run the cache-splits subcommand first.")
        data = np.load(path)
        with torch.inference_mode():
            acts = torch.from_numpy(data["acts"])
            feats = torch.cat([torch.flatten(extractor.avgpool(tail(acts[i:i + 16])), 1)
                               for i in range(0, len(acts), 16)]).numpy()
        key = fingerprint(samples, extractor)
        args.cache_dir.mkdir(parents=True, exist_ok=True)
        np.save(args.cache_dir / f"{key}.features.npy", feats.astype(np.float32))
        np.save(args.cache_dir / f"{key}.thumbs.npy", data["thumbs"])
        (args.cache_dir / f"{key}.json").write_text(json.dumps({
            "n": len(samples), "extractor_sha256": extractor.sha256,
            "preprocess": "xray_to_vgg_input/v1 (from cached frozen-trunk activations)",
            "ids": [s.id for s in samples], "labels": [s.label for s in samples]}))
        print(f"{name}: {feats.shape} features written to {args.cache_dir}/{key}.*")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.train_vgg_extractor",
                                     description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="The extractor is trained WITH finding labels of synthetic phantoms "
                                            "(demo tier, not ImageNet features).")
    parser.add_argument("command", choices=("train", "cache-splits", "prime-cache", "card"), nargs="?", default="train")
    parser.add_argument("--n-train", type=int, default=None,
                        help="train: extractor phantoms (default 500); splits: anomaly training phantoms (600)")
    parser.add_argument("--n-val", type=int, default=None, help="validation phantoms (train 100; splits 200)")
    parser.add_argument("--n-test", type=int, default=200, help="splits: anomaly test phantoms")
    parser.add_argument("--phantom-seed", type=int, default=1000,
                        help="dataset seed of the extractor's training phantoms (validation: +1)")
    parser.add_argument("--phantom-size", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="extractor weights file")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR, help="activation caches, resumable state")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR, help="anomaly feature cache (prime-cache)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted training run")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1 is fastest on a shared machine)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.command == "card":
        print(write_extractor_card(args.out))
        return 0
    if args.command == "train":
        args.n_train, args.n_val = args.n_train or 500, args.n_val or 100
        return cmd_train(args)
    args.n_train, args.n_val = args.n_train or 600, args.n_val or 200
    return cmd_cache_splits(args) if args.command == "cache-splits" else cmd_prime_cache(args)


if __name__ == "__main__":
    raise SystemExit(main())
