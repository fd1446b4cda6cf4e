"""Cold-start probe, run in a fresh process by `benchmarks.run`: imports → models → first result → memory.

    python -m benchmarks.cold --study models/samples/effusion_left_pa.dcm --out cold.json [--all-models]

Writes wall-clock timestamps (time.time(), comparable with the parent's spawn time) of each phase, the
model tiers, the first analysis's stage times and the peak resident set size. With ``--all-models`` it then
loads every other registered model slot that is available locally (text embedder, language model, speech
model, ...) and records the peak RSS again: the "all local models loaded" figure.

Only the standard library is imported before the first timestamp, so interpreter start-up is measured
apart from the product's imports.
"""

from __future__ import annotations

import time

T_MAIN = time.time()

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402

ANALYSIS_SLOTS = ("anomaly.detector", "pathology.classifier", "nlp.entities", "nlp.conditions")


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports ru_maxrss in KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kib / 1024.0 if sys.platform != "darwin" else kib / 2**20, 1)


def current_rss_mb() -> float:
    import psutil

    return round(psutil.Process().memory_info().rss / 2**20, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cold")
    parser.add_argument("--study", required=True, help="sample study file (PNG/JPEG/DICOM)")
    parser.add_argument("--symptoms", default="")
    parser.add_argument("--out", required=True, help="JSON output file")
    parser.add_argument("--all-models", action="store_true", help="then load every locally available slot")
    args = parser.parse_args(argv)
    out: dict = {"t_main": T_MAIN}

    # Imports: what the app needs for an analysis.
    import medsight.explain.anomaly_map  # noqa: F401
    import medsight.explain.gradcam  # noqa: F401
    import medsight.models.anomaly  # noqa: F401
    import medsight.models.pathology  # noqa: F401
    import medsight.nlp  # noqa: F401
    from medsight import registry
    from medsight.ingest import load_study
    from medsight.pipeline import run_analysis

    try:
        import medsight.fusion  # noqa: F401
    except ImportError as exc:
        out["fusion_import_error"] = str(exc)
    out["t_imports"] = time.time()

    import torch

    out["torch_threads"] = torch.get_num_threads()
    models: dict[str, dict] = {}
    for slot in ANALYSIS_SLOTS:
        start = time.time()
        try:
            loaded = registry.load(slot)
            models[slot] = {"tier": loaded.provenance.tier, "seconds": round(time.time() - start, 3),
                            "source": loaded.provenance.source_label}
        except registry.ModelUnavailable as exc:
            models[slot] = {"tier": "unavailable", "seconds": round(time.time() - start, 3),
                            "error": str(exc).splitlines()[0]}
    out["models"] = models
    out["t_models"] = time.time()

    detector = registry.load("anomaly.detector").model if models["anomaly.detector"]["tier"] != "unavailable" else None
    classifier = (registry.load("pathology.classifier").model
                  if models["pathology.classifier"]["tier"] != "unavailable" else None)
    start = time.time()
    study = load_study(args.study)
    out["ingest_seconds"] = round(time.time() - start, 3)
    result = run_analysis(study, args.symptoms, detector=detector, classifier=classifier, maps="key")
    out["t_first_result"] = time.time()
    out["first_result"] = {
        "status": result.status,
        "stages": [{"name": s.name, "status": s.status, "seconds": s.seconds, "message": s.message[:200]}
                   for s in result.stages],
        "maps": sorted(result.maps),
    }
    out["peak_rss_mb_analysis"] = peak_rss_mb()
    out["rss_mb_analysis"] = current_rss_mb()

    if args.all_models:
        extra: dict[str, dict] = {}
        for slot in registry.all_slots():
            if slot.name in ANALYSIS_SLOTS:
                continue
            start = time.time()
            try:
                loaded = registry.load(slot.name)
                extra[slot.name] = {"tier": loaded.provenance.tier, "seconds": round(time.time() - start, 3),
                                    "rss_delta_mb": loaded.provenance.rss_delta_mb}
            except registry.ModelUnavailable as exc:
                extra[slot.name] = {"tier": "unavailable", "seconds": round(time.time() - start, 3),
                                    "error": str(exc).splitlines()[0]}
            except Exception as exc:  # noqa: BLE001 - a broken optional slot must not hide the memory figure
                extra[slot.name] = {"tier": "failed", "error": f"{type(exc).__name__}: {exc}"[:300]}
        out["other_models"] = extra
        out["peak_rss_mb_all"] = peak_rss_mb()
        out["rss_mb_all"] = current_rss_mb()
    out["t_end"] = time.time()
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(out, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
