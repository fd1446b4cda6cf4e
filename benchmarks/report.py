"""The benchmark's output: the results JSON and the table printed at the end of a run."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.common import lookup


def write_results(results: dict, out: Path) -> None:
    """Write the results as indented JSON (creating the folder)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")


def load_average_line(results: dict, out: Path) -> str:
    """The closing line: load average at the start and end of the run, and where the JSON went."""
    return (f"Load average start {results['machine'].get('load_average_start')} → end "
            f"{results['machine'].get('load_average_end')}. JSON: {out}")


def format_table(results: dict) -> str:
    """The printed summary: targets, warm stages, network efficiency, cold start and similar cases."""
    lines = [f"{'Target':<52} {'target':>16} {'measured':>12}  met", "-" * 88]
    for row in results["targets"]:
        measured = "—" if row["measured"] is None else f"{row['measured']:g} {row['unit']}"
        met = {True: "yes", False: "NO", None: "n/a"}[row["met"]]
        lines.append(f"{row['title']:<52} {row['target']:>16} {measured:>12}  {met}")
    stages = lookup(results, "warm", "stages") or {}
    if stages:
        lines += ["", f"{'Warm stage':<20} {'median ms':>10} {'p95 ms':>10} {'n':>4}", "-" * 48]
        for name, s in stages.items():
            if s.get("n"):
                lines.append(f"{name:<20} {s['median_ms']:>10.1f} {s['p95_ms']:>10.1f} {s['n']:>4}")
    eff = results.get("efficiency") or {}
    if isinstance(eff, dict) and "error" not in eff:
        matmul = lookup(results, "matmul", "best_gflops")
        lines += ["", f"Matmul fp32: {matmul} GFLOP/s (best), {lookup(results, 'matmul', 'threads')} threads",
                  f"{'Network':<56} {'GFLOP':>7} {'best ms':>8} {'GFLOP/s':>8} {'ratio':>6}", "-" * 90]
        for item in eff.values():
            if isinstance(item, dict) and "gflops" in item:
                lines.append(f"{item['name']:<56} {item['gflops']:>7.2f} {item['latency']['min_ms']:>8.1f} "
                             f"{item['achieved_gflops_per_s']:>8.1f} {item['efficiency']:>6.2f}")
    for item in (eff.get("alternatives") or []) if isinstance(eff, dict) else []:
        if "latency" in item:
            lines.append(f"  {item['name']:<54} {'':>7} {item['latency']['min_ms']:>8.1f} "
                         f"{item['achieved_gflops_per_s']:>8.1f} {item['efficiency']:>6.2f}  "
                         f"(max |Δ| {item['max_abs_diff_vs_eager']:.1e})")
    cold = results.get("cold_start") or {}
    if "parts" in cold:
        parts = ", ".join(f"{k.removesuffix('_s').replace('_', ' ')} {v:.2f} s" for k, v in cold["parts"].items())
        lines += ["", f"Cold start {cold['total_s']:.2f} s: {parts}"]
    for row in lookup(results, "retrieval", "sizes") or []:
        lines.append(f"Similar cases n={row['n']:>6}: p50 {row['p50_ms']:.1f} ms, p95 {row['p95_ms']:.1f} ms, "
                     f"recall@10 {row['recall_at_10']:.2f}"
                     + (f" (exact; first query {row['first_query_ms']:.0f} ms)" if "first_query_ms" in row else ""))
        if isinstance(row.get("hnsw"), dict):
            hnsw = row["hnsw"]
            lines.append(f"  Chroma HNSW n={row['n']:>6}: p50 {hnsw['p50_ms']:.1f} ms, p95 {hnsw['p95_ms']:.1f} ms, "
                         f"recall@10 {hnsw['recall_at_10']:.2f}")
    return "\n".join(lines)
