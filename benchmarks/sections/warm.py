"""Warm stages: per-stage and whole-analysis latency over generated studies, models already loaded.

The analysis stages are read from the pipeline's own stage records (`AnalysisResult.stages`) of the very
`run_analysis` call that is timed as the whole analysis; ingest, drawing the maps and the PDF happen
outside the pipeline and are timed here.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import summarise, symptom_text
from benchmarks.context import Context

NAME = "warm"

#: Benchmark stage → the pipeline's stage record it is read from.
PIPELINE_STAGES = {
    "anomaly": "vision: anomaly detector",
    "pathology": "vision: pathology classifier",
    "maps": "vision: heatmaps",
    "nlp": "clinical NLP",
    "fusion": "fusion, uncertainty and risk",
}
STAGES = ("ingest", *PIPELINE_STAGES, "map_display", "pdf", "full_analysis")


def run_warm(paths: list[Path], detector: Any, classifier: Any) -> dict:
    """Per-stage and whole-analysis latency over the studies (first study run once untimed as warm-up).

    A pipeline stage counts only where its record says it ran ("ok"), so a missing model is not timed as 0.
    """
    from medsight.ingest import load_study
    from medsight.pipeline import OK, run_analysis
    from medsight.report import build_pdf

    try:
        import medsight.fusion  # noqa: F401

        fusion_available = True
    except ImportError:
        fusion_available = False

    stages: dict[str, list[float]] = {key: [] for key in STAGES}
    pipeline_stages: dict[str, list[float]] = {}
    maps_per_study: list[int] = []
    sizes: set[str] = set()
    statuses: dict[str, int] = {}
    for index, path in enumerate([paths[0]] + list(paths)):
        start = time.perf_counter()
        study = load_study(path)
        ingested = time.perf_counter()
        result = run_analysis(study, symptom_text(index), detector=detector, classifier=classifier, maps="key")
        analysed = time.perf_counter()
        sizes.add(f"{study.image.shape[1]}x{study.image.shape[0]}")

        # Maps are drawn (three panels, PNG) when a reader first opens them or exports the PDF.
        drawn, draw_seconds = [], []
        for key, heatmap in result.objects.get("heatmaps", {}).items():
            started = time.perf_counter()
            drawn.append((heatmap.caption or key, heatmap.png()))
            draw_seconds.append(time.perf_counter() - started)
        started = time.perf_counter()
        build_pdf(result.to_dict(), images=[("Radiograph as analysed", study.thumbnail_png(512))] + drawn,
                  user="benchmark")
        pdf_seconds = time.perf_counter() - started

        if index == 0:  # the warm-up pass
            continue
        stages["ingest"].append(ingested - start)
        stages["full_analysis"].append(analysed - start)
        stages["map_display"].extend(draw_seconds)
        stages["pdf"].append(pdf_seconds)
        for key, record_name in PIPELINE_STAGES.items():
            record = result.stage(record_name)
            if record is None:  # a renamed stage must not pass as a stage that never ran
                raise KeyError(f"the analysis has no stage record named {record_name!r}")
            if record.status == OK:
                stages[key].append(record.seconds)
        for record in result.stages:
            pipeline_stages.setdefault(record.name, []).append(record.seconds)
        maps_per_study.append(len(result.maps))
        statuses[result.status] = statuses.get(result.status, 0) + 1
    return {
        "n_studies": len(paths),
        "image_sizes": sorted(sizes),
        "stages": {k: summarise(v) for k, v in stages.items()},
        "pipeline_stage_medians_ms": {k: round(statistics.median(v) * 1000, 2) for k, v in pipeline_stages.items()},
        "maps_per_study": {"mean": round(float(np.mean(maps_per_study)), 2) if maps_per_study else 0,
                           "max": max(maps_per_study, default=0)},
        "statuses": statuses,
        "fusion_available": fusion_available,
    }


def run(context: Context) -> dict:
    """Warm stages over the first `n_studies` generated studies (needs at least one image model)."""
    detector, classifier, tiers = context.models()
    if detector is None and classifier is None:
        return {"error": "no image model available: " + json.dumps(tiers)}
    return run_warm(context.studies()[:context.options.n_studies], detector, classifier)
