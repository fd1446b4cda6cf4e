"""Evaluate an anomaly-detector checkpoint: JSON report and PNG plots.

Report: AUROC with a stratified-bootstrap 95% CI (training.metrics) for the full fused score and each
ablation (reconstruction only, KL only, ViT only, reconstruction + KL, full fusion), per-finding AUROC, sensitivity / specificity /
confusion matrix at the checkpoint's threshold, and time per stage. Plots: ROC curves, score
distributions with the threshold, confusion matrix, and a 2-D projection of the latent means (UMAP when
installed, else PCA) coloured by class.

Usage:
    python -m training.evaluate_anomaly --checkpoint models/anomaly_demo.pt --out models/anomaly_demo_eval
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from sklearn.metrics import roc_curve

from medsight.models.anomaly import (
    EXTRACTOR_IMAGENET,
    AnomalyDetector,
    build_detector,
    load_checkpoint,
    load_demo_extractor,
)
from medsight.models.anomaly.torch_model import count_parameters
from medsight.registry import sha256_of
from training.anomaly_features import DEFAULT_CACHE_DIR, FeatureSet, extract_features
from training.data_args import add_data_arguments, build_extractor, describe_data, resolve_splits
from training.datasets import Sample, load_image
from training.metrics import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, auroc, auroc_with_ci, bootstrap_note, confusion_at

ABLATIONS = ("recon only", "KL only", "ViT only", "recon+KL", "full fusion")


def ablation_scores(parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Score per ablation. Single terms use the raw value (σ-normalisation is monotone: same AUROC)."""
    return {
        "recon only": parts["recon_error"],
        "KL only": parts["kl_divergence"],
        "ViT only": parts["vit_score"],
        "recon+KL": parts["recon"] + parts["kl"],
        "full fusion": parts["fused"],
    }


def stage_timings(detector: AnomalyDetector, samples: Sequence[Sample]) -> dict[str, float]:
    """Median milliseconds per stage, one image at a time (after one warm-up image)."""
    images = [load_image(s) for s in samples]
    if not images:
        return {}
    detector.score(images[0])
    rows = [detector.score(image).timings for image in images]
    return {key: round(float(np.median([r[key] for r in rows])), 2) for key in rows[0]}


def _projection(latents: np.ndarray, method: str = "auto") -> tuple[np.ndarray, str]:
    try:
        if method == "pca":
            raise ImportError("PCA requested")
        import umap

        neighbours = max(2, min(15, len(latents) - 1))
        reducer = umap.UMAP(n_neighbors=neighbours, min_dist=0.1, random_state=0, n_jobs=1)
        return reducer.fit_transform(latents), "UMAP"
    except Exception:  # noqa: BLE001 - UMAP absent or failing: PCA is the documented fallback
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=0).fit_transform(latents), "PCA"


def _plots(out_dir: Path, targets: np.ndarray, scores: dict[str, np.ndarray], threshold: float,
           confusion: dict[str, Any], latents: np.ndarray, labels: list[str], title: str,
           projection: str = "auto") -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = {}
    fig, ax = plt.subplots(figsize=(5, 4.4), dpi=100)
    for name in ABLATIONS:
        fpr, tpr, _ = roc_curve(targets, scores[name])
        ax.plot(fpr, tpr, lw=2 if name == "full fusion" else 1,
                label=f"{name} (AUROC {auroc(targets, scores[name]):.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="1 − specificity", ylabel="sensitivity", title="ROC, held-out test set")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    files["roc"] = "roc_curve.png"
    fig.savefig(out_dir / files["roc"])
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=100)
    fused = scores["full fusion"]
    bins = np.linspace(min(fused.min(), threshold) - 0.01, max(fused.max(), threshold) + 0.01, 30)
    ax.hist(fused[targets == 0], bins=bins, alpha=0.6, label="normal")
    ax.hist(fused[targets == 1], bins=bins, alpha=0.6, label="with findings")
    ax.axvline(threshold, color="k", ls="--", label=f"threshold {threshold:.3f}")
    ax.set(xlabel="fused anomaly score", ylabel="images", title="Score distribution")
    ax.legend(fontsize=8)
    fig.tight_layout()
    files["scores"] = "score_distribution.png"
    fig.savefig(out_dir / files["scores"])
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(3.6, 3.2), dpi=100)
    matrix = np.array([[confusion["tn"], confusion["fp"]], [confusion["fn"], confusion["tp"]]])
    ax.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center", color="black", fontsize=12)
    ax.set_xticks([0, 1], ["normal", "anomalous"])
    ax.set_yticks([0, 1], ["normal", "anomalous"])
    ax.set(xlabel="predicted", ylabel="truth", title=f"At threshold {threshold:.3f}")
    fig.tight_layout()
    files["confusion"] = "confusion_matrix.png"
    fig.savefig(out_dir / files["confusion"])
    plt.close(fig)

    points, method = _projection(latents, projection)
    fig, ax = plt.subplots(figsize=(5.4, 4.4), dpi=100)
    primary = [label.split("+")[0] for label in labels]
    for name in sorted(set(primary), key=lambda n: (n != "normal", n)):
        mask = np.array([p == name for p in primary])
        ax.scatter(points[mask, 0], points[mask, 1], s=10, alpha=0.8, label=name,
                   c="0.55" if name == "normal" else None)
    ax.set(title=f"VAE latent means ({method})", xticks=[], yticks=[])
    ax.legend(fontsize=7, markerscale=1.5)
    fig.tight_layout()
    files["latent"] = f"latent_{method.lower()}.png"
    fig.savefig(out_dir / files["latent"])
    plt.close(fig)
    files["latent_method"] = method
    return files


def evaluate(detector: AnomalyDetector, test: FeatureSet, out_dir: str | Path | None,
             n_boot: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED, timing_samples: Sequence[Sample] | None = None, title: str = "",
             projection: str = "auto") -> dict[str, Any]:
    """Evaluate on cached test features; writes report.json and plots to `out_dir` (None: no files).

    Args:
        projection: latent plot method, "auto" (UMAP if installed, else PCA) or "pca".
    """
    targets = test.targets.astype(int)
    if len(np.unique(targets)) < 2:
        raise ValueError("The test set needs both normal and anomalous images.")
    with torch.inference_mode():
        parts_t = detector.components_from_features(torch.from_numpy(test.features))
    parts = {k: v.float().cpu().numpy() for k, v in parts_t.items()}
    scores = ablation_scores(parts)
    ablation = {}
    for name in ABLATIONS:  # one seed: every ablation is scored on the same resampled images
        ablation[name] = auroc_with_ci(targets, scores[name], n_boot, seed).rounded()
    confusion = confusion_at(targets, scores["full fusion"], detector.threshold)
    normal = targets == 0
    per_finding = {}
    for finding in sorted({part for label in test.labels for part in label.split("+") if label != "normal"}):
        has = np.array([finding in label.split("+") for label in test.labels])
        if has.sum() >= 2:
            mask = normal | has
            per_finding[finding] = {"n": int(has.sum()),
                                    "auroc": round(auroc(has[mask], scores["full fusion"][mask]), 4)}
    report: dict[str, Any] = {
        "title": title,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "n_test": int(len(targets)), "n_normal": int(normal.sum()), "n_anomalous": int((~normal).sum()),
        "tier": detector.tier, "extractor": detector.extractor.kind,
        "extractor_sha256": detector.extractor.sha256, "calibration": detector.calibration.to_dict(),
        "ablation": ablation, "per_finding_full_fusion": per_finding, "at_threshold": confusion,
        "bootstrap": bootstrap_note(n_boot, seed),
        "score_means": {"normal": round(float(parts["fused"][normal].mean()), 4),
                        "anomalous": round(float(parts["fused"][~normal].mean()), 4)},
    }
    if timing_samples:
        report["timings_ms_per_image"] = stage_timings(detector, timing_samples)
        report["timings_note"] = f"median of {len(timing_samples)} single-image calls, device {detector.device}, " \
                                 f"torch threads {torch.get_num_threads()}"
    report["headline"] = {
        "auroc_full": ablation["full fusion"]["auroc"], "auroc_full_ci95": ablation["full fusion"]["ci95"],
        "sensitivity": confusion["sensitivity"], "specificity": confusion["specificity"],
        "threshold": confusion["threshold"], "n_test": report["n_test"],
        "ablation_auroc": {k: v["auroc"] for k, v in ablation.items()},
    }
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        report["plots"] = _plots(out_dir, targets, scores, detector.threshold, confusion, parts["mu"],
                                 test.labels, title, projection)
        (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    return report


def write_card(path: Path, checkpoint: Path, detector: AnomalyDetector, meta: dict[str, Any],
               report: dict[str, Any], extractor_seed: int | None = None) -> Path:
    """Model card JSON for a checkpoint (data, sizes, metrics with CI, extractor hash, date)."""
    trained_on = str(meta.get("trained_on") or "")
    card = {
        "name": "MedSight anomaly detector — demo weights",
        # What the weights were trained on: the registry reads it to set the domain of a user's own checkpoint.
        "training_domain": ("synthetic chest phantoms generated by medsight.synthetic"
                            if trained_on.startswith("synthetic phantoms") else f"real chest radiographs: {trained_on}"),
        "tier": detector.tier,
        "disclaimer": meta.get("disclaimer", ""),
        "checkpoint": checkpoint.name,
        "checkpoint_sha256": sha256_of(checkpoint),
        "created": meta.get("created") or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "architecture": {
            "pipeline": "VGG16 features (frozen) → avg-pool 512 → VAE (z 256) → ViT scorer → fused score",
            "vae_parameters": count_parameters(detector.vae), "vit_parameters": count_parameters(detector.vit),
            "trainable_parameters": count_parameters(detector.vae) + count_parameters(detector.vit),
            "fusion": "S = 0.4·σ(z_recon) + 0.2·σ(z_KL) + 0.4·s_ViT",
        },
        "extractor": {"kind": detector.extractor.kind, "sha256": detector.extractor.sha256, "seed": extractor_seed,
                      "label": detector.provenance.get("extractor_label"),
                      **({"file": meta["extractor"].get("file")} if meta.get("extractor") else {})},
        "data": {"description": meta.get("trained_on"), **meta.get("data", {}),
                 "labels_used": "phase 1 (VAE) normals only; phase 2 (ViT) normal vs anomalous labels"},
        "training": {"config": meta.get("train_config"), "phase1_vae": meta.get("phase1_vae"),
                     "phase2_vit": meta.get("phase2_vit"), "rca": meta.get("rca"),
                     "command": meta.get("command"), "seconds": meta.get("train_seconds")},
        "calibration": detector.calibration.to_dict(),
        "threshold": {"value": detector.threshold, "method": meta.get("threshold_method")},
        "metrics": {"validation": meta.get("metrics", {}).get("val"),
                    "test": {k: report[k] for k in ("n_test", "n_normal", "n_anomalous", "ablation",
                                                     "per_finding_full_fusion", "at_threshold", "bootstrap")},
                    "timings_ms_per_image": report.get("timings_ms_per_image"),
                    "timings_note": report.get("timings_note")},
        "intended_use": "Demonstrates the workstation's anomaly pipeline on synthetic phantoms. Not a medical "
                        "device; its figures say nothing about real radiographs.",
    }
    path.write_text(json.dumps(card, indent=2))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate_anomaly", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    add_data_arguments(parser)
    parser.add_argument("--split", choices=("train", "val", "test"), default="test")
    parser.add_argument("--extractor-file", type=Path, default=None,
                        help="phantom-trained extractor weights (default: the shipped models/ copy)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    parser.add_argument("--out", type=Path, required=True, help="folder for report.json and plots")
    parser.add_argument("--n-boot", type=int, default=BOOTSTRAP_RESAMPLES, help="bootstrap resamples")
    parser.add_argument("--timing-images", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_checkpoint(args.checkpoint)
    if data.extractor_kind == EXTRACTOR_IMAGENET:
        extractor = build_extractor("imagenet")
    else:
        extractor = load_demo_extractor(data.extractor_kind, args.extractor_file)
    detector = build_detector(data, extractor)
    samples = dict(zip(("train", "val", "test"), resolve_splits(args)))[args.split]
    feats = extract_features(samples, extractor, args.cache_dir, desc=f"{args.split} features")
    report = evaluate(detector, feats, args.out, n_boot=args.n_boot, timing_samples=samples[:args.timing_images],
                      title=describe_data(args))
    print(json.dumps(report["headline"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
