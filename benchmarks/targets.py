"""The benchmark's targets on a 2-core CPU and how each is read from a run's results."""

from __future__ import annotations

from benchmarks.common import lookup

#: key → (title, comparison, target value, unit), in the order of the README table.
TARGETS = {
    "warm_full_analysis": ("Warm full analysis of one study (median)", "<=", 1.0, "s"),
    "vgg16_efficiency": ("VGG16 features stage, fraction of matmul FLOP/s", ">=", 0.9, "×"),
    "densenet121_efficiency": ("DenseNet-121 stage, fraction of matmul FLOP/s", ">=", 0.5, "×"),
    "cold_start": ("Cold start → first full result", "<=", 15.0, "s"),
    "peak_rss": ("Peak RSS, all local models loaded", "<=", 2.0, "GB"),
    "similar_case_p95": ("Similar-case top-10 at 100k vectors, p95", "<=", 20.0, "ms"),
    "batch_throughput": ("Batch anomaly scoring of a folder", ">=", 6.0, "images/s"),
    "fullsize_warm_median": ("Warm analysis of a 2k × 2.5k DICOM film, key maps (median)", "<=", 0.4, "s"),
    "fullsize_warm_p95": ("Warm analysis of a 2k × 2.5k DICOM film, key maps (p95)", "<=", 0.6, "s"),
}


def measured_values(results: dict) -> dict:
    """Each target's measured value in its unit (None when not measured in this run)."""
    retrieval_100k = next((r for r in lookup(results, "retrieval", "sizes") or [] if r.get("n") == 100_000), None)
    full_ms = lookup(results, "warm", "stages", "full_analysis", "median_ms")
    rss_mb = lookup(results, "memory", "peak_rss_mb_all")
    film = lookup(results, "fullsize", "inputs", "dicom_2000x2500", "full_analysis") or {}
    return {
        "warm_full_analysis": full_ms / 1000 if full_ms is not None else None,
        "vgg16_efficiency": lookup(results, "efficiency", "vgg16_features", "efficiency"),
        "densenet121_efficiency": lookup(results, "efficiency", "densenet121", "efficiency"),
        "cold_start": lookup(results, "cold_start", "total_s"),
        "peak_rss": rss_mb * 2**20 / 1e9 if rss_mb is not None else None,
        "similar_case_p95": retrieval_100k["p95_ms"] if retrieval_100k else None,
        "batch_throughput": lookup(results, "batch", "anomaly_only", "images_per_second"),
        "fullsize_warm_median": film["median_ms"] / 1000 if "median_ms" in film else None,
        "fullsize_warm_p95": film["p95_ms"] / 1000 if "p95_ms" in film else None,
    }


def target_rows(results: dict) -> list[dict]:
    """One row per target: title, target, measured, met (None when not measured in this run)."""
    measured = measured_values(results)
    rows = []
    for key, (title, op, target, unit) in TARGETS.items():
        value = measured[key]
        met = None if value is None else (value <= target if op == "<=" else value >= target)
        rows.append({"key": key, "title": title, "target": f"{'≤' if op == '<=' else '≥'} {target:g} {unit}",
                     "target_value": target,
                     "comparison": op, "unit": unit, "measured": None if value is None else round(float(value), 3),
                     "met": met})
    return rows
