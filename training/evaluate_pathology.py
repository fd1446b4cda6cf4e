"""Evaluate the pathology classifier on fresh synthetic phantoms: per-label AUROC and Grad-CAM pointing game.

The phantoms come from a dataset seed the training CLI never uses. AUROC is computed on the raw sigmoid
outputs (it is unchanged by the operating-point calibration). The pointing game counts a hit when the
Grad-CAM peak of a label lies inside that finding's ground-truth mask; its chance level is the mask's share
of the image (a uniformly random peak).

Example:
    python -m training.evaluate_pathology --n 200 --pointing 40 --panels-dir /tmp/pathology_panels
    python -m training.evaluate_pathology --weights models/pathology_demo.pt --size 512 --json /tmp/eval.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from medsight.config import PROJECT_ROOT
from medsight.models.pathology.labels import PHANTOM_FINDING_TO_LABEL
from training.metrics import auroc

DEFAULT_SEED = 7707  # not one of the training CLI's split seeds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate_pathology", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--weights", type=Path, default=PROJECT_ROOT / "models" / "pathology_demo.pt",
                        help="demo checkpoint to evaluate ('registry' evaluates whatever the registry loads)")
    parser.add_argument("--n", type=int, default=200, help="phantoms for AUROC (half normal)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="dataset seed of the evaluation phantoms")
    parser.add_argument("--size", type=int, default=256, help="phantom size in pixels")
    parser.add_argument("--pointing", type=int, default=40, help="single-finding phantoms for the pointing game (0: skip)")
    parser.add_argument("--panels-dir", type=Path, default=None, help="write a few Grad-CAM three-panel PNGs here")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 suits a shared CPU)")
    return parser.parse_args(argv)


def auroc_per_label(classifier, phantoms) -> dict[str, Any]:
    """AUROC per label of the classifier's raw probabilities against the phantoms' labels."""
    probs = classifier.raw_probabilities([p.image for p in phantoms])
    out: dict[str, Any] = {}
    for finding, label in PHANTOM_FINDING_TO_LABEL.items():
        if label not in classifier.labels:
            continue
        y = np.array([finding in p.labels for p in phantoms])
        value = auroc(y, probs[:, classifier.labels.index(label)])
        if value is not None:
            out[label] = {"auroc": round(value, 4), "n_positive": int(y.sum()), "n_negative": int((~y).sum())}
    return out


def pointing_game(classifier, phantoms, panels_dir: Path | None = None, max_panels: int = 5) -> dict[str, Any]:
    """Hit rate of Grad-CAM peaks inside ground-truth masks, per label and overall, with chance levels."""
    from medsight.explain.render import make_result  # noqa: F401  (import checks the renderer before the loop)

    per_label: dict[str, dict[str, list[float]]] = {}
    written = 0
    for phantom in phantoms:
        for finding in phantom.labels:
            label = PHANTOM_FINDING_TO_LABEL[finding]
            if label not in classifier.labels:
                continue
            mask = phantom.masks[finding]
            if panels_dir is not None and written < max_panels:
                result = classifier.gradcam(phantom.image, label)
                heat = result.heat
                panels_dir.mkdir(parents=True, exist_ok=True)
                (panels_dir / f"gradcam_{written:02d}_{finding}_seed{phantom.seed}.png").write_bytes(result.png())
                written += 1
            else:
                heat, _ = classifier.gradcam_heat(phantom.image, label)
            peak = np.unravel_index(int(np.argmax(heat)), heat.shape)
            entry = per_label.setdefault(label, {"hits": [], "chance": []})
            entry["hits"].append(float(mask[peak] and heat.max() > 0))
            entry["chance"].append(float(mask.mean()))
    summary = {label: {"hit_rate": round(float(np.mean(v["hits"])), 3), "chance": round(float(np.mean(v["chance"])), 3), "n": len(v["hits"])}
               for label, v in per_label.items()}
    hits = [h for v in per_label.values() for h in v["hits"]]
    chance = [c for v in per_label.values() for c in v["chance"]]
    return {"per_label": summary, "hit_rate": round(float(np.mean(hits)), 3) if hits else None,
            "chance": round(float(np.mean(chance)), 3) if chance else None, "n": len(hits)}


def main(argv: list[str] | None = None) -> int:
    import torch

    from medsight.models.pathology import load_classifier, load_demo_checkpoint
    from medsight.synthetic import FINDINGS, generate_dataset, generate_phantom

    args = parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    if str(args.weights) == "registry":
        classifier = load_classifier()
    elif not args.weights.is_file():
        print(f"No weights at {args.weights}; train them with python -m training.train_pathology", file=sys.stderr)
        return 2
    else:
        classifier = load_demo_checkpoint(args.weights)
    report: dict[str, Any] = {"model": {"name": classifier.name, "version": classifier.version, "tier": classifier.tier},
                              "phantoms": {"n": args.n, "seed": args.seed, "size": args.size}}
    t0 = time.perf_counter()
    phantoms = generate_dataset(args.n, seed=args.seed, size=args.size)
    t1 = time.perf_counter()
    report["auroc"] = auroc_per_label(classifier, phantoms)
    t2 = time.perf_counter()
    report["timings_s"] = {"generate": round(t1 - t0, 1), "classify": round(t2 - t1, 1),
                           "classify_ms_per_image": round((t2 - t1) * 1000 / max(1, args.n), 1)}
    if args.pointing:
        findings = [f for f in FINDINGS if PHANTOM_FINDING_TO_LABEL[f] in classifier.labels]
        pointing = [generate_phantom(args.seed * 1000 + i, size=args.size, findings=(findings[i % len(findings)],))
                    for i in tqdm(range(args.pointing), desc="pointing-game phantoms")]
        t3 = time.perf_counter()
        report["pointing_game"] = pointing_game(classifier, pointing, args.panels_dir)
        report["timings_s"]["pointing_game"] = round(time.perf_counter() - t3, 1)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
