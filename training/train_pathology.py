"""Train the demo-tier pathology classifier on synthetic phantoms.

A reduced DenseNet (torchvision's ``DenseNet`` class, see ``medsight.models.pathology.torch_model.DEMO_ARCH``)
learns the five findings the phantoms carry (Consolidation, Nodule, Effusion, Pneumothorax, Cardiomegaly),
with torchxrayvision's preprocessing. Three disjoint phantom sets are generated from three dataset seeds:
train, validation (model selection and per-label operating thresholds, Youden's J) and test (the AUROC
figures written to the model card). Generated sets are cached as ``.npy`` arrays; an interrupted run
continues from its last finished epoch with ``--resume``.

Example:
    python -m training.train_pathology                      # writes models/pathology_demo.pt + .card.json
    python -m training.train_pathology --epochs 2 --n-train 200 --out /tmp/p.pt --card /tmp/p.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from medsight.config import PROJECT_ROOT, get_settings
from medsight.models.pathology.labels import DEMO_LABELS, PHANTOM_FINDING_TO_LABEL
from medsight.models.pathology.torch_model import DEMO_ARCH, XRayPreprocess, build_demo_densenet
from training.metrics import auroc, auroc_with_ci, bootstrap_note, confusion_at, youden_threshold

CHECKPOINT_FORMAT = "medsight.pathology.demo/1"
# Dataset seeds of the three splits; the evaluation CLI and the tests use other seeds.
SPLIT_SEEDS = {"train": 1101, "val": 2202, "test": 3303}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.train_pathology", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "models" / "pathology_demo.pt", help="checkpoint to write")
    parser.add_argument("--card", type=Path, default=None, help="model card JSON; when omitted: <out stem>.card.json")
    parser.add_argument("--cache-dir", type=Path, default=None, help="phantom cache; when omitted: <MEDSIGHT_HOME>/cache/pathology")
    parser.add_argument("--n-train", type=int, default=1800)
    parser.add_argument("--n-val", type=int, default=300)
    parser.add_argument("--n-test", type=int, default=400)
    parser.add_argument("--phantom-size", type=int, default=256, help="size the phantoms are generated at")
    parser.add_argument("--input-size", type=int, default=160, help="network input side in pixels")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0, help="seed of initialisation, shuffling and augmentation")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: on a shared CPU, OpenMP threads spin-wait on each other)")
    parser.add_argument("--resume", action="store_true", help="continue from the last finished epoch of an interrupted run")
    parser.add_argument("--evaluate", action="store_true",
                        help="no training: print the test figures of the existing --out checkpoint at its stored "
                             "thresholds, and the thresholds the validation split gives now (nothing is written)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser.parse_args(argv)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def phantom_split(split: str, n: int, phantom_size: int, input_size: int, cache_dir: Path, progress: bool) -> dict[str, np.ndarray]:
    """Generate (or read from the cache) one split: preprocessed images, labels, phantom seeds.

    Returns:
        dict with "x" float16 (N, S, S) in torchxrayvision's [-1024, 1024] scale, "y" uint8 (N, n_labels),
        "seeds" int64 (N,).
    """
    from medsight.synthetic import FINDINGS, generate_phantom

    seed = SPLIT_SEEDS[split]
    stem = cache_dir / f"{split}_seed{seed}_n{n}_p{phantom_size}_in{input_size}"
    paths = {k: stem.with_name(stem.name + f"_{k}.npy") for k in ("x", "y", "seeds")}
    if all(p.is_file() for p in paths.values()):
        return {k: np.load(p) for k, p in paths.items()}
    cache_dir.mkdir(parents=True, exist_ok=True)
    preprocess = XRayPreprocess(input_size)
    order = [f for f in FINDINGS if f in PHANTOM_FINDING_TO_LABEL]
    if tuple(PHANTOM_FINDING_TO_LABEL[f] for f in order) != DEMO_LABELS:
        raise RuntimeError("phantom findings and demo labels are out of step")
    # Same recipe as generate_dataset (balanced primary findings, 50 % normal) but one phantom at a time so
    # the images can be reduced to the input size at once instead of holding N full phantoms.
    rng = np.random.default_rng([seed, 99])
    is_normal = np.zeros(n, bool)
    is_normal[: int(round(n * 0.5))] = True
    rng.shuffle(is_normal)
    xs = np.zeros((n, input_size, input_size), np.float16)
    ys = np.zeros((n, len(DEMO_LABELS)), np.uint8)
    seeds = np.zeros(n, np.int64)
    j = int(rng.integers(len(order)))
    for i in tqdm(range(n), desc=f"phantoms {split}", disable=not progress):
        child = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
        chosen: tuple[str, ...] = ()
        if not is_normal[i]:
            chosen = (order[j % len(order)],)
            j += 1
            if rng.random() < 0.25:
                others = [f for f in order if f != chosen[0]]
                chosen += (others[int(rng.integers(len(others)))],)
        phantom = generate_phantom(child, size=phantom_size, findings=chosen)
        xs[i] = preprocess.array(phantom.image)[0]
        ys[i] = [f in phantom.labels for f in order]
        seeds[i] = child
    data = {"x": xs, "y": ys, "seeds": seeds}
    for key, path in paths.items():
        np.save(path, data[key])
    return data


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Small random affine (±5°, ±7 % scale, ±4 % shift) and exposure jitter, no flips (anatomy is sided)."""
    b = x.shape[0]
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(b, generator=generator)  # noqa: E731
    angle = torch.deg2rad(u(-5.0, 5.0))
    scale = u(0.93, 1.07)
    tx, ty = u(-0.04, 0.04), u(-0.04, 0.04)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = torch.cos(angle) / scale
    theta[:, 0, 1] = -torch.sin(angle) / scale
    theta[:, 1, 0] = torch.sin(angle) / scale
    theta[:, 1, 1] = torch.cos(angle) / scale
    theta[:, 0, 2], theta[:, 1, 2] = tx, ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    gain = u(0.9, 1.1)[:, None, None, None]
    offset = u(-60.0, 60.0)[:, None, None, None]
    return (x * gain + offset).clamp(-1024.0, 1024.0)


@torch.no_grad()
def predict_logits(net: torch.nn.Module, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    net.eval()
    out = []
    for start in range(0, len(x), batch_size):
        batch = torch.from_numpy(x[start:start + batch_size].astype(np.float32))[:, None]
        out.append(net.logits(batch).numpy())
    return np.concatenate(out)


def per_label_auroc(y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """AUROC of each demo label (scores may be logits or probabilities: AUROC depends only on their order)."""
    return {label: auroc(y[:, k], scores[:, k]) for k, label in enumerate(DEMO_LABELS)}


def youden_thresholds(y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Per-label probability threshold maximising sensitivity + specificity − 1 on the validation split."""
    return {label: youden_threshold(y[:, k], probs[:, k]) for k, label in enumerate(DEMO_LABELS)}


def operating_point_metrics(y: np.ndarray, probs: np.ndarray, thresholds: dict[str, float]) -> dict[str, dict[str, float]]:
    """Sensitivity and specificity of each label at its operating threshold."""
    out = {}
    for k, label in enumerate(DEMO_LABELS):
        at = confusion_at(y[:, k], probs[:, k], thresholds[label])
        out[label] = {"sensitivity": at["sensitivity"], "specificity": at["specificity"],
                      "n_positive": at["tp"] + at["fn"], "n_negative": at["tn"] + at["fp"]}
    return out


def bootstrap_auroc_ci(y: np.ndarray, scores: np.ndarray) -> dict[str, list[float]]:
    """95 % confidence interval of each label's AUROC (training.metrics.auroc_with_ci, same seed per label)."""
    return {label: auroc_with_ci(y[:, k], scores[:, k]).rounded()["ci95"] for k, label in enumerate(DEMO_LABELS)}


def held_out_metrics(net: torch.nn.Module, data: dict[str, dict[str, np.ndarray]],
                     thresholds: dict[str, float]) -> dict[str, Any]:
    """Figures of the model card's "metrics" on the test split (operating points at the given thresholds)."""
    test_logits = predict_logits(net, data["test"]["x"])
    test_probs = 1.0 / (1.0 + np.exp(-test_logits))
    test_auc = per_label_auroc(data["test"]["y"], test_logits)
    return {
        "test_auroc": {k: round(v, 4) for k, v in test_auc.items()},
        "test_auroc_95ci": bootstrap_auroc_ci(data["test"]["y"], test_logits),
        "test_auroc_bootstrap": bootstrap_note(),
        "test_mean_auroc": round(float(np.mean(list(test_auc.values()))), 4),
        "test_operating_point": operating_point_metrics(data["test"]["y"], test_probs, thresholds),
    }


def validation_thresholds(net: torch.nn.Module, val: dict[str, np.ndarray]) -> dict[str, float]:
    """Per-label Youden thresholds of the network's probabilities on the validation split."""
    return youden_thresholds(val["y"], 1.0 / (1.0 + np.exp(-predict_logits(net, val["x"]))))


def config_fingerprint(args: argparse.Namespace) -> str:
    keys = ("n_train", "n_val", "phantom_size", "input_size", "epochs", "batch_size", "lr", "weight_decay", "seed")
    blob = json.dumps({k: getattr(args, k) for k in keys} | {"arch": DEMO_ARCH}, sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def train(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(max(1, args.threads))
    seed_everything(args.seed)
    progress = not args.no_progress
    settings = get_settings()
    cache_dir = args.cache_dir or settings.home / "cache" / "pathology"
    card_path = args.card or args.out.with_name(args.out.stem + ".card.json")
    work_dir = cache_dir / f"run_{config_fingerprint(args)}"
    work_dir.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    data = {split: phantom_split(split, n, args.phantom_size, args.input_size, cache_dir, progress)
            for split, n in (("train", args.n_train), ("val", args.n_val), ("test", args.n_test))}
    overlap = set(data["train"]["seeds"]) & (set(data["val"]["seeds"]) | set(data["test"]["seeds"]))
    if overlap:
        raise RuntimeError(f"{len(overlap)} phantom seeds are shared between train and val/test")
    data_seconds = time.perf_counter() - t0

    net = build_demo_densenet(len(DEMO_LABELS))
    n_params = sum(p.numel() for p in net.parameters())
    steps_per_epoch = math.ceil(args.n_train / args.batch_size)
    optimizer = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch, pct_start=0.2)
    y_train = data["train"]["y"].astype(np.float32)
    pos = y_train.sum(0)
    pos_weight = torch.tensor((len(y_train) - pos) / np.maximum(pos, 1.0), dtype=torch.float32)
    generator = torch.Generator().manual_seed(args.seed)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"val_mean_auroc": -1.0}
    start_epoch = 0
    last_path = work_dir / "last.pt"
    if args.resume and last_path.is_file():
        state = torch.load(last_path, map_location="cpu", weights_only=False)
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        history, best, start_epoch = state["history"], state["best"], state["epoch"]
        print(f"resuming after epoch {start_epoch} from {last_path}")

    train_seconds = sum(h["seconds"] for h in history)
    x_train = data["train"]["x"]
    for epoch in range(start_epoch, args.epochs):
        net.train()
        t_epoch = time.perf_counter()
        order = torch.randperm(len(x_train), generator=generator).numpy()
        losses = []
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{args.epochs}", disable=not progress)
        for step in bar:
            idx = np.sort(order[step * args.batch_size:(step + 1) * args.batch_size])
            xb = torch.from_numpy(x_train[idx].astype(np.float32))[:, None]
            yb = torch.from_numpy(y_train[idx])
            xb = augment(xb, generator)
            loss = F.binary_cross_entropy_with_logits(net.logits(xb), yb, pos_weight=pos_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        val_auc = per_label_auroc(data["val"]["y"], predict_logits(net, data["val"]["x"]))
        seconds = time.perf_counter() - t_epoch
        train_seconds += seconds
        record = {"epoch": epoch + 1, "loss": round(float(np.mean(losses)), 4), "val_auroc": {k: round(v, 4) for k, v in val_auc.items()},
                  "val_mean_auroc": round(float(np.mean(list(val_auc.values()))), 4), "seconds": round(seconds, 1)}
        history.append(record)
        print(json.dumps(record), flush=True)
        if record["val_mean_auroc"] > best["val_mean_auroc"]:
            best = {"val_mean_auroc": record["val_mean_auroc"], "epoch": epoch + 1,
                    "state_dict": {k: v.detach().clone() for k, v in net.state_dict().items()}}
        torch.save({"model": net.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "generator": generator.get_state(), "torch_rng": torch.get_rng_state(), "history": history,
                    "best": best, "epoch": epoch + 1}, last_path)

    net.load_state_dict(best["state_dict"])
    thresholds = validation_thresholds(net, data["val"])
    metrics = held_out_metrics(net, data, thresholds) | {"val_auroc_best_epoch": history[best["epoch"] - 1]["val_auroc"]}
    version = f"demo-{dt.date.today().isoformat()}-{config_fingerprint(args)[:8]}"
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "version": version,
        "labels": list(DEMO_LABELS),
        "arch": {k: list(v) if isinstance(v, tuple) else v for k, v in DEMO_ARCH.items()},
        "input_size": args.input_size,
        "thresholds": [thresholds[label] for label in DEMO_LABELS],
        "threshold_method": "Youden's J on the validation split",
        "state_dict": {k: v.float() if v.is_floating_point() else v for k, v in best["state_dict"].items()},
        "metrics": metrics,
        "phantom_dataset_seeds": dict(SPLIT_SEEDS),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, args.out)
    weights_sha = hashlib.sha256(args.out.read_bytes()).hexdigest()
    card = {
        "name": "MedSight demo pathology classifier",
        "training_domain": "synthetic chest phantoms generated by medsight.synthetic",
        "slot": "pathology.classifier",
        "tier": "demo",
        "version": version,
        "weights_file": args.out.name,
        "weights_sha256": weights_sha,
        "weights_bytes": args.out.stat().st_size,
        "intended_use": "Demonstration of the workstation on synthetic phantoms only. Not for clinical use; "
                        "it has never seen a real radiograph.",
        "architecture": {
            "description": "DenseNet-family network, reduced configuration (torchvision.models.DenseNet); "
                           "NOT DenseNet-121 (growth 32, blocks 6-12-24-16, 64 initial features, ~7.0 M parameters).",
            **checkpoint["arch"],
            "parameters": n_params,
            "head": f"linear, {len(DEMO_LABELS)} sigmoid outputs",
        },
        "input": {
            "size": args.input_size,
            "channels": 1,
            "preprocessing": "torchxrayvision: xrv.utils.normalize(image*255, 255) to [-1024, 1024], "
                             f"XRayCenterCrop, XRayResizer({args.input_size})",
        },
        "labels": list(DEMO_LABELS),
        "label_mapping": {finding: label for finding, label in PHANTOM_FINDING_TO_LABEL.items()},
        "thresholds": {"method": checkpoint["threshold_method"], "values": {k: round(v, 5) for k, v in thresholds.items()},
                       "probability_scale": "results report op_norm-calibrated probabilities (threshold -> 0.5), as torchxrayvision does"},
        "training_data": {
            "source": "medsight.synthetic phantoms (procedurally generated PA chest radiographs)",
            "phantom_size": args.phantom_size,
            "splits": {"train": args.n_train, "val": args.n_val, "test": args.n_test},
            "dataset_seeds": dict(SPLIT_SEEDS),
            "normal_fraction": 0.5,
        },
        "training": {
            "epochs": args.epochs, "best_epoch": best["epoch"], "batch_size": args.batch_size, "optimizer": "AdamW",
            "lr": args.lr, "weight_decay": args.weight_decay, "schedule": "one-cycle", "loss": "BCE with per-label pos_weight",
            "augmentation": "affine ±5°, ±7 % scale, ±4 % shift; exposure gain ±10 %, offset ±60; no flips",
            "seed": args.seed, "threads": args.threads, "data_seconds": round(data_seconds, 1),
            "train_seconds": round(train_seconds, 1), "history": history,
        },
        "metrics": metrics,
        "reproduce": "python -m training.train_pathology " + " ".join(
            f"--{k.replace('_', '-')} {getattr(args, k)}" for k in ("n_train", "n_val", "n_test", "phantom_size", "input_size", "epochs", "batch_size", "lr", "seed")),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps({"out": str(args.out), "card": str(card_path), "test_auroc": metrics["test_auroc"],
                      "train_seconds": round(train_seconds, 1)}, indent=2))
    return card


def evaluate_checkpoint(args: argparse.Namespace) -> dict[str, Any]:
    """Test figures of an existing checkpoint at its stored operating thresholds, on the validation and test
    phantoms the training CLI generates, next to the thresholds Youden's J would pick on that validation split now."""
    torch.set_num_threads(max(1, args.threads))
    checkpoint = torch.load(args.out, map_location="cpu", weights_only=False)  # our own checkpoint format
    net = build_demo_densenet(len(DEMO_LABELS))
    net.load_state_dict(checkpoint["state_dict"])
    cache_dir = args.cache_dir or get_settings().home / "cache" / "pathology"
    data = {split: phantom_split(split, n, args.phantom_size, checkpoint["input_size"], cache_dir, not args.no_progress)
            for split, n in (("val", args.n_val), ("test", args.n_test))}
    stored = {label: float(value) for label, value in zip(checkpoint["labels"], checkpoint["thresholds"])}
    recomputed = validation_thresholds(net, data["val"])
    val_auroc = per_label_auroc(data["val"]["y"], predict_logits(net, data["val"]["x"]))
    return {"stored_thresholds": {k: round(v, 5) for k, v in stored.items()},
            "validation_thresholds_now": {k: round(v, 5) for k, v in recomputed.items()},
            "val_auroc": {k: round(v, 4) for k, v in val_auroc.items()},
            "metrics": held_out_metrics(net, data, stored)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.evaluate:
        print(json.dumps(evaluate_checkpoint(args), indent=2))
        return 0
    try:
        train(args)
    except KeyboardInterrupt:
        print("interrupted; run again with --resume to continue from the last finished epoch", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
