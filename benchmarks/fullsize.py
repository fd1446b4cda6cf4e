"""Full-size probe, run in a fresh process by the `fullsize` benchmark section.

    python -m benchmarks.fullsize --folder DIR --generate-only        # write the three studies once
    python -m benchmarks.fullsize --folder DIR --runs 10 --out fullsize.json

The studies are generated in a process of their own, so the peak RSS this probe reports is the analysis
models plus full-size analyses, not the phantom generator's. See `benchmarks/sections/fullsize.py`.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from pathlib import Path

from benchmarks.common import summarise, symptom_text

#: Input name → (rows, columns, file kind). The DICOM is 16 bits stored, as a CR/DX detector writes it.
INPUTS = {
    "phantom_512_png": (512, 512, "png"),
    "jpeg_1800": (1800, 1800, "jpeg"),
    "dicom_2000x2500": (2500, 2000, "dicom"),
}


def write_inputs(folder: Path) -> dict[str, Path]:
    """Generate the three studies (or reuse them from `folder`): phantoms rendered at full size, not upscaled."""
    from medsight.synthetic import generate_phantom, write_jpeg, write_png
    from medsight.synthetic.dicom import write_dicom

    paths = {}
    for seed, (name, (rows, cols, kind)) in enumerate(INPUTS.items(), start=2000):
        existing = [p for p in folder.glob(f"{name}.*") if p.suffix in (".png", ".jpg", ".dcm")]
        if existing:  # written by an earlier run into the same folder
            paths[name] = existing[0]
            continue
        phantom = generate_phantom(seed, size=max(rows, cols), findings=("effusion",))
        left = (phantom.image.shape[1] - cols) // 2
        image = phantom.image[:rows, left:left + cols]
        if kind == "png":
            paths[name] = write_png(image, folder / f"{name}.png", bits=16)
        elif kind == "jpeg":
            paths[name] = write_jpeg(image, folder / f"{name}.jpg")
        else:
            paths[name] = write_dicom(image, folder / f"{name}.dcm", bits_stored=16, patient_id="BENCH-FULL")
    return {name: Path(path) for name, path in paths.items()}


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def measure(paths: dict[str, Path], runs: int) -> dict:
    """Warm analysis of each input `runs` times (after one untimed pass each), interleaved."""
    from benchmarks.context import load_models
    from medsight.ingest import load_study
    from medsight.pipeline import run_analysis

    detector, classifier, tiers = load_models()
    rss_models = _peak_rss_mb()
    whole: dict[str, list[float]] = {name: [] for name in paths}
    ingest: dict[str, list[float]] = {name: [] for name in paths}
    stages: dict[str, dict[str, list[float]]] = {name: {} for name in paths}
    display: dict[str, list[float]] = {name: [] for name in paths}
    facts: dict[str, dict] = {}
    for index in range(runs + 1):
        for name, path in paths.items():
            start = time.perf_counter()
            study = load_study(path)
            ingested = time.perf_counter()
            result = run_analysis(study, symptom_text(index), detector=detector, classifier=classifier, maps="key")
            done = time.perf_counter()
            heatmaps = list(result.objects.get("heatmaps", {}).values()) or [
                m for withheld in result.objects.get("withheld", {}).values() for m in withheld["maps"].values()]
            if heatmaps:
                started = time.perf_counter()
                heatmaps[0].png()
                drawn = time.perf_counter() - started
            if index == 0:  # warm-up pass
                facts[name] = {"pixels": f"{study.image.shape[1]}x{study.image.shape[0]}",
                               "file_mb": round(path.stat().st_size / 1e6, 2), "status": result.status,
                               "maps": sorted(result.maps), "maps_computed": len(heatmaps)}
                continue
            whole[name].append(done - start)
            ingest[name].append(ingested - start)
            if heatmaps:
                display[name].append(drawn)
            for record in result.stages:
                stages[name].setdefault(record.name, []).append(record.seconds)
    out: dict = {"runs": runs, "model_tiers": tiers, "peak_rss_mb_models_loaded": rss_models,
                 "peak_rss_mb": _peak_rss_mb(), "inputs": {}}
    for name in paths:
        median_whole = statistics.median(whole[name])
        per_stage = {"ingest": ingest[name], **stages[name]}
        out["inputs"][name] = {
            **facts[name],
            "full_analysis": summarise(whole[name]),
            "stages_median_ms": {k: round(statistics.median(v) * 1000, 1) for k, v in per_stage.items()},
            "stage_shares": {k: round(statistics.median(v) / median_whole, 3) for k, v in per_stage.items()
                             if statistics.median(v) / median_whole >= 0.005},
            "map_display": summarise(display[name]),
        }
    reference = statistics.median(whole["phantom_512_png"])
    out["ratio_to_512"] = {name: round(statistics.median(whole[name]) / reference, 2) for name in paths}
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m benchmarks.fullsize")
    parser.add_argument("--folder", type=Path, required=True, help="where the generated studies are (written)")
    parser.add_argument("--generate-only", action="store_true", help="write the studies and stop")
    parser.add_argument("--out", type=Path, help="JSON output")
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args(argv)
    paths = write_inputs(args.folder)
    if args.generate_only:
        return 0
    if args.out is None:
        parser.error("--out is required unless --generate-only")
    result = measure(paths, args.runs)
    args.out.write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
