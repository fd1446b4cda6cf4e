"""Evaluate how well the anomaly detector's maps localise findings on phantoms with ground-truth masks.

For each abnormal phantom, the detector's maps are computed — the deviation-from-normal map (per-position
model of normal features, when the detector has one), the spatial anomaly map (Grad-CAM of the fused score)
and the published latent-attention map (not spatial by construction; included to show it) — and compared
with the union of the finding masks: pointing-game hit, IoU of the top-x % region and share of map energy
inside the mask, each next to its chance level (mask area fraction; for the pointing game also the stricter
"random point in the lungs" level).

Writes `<out>/maps_eval.json` (configuration, detector provenance, summaries per map and per finding,
per-image rows) and `<out>/maps_grid.png` (examples: radiograph with the mask outline, each map's overlay).

Example:
    python -m training.evaluate_maps --n 40 --size 256 --out artifacts/maps
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from medsight.config import PROJECT_ROOT

MAPS = ("patch_deviation", "spatial_anomaly", "paper_attention")
MAP_TITLES = {
    "patch_deviation": "Deviation from normal (per position)",
    "spatial_anomaly": "Spatial anomaly map (Grad-CAM)",
    "paper_attention": "Latent attention (paper)",
    "pathology_gradcam": "Pathology Grad-CAM (own label)",
}

MapFn = Callable[[Any], Any]  # phantom -> HeatmapResult (render=False)


def abnormal_phantoms(n: int, seed: int, size: int, findings: Sequence[str]) -> list:
    """`n` phantoms with one finding each, cycling through `findings` (seeded, reproducible)."""
    from medsight.synthetic import generate_phantom

    if not findings:
        raise ValueError("choose at least one finding")
    return [generate_phantom(seed + i, size=size, findings=(findings[i % len(findings)],)) for i in range(n)]


def anomaly_map_functions(detector: Any) -> dict[str, MapFn]:
    """The anomaly detector's maps as phantom → HeatmapResult functions (panels not drawn).

    The deviation map is included only when the detector has a patch model.
    """
    from medsight.explain.anomaly_map import patch_deviation_map, spatial_anomaly_map
    from medsight.explain.attention import paper_attention_map

    maps: dict[str, MapFn] = {}
    if getattr(detector, "patch_model", None) is not None:
        maps["patch_deviation"] = lambda phantom: patch_deviation_map(detector, phantom.image, render=False)
    maps["spatial_anomaly"] = lambda phantom: spatial_anomaly_map(detector, phantom.image, render=False)
    maps["paper_attention"] = lambda phantom: paper_attention_map(detector, phantom.image, render=False)
    return maps


def pathology_map_function(classifier: Any) -> MapFn:
    """Per-label Grad-CAM of the pathology classifier for the phantom's own (first) finding."""
    from medsight.explain.render import make_result

    def run(phantom):
        heat, details = classifier.gradcam_heat(phantom.image, phantom.labels[0])
        return make_result("pathology_gradcam", phantom.image, heat, MAP_TITLES["pathology_gradcam"], "",
                           score=details.get("probability"), label=details.get("label", ""), render=False)

    return run


def evaluate(maps: dict[str, MapFn] | Any, phantoms: Sequence, *, top_fraction: float = 0.10, tolerance_px: int = 0,
             progress: bool = False) -> dict[str, Any]:
    """Localisation of each map over phantoms that carry masks.

    Args:
        maps: name → function(phantom) → HeatmapResult; an anomaly detector is accepted as a shortcut for
            its two maps (`anomaly_map_functions`).
        phantoms: abnormal `medsight.synthetic.Phantom`s.
        top_fraction: x of the top-x % IoU.
        tolerance_px: pointing-game tolerance in pixels.
        progress: show a progress bar.

    Returns:
        dict with "summary" (per map), "by_finding" (per map and finding), "rows" (per image) and
        "examples" (the first results, for the figure; not JSON).
    """
    from medsight.explain.localisation import localisation_scores, summarise

    functions = maps if isinstance(maps, dict) else anomaly_map_functions(maps)
    names = list(functions)
    scores: dict[str, list] = {name: [] for name in names}
    by_finding: dict[str, dict[str, list]] = {name: {} for name in names}
    rows, examples, seconds = [], [], {name: 0.0 for name in names}
    iterator = phantoms
    if progress:
        from tqdm import tqdm

        iterator = tqdm(phantoms, desc="maps", unit="image", file=sys.stderr)
    for phantom in iterator:
        if not phantom.masks:
            continue
        mask = np.logical_or.reduce([m for m in phantom.masks.values()])
        row: dict[str, Any] = {"seed": phantom.seed, "labels": list(phantom.labels), "mask_fraction": float(mask.mean())}
        results = {}
        for name in names:
            start = time.perf_counter()
            result = functions[name](phantom)
            seconds[name] += time.perf_counter() - start
            s = localisation_scores(result.heat, mask, top_fraction=top_fraction, tolerance_px=tolerance_px,
                                    region=phantom.lung_mask)
            scores[name].append(s)
            for label in phantom.labels:
                by_finding[name].setdefault(label, []).append(s)
            row[name] = {**s.to_dict(), "score": result.score}
            results[name] = result
        rows.append(row)
        if len(examples) < 8:
            examples.append((phantom, mask, results))
    if not rows:
        raise ValueError("no phantom with a finding mask to evaluate")
    summary = {name: {**summarise(scores[name]), "seconds_per_image": seconds[name] / len(rows)} for name in names}
    findings = {name: {label: summarise(v) for label, v in sorted(by_finding[name].items())} for name in names}
    return {"summary": summary, "by_finding": findings, "rows": rows, "examples": examples}


def write_grid(examples: list, path: Path, opacity: float = 0.65) -> Path:
    """Examples figure: radiograph with the ground-truth outline | each map's overlay (with its peak)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from medsight.explain.render import overlay

    n = len(examples)
    names = list(examples[0][2])
    fig = Figure(figsize=(3 * (1 + len(names)), 3.1 * n + 0.4), dpi=90, facecolor="#0e1117")
    FigureCanvasAgg(fig)
    axes = fig.subplots(n, 1 + len(names), squeeze=False)
    for i, (phantom, mask, results) in enumerate(examples):
        axes[i, 0].imshow(phantom.image, cmap="gray", vmin=0, vmax=1)
        axes[i, 0].contour(mask, levels=[0.5], colors=["#00e5ff"], linewidths=1.0)
        axes[i, 0].set_title(f"{', '.join(phantom.labels)} (truth outlined)", color="#fafafa", fontsize=9)
        for j, name in enumerate(names, start=1):
            result = results[name]
            picture = overlay(result.image, result.heat, opacity)
            axes[i, j].imshow(picture)
            peak = np.unravel_index(int(np.argmax(result.heat)), result.heat.shape)
            axes[i, j].plot(peak[1], peak[0], marker="+", color="#00e5ff", markersize=12, mew=2)
            if result.heat.shape == mask.shape:
                axes[i, j].contour(mask, levels=[0.5], colors=["#00e5ff"], linewidths=0.6)
            axes[i, j].set_title(MAP_TITLES.get(name, name) + (" — not spatial" if name == "paper_attention" else ""),
                                 color="#fafafa", fontsize=9)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.suptitle("Map localisation on synthetic phantoms (+ = map maximum)", color="#fafafa", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, facecolor=fig.get_facecolor())
    return path


def load_detector_for_eval(checkpoint: str | None):
    """A detector from a demo checkpoint file, or the first source of the registry slot."""
    if checkpoint:
        from medsight.models.anomaly import build_detector, load_checkpoint, load_demo_extractor

        data = load_checkpoint(checkpoint)
        return build_detector(data, load_demo_extractor(data.extractor_kind), provenance={"tier": "demo"})
    from medsight.models.anomaly import load_detector

    return load_detector()


def format_summary(summary: dict[str, Any]) -> str:
    lines = []
    for name, s in summary.items():
        low, high = s["pointing_hit_rate_ci95"]
        lines.append(
            f"{MAP_TITLES.get(name, name):<32} pointing game {s['pointing_hit_rate']:.3f} [95% CI {low:.3f}–{high:.3f}] "
            f"vs chance {s['pointing_chance']:.3f} (image) / {s['pointing_region_chance']:.3f} (lungs); "
            f"top-{s['top_fraction'] * 100:.0f}% IoU {s['top_iou_mean']:.3f} vs chance {s['top_iou_chance']:.3f}; "
            f"energy inside {s['energy_inside_mean']:.3f} vs chance {s['energy_chance']:.3f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from medsight.synthetic import FINDINGS

    parser = argparse.ArgumentParser(
        prog="python -m training.evaluate_maps",
        description="Localisation of explanation maps (the anomaly detector's spatial Grad-CAM and the paper's "
                    "latent attention; optionally the pathology classifier's per-label Grad-CAM) on synthetic "
                    "phantoms with ground-truth masks: pointing game, top-x%% IoU and energy inside the mask, "
                    "each against its chance level.",
    )
    parser.add_argument("--n", type=int, default=40, help="abnormal phantoms to evaluate (default 40)")
    parser.add_argument("--size", type=int, default=256, help="phantom side in pixels (default 256)")
    parser.add_argument("--seed", type=int, default=7000, help="first phantom seed (default 7000)")
    parser.add_argument("--findings", default=",".join(FINDINGS),
                        help=f"comma-separated findings to cycle through (default: {','.join(FINDINGS)})")
    parser.add_argument("--maps", default=",".join(MAPS),
                        help="comma-separated maps: patch_deviation, spatial_anomaly, paper_attention, pathology_gradcam "
                             f"(default: {','.join(MAPS)})")
    parser.add_argument("--top-fraction", type=float, default=0.10, help="x of the top-x%% IoU (default 0.10)")
    parser.add_argument("--tolerance", type=int, default=0, help="pointing-game tolerance in pixels (default 0)")
    parser.add_argument("--checkpoint", default=None,
                        help="demo anomaly checkpoint to use (default: the registry's anomaly.detector)")
    parser.add_argument("--examples", type=int, default=6, help="examples in the PNG grid (default 6)")
    parser.add_argument("--out", default=str(PROJECT_ROOT / "artifacts" / "maps"), help="output folder")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(max(1, args.threads))
    findings = [f.strip() for f in args.findings.split(",") if f.strip()]
    wanted = [m.strip() for m in args.maps.split(",") if m.strip()]
    unknown = [m for m in wanted if m not in MAP_TITLES]
    if unknown or not wanted:
        print(f"error: unknown map(s) {unknown}; choose from {', '.join(MAP_TITLES)}", file=sys.stderr)
        return 2
    functions: dict[str, MapFn] = {}
    models: dict[str, Any] = {}
    if {"patch_deviation", "spatial_anomaly", "paper_attention"} & set(wanted):
        try:
            detector = load_detector_for_eval(args.checkpoint)
        except Exception as exc:  # a missing model is a user-facing condition, not a crash
            print(f"Anomaly detector not available: {exc}", file=sys.stderr)
            return 2
        models["anomaly_detector"] = {"tier": str(getattr(detector, "tier", "")),
                                      "provenance": {k: v for k, v in detector.provenance.items() if k != "registry"}}
        available = anomaly_map_functions(detector)
        if "patch_deviation" in wanted and "patch_deviation" not in available:
            print("The anomaly detector has no patch model (fit one with training.fit_patch_model); "
                  "skipping the deviation map.", file=sys.stderr)
            wanted.remove("patch_deviation")
        functions.update({k: v for k, v in available.items() if k in wanted})
    if "pathology_gradcam" in wanted:
        try:
            from medsight.models.pathology import load_classifier

            classifier = load_classifier()
        except Exception as exc:
            print(f"Pathology classifier not available: {exc}", file=sys.stderr)
            return 2
        models["pathology_classifier"] = {"tier": classifier.tier, "name": getattr(classifier, "name", "")}
        functions["pathology_gradcam"] = pathology_map_function(classifier)
    try:
        phantoms = abnormal_phantoms(args.n, args.seed, args.size, findings)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    functions = {name: functions[name] for name in wanted}
    result = evaluate(functions, phantoms, top_fraction=args.top_fraction, tolerance_px=args.tolerance, progress=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "what": "localisation of explanation maps on synthetic phantoms with ground-truth masks",
        "config": {"n": args.n, "size": args.size, "seed": args.seed, "findings": findings, "maps": wanted,
                   "top_fraction": args.top_fraction, "tolerance_px": args.tolerance},
        "models": models,
        "chance_levels": "pointing/energy chance = mask area fraction; pointing_region_chance = mask share of "
                         "the lung fields; top_iou_chance = expected IoU of a random region of the same size",
        "summary": result["summary"],
        "by_finding": result["by_finding"],
        "rows": result["rows"],
    }
    json_path = out / "maps_eval.json"
    json_path.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    grid_path = write_grid(result["examples"][: max(1, args.examples)], out / "maps_grid.png")
    print(format_summary(result["summary"]))
    for name, per_finding in result["by_finding"].items():
        per = ", ".join(f"{label} {s['pointing_hit_rate']:.2f} (n={s['n']})" for label, s in per_finding.items())
        print(f"  {name} pointing game by finding: {per}")
    print(f"wrote {json_path} and {grid_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
