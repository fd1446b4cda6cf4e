"""Fit the anomaly detector's per-position model of normal features (the deviation map), and evaluate it.

Runs the detector's frozen VGG16 on the NORMAL images of the training split and fits, for every cell of the
last conv block's 14×14 grid, a Gaussian of the features (`medsight.models.anomaly.patch`); held-out normal
images of the validation split set the map's display scale and the image-level threshold. No abnormal image
and no label other than "normal" is used for fitting. The test split (normal and abnormal) then gives the
image-level AUROC of the peak deviation, with a bootstrap CI, next to the detector's fused score.

The file is written fp16-rounded and calibrated after rounding, so what is evaluated is what is stored.
A model card JSON is written next to it.

Examples:
    python -m training.fit_patch_model                       # demo: phantoms, models/anomaly_patch_demo.pt
    python -m training.fit_patch_model --data covid:/data/COVID-19_Radiography_Dataset \\
        --out ~/.medsight/models/anomaly_patch.pt           # with the real detector loaded by the registry
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from medsight.config import SHIPPED_MODELS_DIR
from medsight.models.anomaly.patch import (
    BASIS_IMAGES,
    DEFAULT_COMPONENTS,
    DEFAULT_EPS,
    NormalCellStatistics,
    PatchDeviationModel,
    principal_axes,
)
from training.data_args import add_data_arguments, describe_data, resolve_splits
from training.datasets import Sample, load_image
from training.evaluate_maps import load_detector_for_eval
from training.metrics import auroc_with_ci, bootstrap_note

DEMO_OUT = SHIPPED_MODELS_DIR / "anomaly_patch_demo.pt"


def activation_batches(detector: Any, samples: Sequence[Sample], batch_size: int = 8, desc: str = "images",
                       progress: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Per batch: last-block activation maps (B, 512, 14, 14) and fused scores (B,) of the detector."""
    bar = tqdm(total=len(samples), desc=desc, unit="img", disable=not progress, file=sys.stderr)
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        x = torch.cat([detector.preprocess(load_image(s)) for s in chunk]).to(detector.device)
        with torch.inference_mode():
            pooled, acts = detector.extractor.forward_with_activations(x)
            fused = detector.components_from_features(pooled)["fused"].cpu()
        bar.update(len(chunk))
        yield acts.cpu(), fused
    bar.close()


def fit_statistics(batches: Iterable[torch.Tensor], n_components: int = DEFAULT_COMPONENTS) -> NormalCellStatistics:
    """Per-cell sums over normal activation batches; the principal axes come from the first `BASIS_IMAGES`.

    Only those first images are held in memory at once, so any number of normal images can be fitted.

    Raises:
        ValueError: no images.
    """
    first: list[torch.Tensor] = []
    stats: NormalCellStatistics | None = None
    for acts in batches:
        if stats is not None:
            stats.add(acts)
            continue
        first.append(acts)
        if sum(len(a) for a in first) >= BASIS_IMAGES:
            stats = _start_statistics(first, n_components)
            first = []
    if stats is None:
        if not first:
            raise ValueError("no normal training images to fit")
        stats = _start_statistics(first, n_components)
    return stats


def _start_statistics(first: list[torch.Tensor], n_components: int) -> NormalCellStatistics:
    acts = torch.cat(first)
    stats = NormalCellStatistics(principal_axes(acts[:BASIS_IMAGES], n_components), tuple(acts.shape[2:]))
    stats.add(acts)
    return stats


def fit_and_evaluate(detector: Any, train: Sequence[Sample], val: Sequence[Sample], test: Sequence[Sample], *,
                     n_components: int = DEFAULT_COMPONENTS, eps: float = DEFAULT_EPS, progress: bool = True,
                     meta: dict[str, Any] | None = None) -> tuple[PatchDeviationModel, dict[str, Any]]:
    """Fit on normal training images, calibrate on normal validation images, evaluate on the test split.

    Images are processed in batches; only per-cell sums, distances and scores are kept.

    Returns:
        (model as stored — fp16-rounded and calibrated, evaluation dict).

    Raises:
        ValueError: too few normal images.
    """
    started = time.time()
    train_normal = [s for s in train if s.is_normal]
    val_normal = [s for s in val if s.is_normal]
    if len(val_normal) < 5:
        raise ValueError(f"only {len(val_normal)} normal validation images; at least 5 are needed to set the scale")
    batches = (acts for acts, _ in activation_batches(detector, train_normal, desc="fit (normal train)",
                                                      progress=progress))
    model = PatchDeviationModel.from_statistics(fit_statistics(batches, n_components),
                                                extractor_sha256=detector.extractor.sha256, eps=eps, meta=meta)
    model = model.rounded()
    val_distances = torch.cat([model.distances(acts) for acts, _ in activation_batches(
        detector, val_normal, desc="scale (normal val)", progress=progress)])
    model = model.calibrate_distances(val_distances)
    evaluation: dict[str, Any] = {"n_train_normal": len(train_normal), "n_val_normal": len(val_normal),
                                  "scale": model.scale.to_dict()}
    if test:
        evaluation.update(evaluate_on_test(model, detector, test, progress))
    evaluation["seconds"] = round(time.time() - started, 1)
    model.meta["evaluation"] = evaluation
    return model, evaluation


def evaluate_on_test(model: PatchDeviationModel, detector: Any, test: Sequence[Sample],
                     progress: bool = True) -> dict[str, Any]:
    """Image-level figures of the peak deviation on a labelled split, next to the detector's fused score:
    AUROC with its bootstrap CI, and sensitivity / specificity at the model's normal-range threshold.

    Returns:
        {"test": {...}, "bootstrap": {...}}, or {} when the split lacks normal or abnormal images.
    """
    peaks, fused = [], []
    for acts, scores in activation_batches(detector, list(test), desc="evaluate (test)", progress=progress):
        peaks.append(model.distances(acts).amax(dim=(1, 2)))
        fused.append(scores)
    peak = torch.cat(peaks).numpy()
    fused_scores = torch.cat(fused).numpy()
    targets = np.array([0 if s.is_normal else 1 for s in test])
    if not 0 < targets.sum() < len(targets):
        return {}
    peak_auc, fused_auc = auroc_with_ci(targets, peak), auroc_with_ci(targets, fused_scores)
    flagged = peak >= model.scale.peak_threshold
    return {"test": {
        "n": len(test), "n_anomalous": int(targets.sum()),
        "auroc_peak_deviation": round(peak_auc.auroc, 4),
        "auroc_peak_deviation_ci95": peak_auc.rounded()["ci95"],
        "auroc_fused_score": round(fused_auc.auroc, 4),
        "auroc_fused_score_ci95": fused_auc.rounded()["ci95"],
        "sensitivity_at_normal_threshold": round(float(flagged[targets == 1].mean()), 4),
        "specificity_at_normal_threshold": round(float(1 - flagged[targets == 0].mean()), 4),
    }, "bootstrap": bootstrap_note()}


def write_card(path: Path, model: PatchDeviationModel, detector: Any, command: str) -> Path:
    """Model card JSON next to the patch model (`<name>.card.json`)."""
    from medsight.registry import sha256_of

    card = {
        "name": "MedSight anomaly map — per-position model of normal features (PaDiM-style)",
        "tier": detector.tier,
        "disclaimer": ("demo — fitted on normal synthetic phantoms with the demo VGG16 extractor (not ImageNet "
                       "features); not for clinical use") if detector.tier == "demo" else "",
        "file": path.name,
        "file_sha256": sha256_of(path),
        "extractor_sha256": model.extractor_sha256,
        "method": ("Per cell of the 14×14 conv5_3 grid: Gaussian of the features projected on the first "
                   f"{model.basis.shape[1]} principal axes of normal cells (+{model.meta.get('eps')}·I); map = "
                   "Mahalanobis distance, bilinear resize, Gaussian smoothing (σ 4 px at 224), "
                   "1 − exp(−max(0, d − p99 normal cell) / spread); image level = peak distance"),
        "reference": "Defard et al., PaDiM: a Patch Distribution Modeling Framework for Anomaly Detection and "
                     "Localization, ICPR 2021",
        "labels_used": "normal images only (fit: normal training split; scale: normal validation split)",
        "data": model.meta.get("data"),
        "created": model.meta.get("created"),
        "scale": model.scale.to_dict() if model.scale else None,
        "evaluation": model.meta.get("evaluation"),
        "localisation": "see training.evaluate_maps (pointing game on phantoms with ground-truth masks)",
        "command": command,
    }
    out = path.with_name(path.name.replace(".pt", ".card.json"))
    out.write_text(json.dumps(card, indent=2, ensure_ascii=False))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.fit_patch_model", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser)
    parser.add_argument("--checkpoint", default=None,
                        help="demo anomaly checkpoint whose extractor to use (default: the registry's detector)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"output file (default: {DEMO_OUT} for the demo detector; required otherwise)")
    parser.add_argument("--components", type=int, default=DEFAULT_COMPONENTS, help="principal axes kept")
    parser.add_argument("--eps", type=float, default=DEFAULT_EPS, help="ridge added to each covariance")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the machine may be shared)")
    parser.add_argument("--evaluate", action="store_true",
                        help="evaluate the existing --out file on the test split without refitting; prints the "
                             "figures (the file is left unchanged)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    detector = load_detector_for_eval(args.checkpoint)
    if args.out is None:
        if detector.tier != "demo":
            parser.error("--out is required for a real detector (e.g. <data dir>/models/anomaly_patch.pt)")
        args.out = DEMO_OUT
    train, val, test = resolve_splits(args)
    if args.evaluate:
        model = PatchDeviationModel.load(args.out, detector.extractor.sha256)
        print(json.dumps(evaluate_on_test(model, detector, test, progress=not args.no_progress), indent=2))
        return 0
    model, evaluation = fit_and_evaluate(
        detector, train, val, test, n_components=args.components, eps=args.eps, progress=not args.no_progress,
        meta={"data": describe_data(args), "detector_tier": detector.tier})
    path = model.save(args.out)
    command = "python -m training.fit_patch_model " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"patch model: {path} ({path.stat().st_size / 1e6:.1f} MB); card: {write_card(path, model, detector, command)}")
    print(json.dumps(evaluation, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
