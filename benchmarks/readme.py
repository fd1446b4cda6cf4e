"""Regenerate the "Performance" section of README.md from a benchmark JSON.

    python -m benchmarks.readme [--results benchmarks/results/latest.json] [--readme README.md] [--check]

Only the text between the markers ``<!-- perf:start -->`` and ``<!-- perf:end -->`` is replaced; when they
are missing they are appended at the end of README.md with the section between them. Running it twice
gives the same file. ``--check`` exits 1 when README.md is not up to date with the JSON (for CI).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- perf:start -->", "<!-- perf:end -->"
DEFAULT_RESULTS = ROOT / "benchmarks" / "results" / "latest.json"
DEFAULT_README = ROOT / "README.md"

STAGE_NAMES = {
    "ingest": "Ingest (read, decode, window)",
    "anomaly": "Anomaly score",
    "pathology": "Pathology classifier",
    "maps": "Maps (anomaly map + Grad-CAM of positives)",
    "nlp": "Clinical NLP (symptom text)",
    "fusion": "Fusion",
    "map_display": "Draw one map for display (three panels + PNG, per map)",
    "pdf": "PDF report (maps already drawn)",
    "full_analysis": "Whole warm analysis (ingest → fusion)",
}


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        text = f"{value:.{digits}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text  # 170 stays 170, 1.50 becomes 1.5
    return str(value)


def render_section(results: dict) -> str:
    """Markdown for the Performance section (deterministic for a given JSON)."""
    machine = results.get("machine") or {}
    lines = [
        "## Performance",
        "",
        f"Measured by `python -m benchmarks.run` ({results.get('mode', '?')} run, {results.get('created', '?')}, "
        f"commit {machine.get('git_commit') or '?'}) on {machine.get('logical_cpus', '?')} CPU cores "
        f"({machine.get('cpu', '?')}), torch {machine.get('torch', '?')} with {machine.get('torch_threads', '?')} "
        f"threads, load average {machine.get('load_average_start', '?')} at the start. Model tiers: "
        + ", ".join(f"{k} {v}" for k, v in sorted((results.get("model_tiers") or {}).items())) + ". "
        "Method and caveats: [benchmarks/README.md](benchmarks/README.md); raw figures: "
        "`benchmarks/results/latest.json`.",
        "",
        "| Target (2-core CPU) | Target | Measured | Met |",
        "|---|---|---|---|",
    ]
    for row in results.get("targets") or []:
        measured = "not measured" if row.get("measured") is None else f"{_fmt(row['measured'], 3)} {row['unit']}"
        met = {True: "yes", False: "**no**", None: "—"}[row.get("met")]
        lines.append(f"| {row['title']} | {row['target']} | {measured} | {met} |")
    stages = ((results.get("warm") or {}).get("stages")) or {}
    if stages:
        warm = results["warm"]
        lines += ["", f"Warm latency per stage over {warm.get('n_studies', '?')} generated studies "
                      f"({', '.join(warm.get('image_sizes') or [])} px, half PNG, half DICOM):", "",
                  "| Stage | Median (ms) | p95 (ms) |", "|---|---|---|"]
        for key, stats in stages.items():
            if stats.get("n"):
                lines.append(f"| {STAGE_NAMES.get(key, key)} | {_fmt(stats['median_ms'], 1)} | {_fmt(stats['p95_ms'], 1)} |")
    efficiency = results.get("efficiency") or {}
    matmul = results.get("matmul") or {}
    if isinstance(efficiency, dict) and any(isinstance(v, dict) and "gflops" in v for v in efficiency.values()):
        lines += ["", f"Compute efficiency: achieved FLOP/s of each network's forward pass (batch 1, FLOPs = 2 × "
                      f"multiply-accumulates) ÷ this machine's dense fp32 matmul rate "
                      f"({_fmt(matmul.get('best_gflops'), 1)} GFLOP/s):", "",
                  "| Network | Runtime (as the product runs it) | GFLOPs | Latency (ms, best) | GFLOP/s | Fraction of "
                  "matmul | PyTorch eager fraction |", "|---|---|---|---|---|---|---|"]
        for item in efficiency.values():
            if isinstance(item, dict) and "gflops" in item:
                runtime = "ONNX Runtime fp32" if item.get("runtime") == "onnx" else "PyTorch fp32 eager"
                eager = (item.get("pytorch") or {}).get("efficiency", item["efficiency"])
                lines.append(f"| {item['name']} | {runtime} | {_fmt(item['gflops'], 2)} | "
                             f"{_fmt(item['latency']['min_ms'], 1)} | {_fmt(item['achieved_gflops_per_s'], 1)} | "
                             f"{_fmt(item['efficiency'], 2)} | {_fmt(eager, 2)} |")
    cold = results.get("cold_start") or {}
    if "parts" in cold:
        parts = cold["parts"]
        lines += ["", f"Cold start {_fmt(cold['total_s'])} s: interpreter {_fmt(parts.get('interpreter_start_s'))} s, "
                      f"imports {_fmt(parts.get('imports_s'))} s, models {_fmt(parts.get('models_loaded_s'))} s, first "
                      f"result {_fmt(parts.get('first_result_s'))} s. Peak RSS: {_fmt((results.get('memory') or {}).get('peak_rss_mb_analysis'), 0)} MiB "
                      f"with the analysis models, {_fmt((results.get('memory') or {}).get('peak_rss_mb_all'), 0)} MiB with every local model."]
    retrieval = results.get("retrieval") or {}
    if retrieval.get("sizes"):
        rows = "; ".join(f"{r['n']:,}: p50 {_fmt(r['p50_ms'], 1)} ms, p95 {_fmt(r['p95_ms'], 1)} ms, recall@10 "
                         f"{_fmt(r['recall_at_10'], 2)}" for r in retrieval["sizes"])
        method = ("exact search over an in-memory copy of ChromaDB's vectors" if retrieval.get("search", "").startswith("exact")
                  else "ChromaDB HNSW with its defaults")
        lines += ["", f"Similar-case top-10 ({method}, random {retrieval.get('dim')}-d unit vectors, recall against "
                      f"brute force): {rows}."]
        hnsw = "; ".join(f"{r['n']:,}: p95 {_fmt(r['hnsw']['p95_ms'], 1)} ms, recall@10 {_fmt(r['hnsw']['recall_at_10'], 2)}"
                         for r in retrieval["sizes"] if isinstance(r.get("hnsw"), dict))
        if hnsw:
            lines.append(f"ChromaDB's own HNSW search (default settings) on the same stores: {hnsw}.")
        first = [r for r in retrieval["sizes"] if r.get("first_query_ms") is not None]
        if first:
            lines.append("First query in a new process (reads the vectors): "
                         + ", ".join(f"{r['n']:,}: {_fmt(r['first_query_ms'] / 1000, 2)} s" for r in first) + ".")
        variants = "; ".join(
            f"{v.get('vectors', 'random')} vectors, M {v['hnsw'].get('max_neighbors')}, ef_construction "
            f"{v['hnsw'].get('ef_construction')}, ef_search {v['hnsw'].get('ef_search')}: p95 {_fmt(v['p95_ms'], 1)} ms, "
            f"recall@10 {_fmt(v['recall_at_10'], 2)}"
            for v in (retrieval.get("hnsw_variants") or []) + (retrieval.get("hnsw_variants_clustered") or [])
            if "hnsw" in v)
        if variants:
            lines.append(f"Other HNSW settings at {retrieval['hnsw_variants'][0]['n']:,} vectors: {variants}.")
    batch = results.get("batch") or {}
    if "anomaly_only" in batch:
        lines += ["", f"Batch scoring of a folder of {batch.get('files')} studies (`python -m medsight.batch`): "
                      f"{_fmt(batch['anomaly_only']['images_per_second'])} images/s anomaly only, "
                      f"{_fmt(batch.get('anomaly_and_pathology', {}).get('images_per_second'))} images/s with the "
                      "pathology classifier."]
    lines += _fullsize_lines(results.get("fullsize") or {}) + _precision_lines(results.get("precision") or {})
    loads = [f"{name} {results[name]['load_average'][0]:g}" for name in
             ("cold_start", "matmul", "efficiency", "warm", "fullsize", "precision", "batch", "retrieval")
             if isinstance(results.get(name), dict) and results[name].get("load_average")]
    if loads:
        reruns = "; ".join(f"{', '.join(r['sections'])} re-measured at {r['created']}" for r in results.get("rerun") or [])
        lines += ["", "One-minute load average when each section ended (2 cores; the benchmark itself accounts for "
                      f"about 2, anything above that is other work sharing the cores): {', '.join(loads)}."
                      + (f" {reruns}." if reruns else "")]
    notes = results.get("notes") or []
    if notes:
        lines += [""] + [f"- {note}" for note in notes]
    return "\n".join(lines).rstrip() + "\n"


def _fullsize_lines(fullsize: dict) -> list[str]:
    """Warm analysis of full-size films beside the 512 px study, with each stage's share."""
    inputs = fullsize.get("inputs") or {}
    if not inputs:
        return []
    lines = ["", f"Full-size films, warm, key maps, {fullsize.get('runs')} runs each in a fresh process "
                 f"(peak RSS {_fmt(fullsize.get('peak_rss_mb'), 0)} MiB with the analysis models):", "",
             "| Input | Whole analysis median / p95 (ms) | Stage shares of the median | Draw one map (ms) |",
             "|---|---|---|---|"]
    for name, row in inputs.items():
        whole = row.get("full_analysis") or {}
        shares = ", ".join(f"{k.removeprefix('vision: ')} {v:.0%}"
                           for k, v in sorted(row.get("stage_shares", {}).items(), key=lambda kv: -kv[1]) if v >= 0.02)
        lines.append(f"| {row.get('pixels', name)} {name.split('_')[0].upper()} | {_fmt(whole.get('median_ms'), 0)} / "
                     f"{_fmt(whole.get('p95_ms'), 0)} | {shares} | {_fmt((row.get('map_display') or {}).get('median_ms'), 0)} |")
    return lines


def _precision_lines(precision: dict) -> list[str]:
    """bf16 and ONNX Runtime against fp32: speed and the largest score difference."""
    rows = [(model, name, row) for model in ("anomaly_detector", "pathology_classifier")
            for name, row in ((precision.get(model) or {}).get("paths") or {}).items() if name != "fp32"]
    if not rows:
        return []
    lines = ["", f"Faster paths against fp32 eager on {len((precision.get('images') or []))} images (samples, phantoms, "
                 f"the real film RG1); a path becomes the default only within {precision.get('tolerance')} of every "
                 "fp32 score:", "", "| Network | Path | Speed-up (median) | Max score difference |", "|---|---|---|---|"]
    for model, name, row in rows:
        lines.append(f"| {model.replace('_', ' ')} | {name} | {_fmt(row.get('speedup_vs_fp32_median'))}× | "
                     f"{_fmt(row.get('max_score_diff'), 4)} |")
    decision = precision.get("decision") or {}
    if decision:
        lines += ["", "; ".join(f"{k.replace('_', ' ')}: {v.get('qualifies') or 'no faster path'} qualifies, the "
                                f"product runs {v.get('product_runs')}" for k, v in decision.items()) + "."]
    return lines


def update_readme(text: str, section: str) -> str:
    """README text with the section placed between the markers (markers appended when missing)."""
    block = f"{START}\n{section.rstrip()}\n{END}"
    if START in text and END in text and text.index(START) < text.index(END):
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        return head + block + tail
    return text.rstrip("\n") + "\n\n" + block + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.readme", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--readme", type=Path, default=DEFAULT_README)
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is out of date")
    args = parser.parse_args(argv)
    if not args.results.is_file():
        print(f"No benchmark results at {args.results}; run `python -m benchmarks.run` first.", file=sys.stderr)
        return 2
    results = json.loads(args.results.read_text(encoding="utf-8"))
    current = args.readme.read_text(encoding="utf-8") if args.readme.is_file() else ""
    updated = update_readme(current, render_section(results))
    if args.check:
        if updated != current:
            print(f"{args.readme} is out of date; run python -m benchmarks.readme", file=sys.stderr)
            return 1
        return 0
    if updated != current:
        args.readme.write_text(updated, encoding="utf-8")
        print(f"Updated the Performance section of {args.readme}")
    else:
        print(f"{args.readme} already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
