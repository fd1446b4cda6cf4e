"""Evaluate report reading against the MeSH major terms human indexers assigned to the Indiana/OpenI reports.

Reports: those shipped in torchxrayvision's wheel with both FINDINGS and IMPRESSION, minus the 60
hand-labelled ones of `tests/data/indiana_labelled.jsonl` and any report with the same text, minus reports
indexed "No Indexing". They are split by the parity of their numeric id ("CXR1234" → 1234):

- even ids: the development half; the lexicon and rules were tuned while reading its errors;
- odd ids: the independent test half; it is run once to report figures, its errors are not printed, and
  nothing is tuned on it (the CLI asks for `--independent-test` before scoring it).

Reference labels come from `medsight.nlp.mesh` (mapping version and definition choices documented there).
Metrics, per finding of `MESH_FINDINGS` and micro-averaged over them:
- strict: the product reads the finding as "present"; lenient: "present" or "uncertain";
  precision / recall / F1 against the mapped MeSH headings;
- normal reports: the product reads the report as normal (`NLPResult.reads_normal()`: nothing present or
  uncertain, no device) vs the indexers' "normal": precision / recall;
- runtime: warm wall-clock per report of `analyze_text(text, classify_conditions=False)` (what reading
  the findings costs) and, over a sample, with the condition classifier.

Usage:
    python -m training.evaluate_nlp_mesh --half even [--show-errors FINDING|normal|all] [--out FILE]
    python -m training.evaluate_nlp_mesh --half odd --independent-test [--record]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LABELLED = PROJECT_ROOT / "tests" / "data" / "indiana_labelled.jsonl"
RESULTS = PROJECT_ROOT / "benchmarks" / "results" / "nlp_mesh.json"
CONDITION_TIMING_REPORTS = 100
# Each report is timed this many times and its fastest run kept (timeit practice), so that other processes on
# a shared machine do not inflate the figure; the single-pass median is reported beside it.
TIMING_REPEAT = 3


def report_number(report_id: str) -> int:
    """Numeric part of an Indiana id ("CXR1234" → 1234)."""
    digits = re.sub(r"\D", "", report_id)
    if not digits:
        raise ValueError(f"report id without a number: {report_id!r}")
    return int(digits)


def select_reports(half: str) -> list[dict]:
    """The evaluation reports of one half ("even" or "odd"), in id order (see module docstring)."""
    from medsight.nlp.indiana import load_indiana_reports, report_text
    from medsight.nlp.mesh import mesh_indexed

    if half not in ("even", "odd"):
        raise ValueError(f"half must be 'even' or 'odd', got {half!r}")
    labelled_ids, labelled_texts = set(), set()
    with open(LABELLED, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                record = json.loads(line)
                labelled_ids.add(record["id"])
                labelled_texts.add(record["text"].strip())
    parity = 0 if half == "even" else 1
    out = []
    for report in load_indiana_reports():
        if not (report["findings"] and report["impression"]) or not mesh_indexed(report["mesh"]):
            continue
        text = report_text(report)
        if report["id"] in labelled_ids or text.strip() in labelled_texts:
            continue
        if report_number(report["id"]) % 2 == parity:
            out.append(dict(report, text=text))
    return out


def _prf(tp: int, fp: int, fn: int) -> dict:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "support": tp + fn, "tp": tp, "fp": fp, "fn": fn}


def evaluate(reports: list[dict], keep_errors: bool = True, repeat: int = TIMING_REPEAT) -> dict:
    """Score `analyze_text` on `reports` against their MeSH terms; returns metrics (and errors if kept)."""
    from medsight.nlp import analyze_text
    from medsight.nlp.mesh import MESH_FINDINGS, MESH_MAPPING_VERSION, mesh_findings, mesh_normal

    if not reports:
        raise ValueError("no reports to evaluate")
    analyze_text(reports[0]["text"], classify_conditions=False)  # load the pipeline before timing
    counts = {mode: {f: [0, 0, 0] for f in MESH_FINDINGS} for mode in ("strict", "lenient")}
    normal = [0, 0, 0]
    errors: list[dict] = []
    samples = []
    cpu0 = time.process_time()
    tier = None
    for report in reports:
        start = time.perf_counter()
        result = analyze_text(report["text"], classify_conditions=False)
        samples.append((time.perf_counter() - start) * 1000)
        tier = result.tier.get("entities")
        status = result.finding_status()
        gold = mesh_findings(report["mesh"])
        for finding in MESH_FINDINGS:
            pred = status.get(finding)
            for mode, positive in (("strict", {"present"}), ("lenient", {"present", "uncertain"})):
                p, g = pred in positive, finding in gold
                c = counts[mode][finding]
                c[0] += p and g
                c[1] += p and not g
                c[2] += g and not p
            if keep_errors and (pred == "present") != (finding in gold):
                errors.append({"id": report["id"], "finding": finding, "gold": finding in gold,
                               "predicted": pred, "mesh": report["mesh"], "text": report["text"]})
        g_normal, p_normal = mesh_normal(report["mesh"]), result.reads_normal()
        normal[0] += g_normal and p_normal
        normal[1] += p_normal and not g_normal
        normal[2] += g_normal and not p_normal
        if keep_errors and g_normal != p_normal:
            errors.append({"id": report["id"], "finding": "normal", "gold": g_normal, "predicted": p_normal,
                           "mesh": report["mesh"], "text": report["text"],
                           "positive": sorted(n for n, s in status.items() if s != "negated")})
    cpu_ms = (time.process_time() - cpu0) * 1000 / len(reports)
    best = list(samples)
    for _ in range(max(0, repeat - 1)):
        for i, report in enumerate(reports):
            start = time.perf_counter()
            analyze_text(report["text"], classify_conditions=False)
            best[i] = min(best[i], (time.perf_counter() - start) * 1000)
    best.sort()
    per_mode = {}
    for mode, table in counts.items():
        per = {f: _prf(*c) for f, c in table.items()}
        micro = _prf(*(sum(c[i] for c in table.values()) for i in range(3)))
        macro = round(statistics.mean(p["f1"] for p in per.values()), 4)
        per_mode[mode] = {"micro": micro, "macro_f1": macro, "per_finding": per}
    samples.sort()
    metrics = {
        "reports": len(reports),
        "mesh_mapping_version": MESH_MAPPING_VERSION,
        "findings": list(MESH_FINDINGS),
        "entities_tier": tier,
        **per_mode,
        "normal_reports": {**_prf(*normal), "indexed_normal": normal[0] + normal[2],
                           "read_normal": normal[0] + normal[1]},
        "runtime_ms": {
            "what": f"analyze_text(text, classify_conditions=False), warm, wall clock per report; median/p95 of "
                    f"each report's fastest of {max(1, repeat)} runs, single_pass_* of the first run",
            "median": round(statistics.median(best), 2), "p95": round(best[int(0.95 * (len(best) - 1))], 2),
            "single_pass_median": round(statistics.median(samples), 2),
            "single_pass_p95": round(samples[int(0.95 * (len(samples) - 1))], 2), "cpu_mean": round(cpu_ms, 2),
        },
    }
    if keep_errors:
        metrics["errors"] = errors
    return metrics


def time_with_conditions(reports: list[dict], n: int = CONDITION_TIMING_REPORTS) -> dict:
    """Warm median of the full `analyze_text` (with the 20-condition classifier) over `n` reports."""
    from medsight.nlp import analyze_text

    texts = [r["text"] for r in reports[:n]]
    result = analyze_text(texts[0])
    samples = []
    for text in texts:
        start = time.perf_counter()
        analyze_text(text)
        samples.append((time.perf_counter() - start) * 1000)
    return {"what": "analyze_text(text) with the condition classifier, warm, wall clock per report",
            "conditions_method": result.tier.get("method"), "reports": len(samples),
            "median": round(statistics.median(samples), 2), "mean": round(statistics.mean(samples), 2)}


def summary(metrics: dict) -> dict:
    """The headline figures (without the error listing)."""
    return {k: v for k, v in metrics.items() if k != "errors"}


def print_table(metrics: dict, out=None) -> None:
    """The figures as a table (per finding strict and lenient P/R/F1, micro, normal reports, runtime)."""
    out = out or sys.stdout
    strict, lenient = metrics["strict"], metrics["lenient"]
    print(f"{metrics['reports']} reports, MeSH mapping v{metrics['mesh_mapping_version']}, "
          f"entities tier {metrics['entities_tier']}", file=out)
    print(f"{'finding':<14}{'support':>8}  {'strict P/R/F1':>20}  {'lenient P/R/F1':>20}", file=out)
    for f in metrics["findings"]:
        s, l_ = strict["per_finding"][f], lenient["per_finding"][f]
        print(f"{f:<14}{s['support']:>8}  {s['precision']:.3f}/{s['recall']:.3f}/{s['f1']:.3f}  "
              f"{l_['precision']:.3f}/{l_['recall']:.3f}/{l_['f1']:.3f}", file=out)
    s, l_ = strict["micro"], lenient["micro"]
    print(f"{'micro':<14}{s['support']:>8}  {s['precision']:.3f}/{s['recall']:.3f}/{s['f1']:.3f}  "
          f"{l_['precision']:.3f}/{l_['recall']:.3f}/{l_['f1']:.3f}", file=out)
    n = metrics["normal_reports"]
    print(f"normal reports: precision {n['precision']:.3f} recall {n['recall']:.3f} "
          f"({n['indexed_normal']} indexed normal, {n['read_normal']} read normal)", file=out)
    r = metrics["runtime_ms"]
    print(f"runtime per report: median {r['median']} ms, p95 {r['p95']} ms (fastest of repeated runs); single pass "
          f"median {r['single_pass_median']} ms; cpu mean {r['cpu_mean']} ms", file=out)


def record(half: str, metrics: dict, path: Path = RESULTS) -> None:
    """Store one half's figures in the results JSON (the other half's entry is kept)."""
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    data.setdefault("description", "Report reading (medsight.nlp rules tier) vs the MeSH major terms of the "
                                   "Indiana/OpenI reports; produced by python -m training.evaluate_nlp_mesh")
    data[half] = {**summary(metrics), "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
                  "load_average_1min": round(os.getloadavg()[0], 2)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--half", choices=("even", "odd"), default="even",
                        help="which half of the reports (default: %(default)s, the development half)")
    parser.add_argument("--independent-test", action="store_true",
                        help="confirm scoring the reserved odd half (run once, after tuning is finished)")
    parser.add_argument("--show-errors", metavar="FINDING",
                        help="even half only: print the disagreements for one finding, 'normal', or 'all'")
    parser.add_argument("--limit", type=int, help="score only the first N reports of the half")
    parser.add_argument("--repeat", type=int, default=TIMING_REPEAT,
                        help="timing runs per report, fastest kept (default: %(default)s)")
    parser.add_argument("--with-conditions", action="store_true",
                        help=f"also time the full analyze_text on {CONDITION_TIMING_REPORTS} reports")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON instead of a table")
    parser.add_argument("--out", help="also write the metrics JSON (even half: with its errors) here")
    parser.add_argument("--record", action="store_true", help=f"store the figures in {RESULTS.relative_to(PROJECT_ROOT)}")
    args = parser.parse_args(argv)
    if args.half == "odd" and not args.independent_test:
        print("error: the odd half is reserved for independent testing; pass --independent-test to score it "
              "once, after tuning on the even half is finished", file=sys.stderr)
        return 2
    if args.half == "odd" and args.show_errors:
        print("error: errors of the odd half are not shown (it is the independent test half)", file=sys.stderr)
        return 2
    try:
        reports = select_reports(args.half)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.limit:
        reports = reports[: args.limit]
    keep = args.half == "even"
    metrics = evaluate(reports, keep_errors=keep, repeat=args.repeat)
    if args.with_conditions:
        metrics["runtime_with_conditions_ms"] = time_with_conditions(reports)
    if args.json:
        print(json.dumps(summary(metrics), indent=2))
    else:
        print_table(metrics)
    if args.show_errors:
        for e in metrics.get("errors", []):
            if args.show_errors in ("all", e["finding"]):
                extra = f" positive={e['positive']}" if "positive" in e else ""
                print(f"\n{e['id']} {e['finding']} gold={e['gold']} predicted={e['predicted']} mesh={e['mesh']}{extra}\n"
                      f"  {e['text']}")
    if args.out:
        Path(args.out).write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    if args.record:
        record(args.half, metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())
