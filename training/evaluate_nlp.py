"""Evaluate the clinical NLP on hand-labelled Indiana/OpenI chest X-ray reports.

The test set (`tests/data/indiana_labelled.jsonl`) holds 60 reports from the Indiana University collection
shipped inside torchxrayvision (FINDINGS + IMPRESSION text), in two splits:
- "dev" (40): 26 drawn at random from reports whose MeSH terms are not "normal", 14 from "normal" ones;
  the lexicon and rules were refined while looking at these, so their figures are optimistic;
- "heldout" (20): drawn at random from not-"normal" reports after the rules were fixed, labelled before
  the system was run on them, and not used to change the rules. Quote these figures.
Each report was read and labelled by hand, per canonical finding in `EVAL_FINDINGS`, as "present",
"negated" or "uncertain", with these conventions:

- a finding asserted anywhere in the report is "present" (also when small, stable, chronic or old);
  otherwise "uncertain" if only hedged ("borderline", "possibly", "X or Y", "upper limits of normal");
  otherwise "negated" if explicitly denied ("no X", "without X", "X has resolved");
- "heart size normal" / "normal cardiac contours" deny cardiomegaly; "mediastinal contours normal"
  denies enlarged cardiomediastinum; "cardiomediastinal silhouette normal" / "heart and mediastinum
  normal" deny both;
- "airspace disease" / "airspace opacity" is consolidation; "interstitial lung disease" is fibrosis;
  "failure" (heart failure) is edema; "hyperexpanded" lungs is hyperinflation;
- findings not named in the text ("lungs are clear", "no acute disease") are not labelled.

Metrics (over report × finding pairs restricted to `EVAL_FINDINGS`):
- detection: is the finding mentioned at all (any status)? precision / recall / F1;
- positive findings: gold "present" vs predicted "present": precision / recall / F1;
- negation: of the findings both mention, how often the status (present / negated / uncertain) agrees
  ("negation_accuracy"), and precision / recall of "negated".

Usage:
    python -m training.evaluate_nlp [--data tests/data/indiana_labelled.jsonl] [--out results.json]
                                    [--timing-reports 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = PROJECT_ROOT / "tests" / "data" / "indiana_labelled.jsonl"

EVAL_FINDINGS = (
    "consolidation", "pneumonia", "infiltration", "atelectasis", "effusion", "pneumothorax", "edema",
    "emphysema", "fibrosis", "cardiomegaly", "nodule", "mass", "lung_lesion", "hernia", "fracture",
    "lung_opacity", "pleural_thickening", "enlarged_cardiomediastinum", "granuloma", "scarring",
    "hyperinflation", "adenopathy", "pneumoperitoneum", "tuberculosis",
)
STATUSES = ("present", "negated", "uncertain")


def load_labelled(path: str | Path = DEFAULT_DATA) -> list[dict]:
    """Read the labelled JSONL ({id, text, labels: {finding: status}} per line).

    Raises:
        FileNotFoundError: when the file is missing.
        ValueError: on a malformed line or an unknown finding/status.
    """
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc})") from None
            for finding, status in record.get("labels", {}).items():
                if finding not in EVAL_FINDINGS or status not in STATUSES:
                    raise ValueError(f"{path}:{number}: unknown label {finding}={status}")
            records.append(record)
    return records


def _prf(tp: int, fp: int, fn: int) -> dict:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "tp": tp, "fp": fp, "fn": fn}


def predict(text: str, classify_conditions: bool = False) -> tuple[dict[str, str], dict]:
    """Predicted {finding: status} restricted to EVAL_FINDINGS, and the full result dict.

    Findings come from the entity pipeline alone; the condition classifier does not change them, so it
    is skipped unless asked for (then the timings include it).
    """
    from medsight.nlp import analyze_text

    result = analyze_text(text, classify_conditions=classify_conditions)
    status = {name: s for name, s in result.finding_status().items() if name in EVAL_FINDINGS}
    return status, result.to_dict()


def evaluate(records: list[dict], classify_conditions: bool = False) -> dict:
    """Score predictions against the gold labels (see module docstring for the metrics)."""
    counts = {"detect": [0, 0, 0], "present": [0, 0, 0], "negated": [0, 0, 0]}
    agree = both = 0
    confusion = {g: {p: 0 for p in STATUSES + ("missed",)} for g in STATUSES}
    errors = []
    timings = []
    tier = None
    for record in records:
        gold = record["labels"]
        pred, full = predict(record["text"], classify_conditions)
        timings.append(full["timings"]["total_ms"])
        tier = full["tier"]
        for finding in set(gold) | set(pred):
            g, p = gold.get(finding), pred.get(finding)
            if g and p:
                counts["detect"][0] += 1
                both += 1
                agree += g == p
                confusion[g][p] += 1
            elif p:
                counts["detect"][1] += 1
            else:
                counts["detect"][2] += 1
                confusion[g]["missed"] += 1
            for status in ("present", "negated"):
                if g == status and p == status:
                    counts[status][0] += 1
                elif p == status:
                    counts[status][1] += 1
                elif g == status:
                    counts[status][2] += 1
            if g != p:
                errors.append({"id": record["id"], "finding": finding, "gold": g, "predicted": p})
    return {
        "reports": len(records),
        "gold_labels": sum(len(r["labels"]) for r in records),
        "detection": _prf(*counts["detect"]),
        "present": _prf(*counts["present"]),
        "negated": _prf(*counts["negated"]),
        "negation_accuracy": round(agree / both, 4) if both else 0.0,
        "status_confusion": confusion,
        "errors": errors,
        "tier": tier,
        "timing_ms_labelled": {"mean": round(statistics.mean(timings), 2), "median": round(statistics.median(timings), 2)}
        if timings else {},
    }


def time_reports(n: int) -> dict:
    """Warm analyze_text latency (with conditions) over the last `n` Indiana reports."""
    from medsight.nlp import analyze_text
    from medsight.nlp.indiana import load_indiana_reports, report_text

    texts = [report_text(r) for r in load_indiana_reports() if r["findings"] or r["impression"]][-n:]
    analyze_text(texts[0])  # load models before timing
    samples = []
    cpu_start = time.process_time()
    for text in texts:
        start = time.perf_counter()
        analyze_text(text)
        samples.append((time.perf_counter() - start) * 1000)
    cpu_ms = (time.process_time() - cpu_start) * 1000 / max(1, len(texts))
    samples.sort()
    # wall-clock suffers when the machine is shared; process CPU time per report is reported beside it
    return {"reports": len(samples), "cpu_ms_mean": round(cpu_ms, 2), "mean_ms": round(statistics.mean(samples), 2),
            "median_ms": round(statistics.median(samples), 2),
            "p95_ms": round(samples[int(0.95 * (len(samples) - 1))], 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="labelled JSONL (default: %(default)s)")
    parser.add_argument("--out", help="also write the metrics JSON here")
    parser.add_argument("--timing-reports", type=int, default=0,
                        help="also time analyze_text on this many unlabelled Indiana reports")
    parser.add_argument("--split", choices=("all", "dev", "heldout"), default="all",
                        help="which labelled split to score (default: %(default)s, also reported per split)")
    parser.add_argument("--with-conditions", action="store_true",
                        help="also run the condition classifier (timings then include it)")
    parser.add_argument("--show-errors", action="store_true", help="print every disagreement")
    args = parser.parse_args(argv)
    try:
        records = load_labelled(args.data)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.split != "all":
        records = [r for r in records if r.get("split") == args.split]
    metrics = evaluate(records, args.with_conditions)
    if args.split == "all":
        metrics["per_split"] = {
            split: {k: v for k, v in evaluate([r for r in records if r.get("split") == split]).items()
                    if k in ("reports", "gold_labels", "detection", "present", "negated", "negation_accuracy")}
            for split in sorted({r.get("split", "") for r in records})
        }
    if args.timing_reports > 0:
        metrics["timing_unlabelled"] = time_reports(args.timing_reports)
    shown = dict(metrics) if args.show_errors else {k: v for k, v in metrics.items() if k != "errors"}
    if not args.show_errors:
        shown["errors"] = len(metrics["errors"])
    print(json.dumps(shown, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
