"""Do suggested edits leave a report coherent? Apply every edit to real Indiana/OpenI reports and re-parse.

For each report (FINDINGS and IMPRESSION both present), one or two findings of the image label set that
the report does not state are drawn (seeded per report) and given to the verifier as positive image-model
findings on a drawn side. Every suggested edit is accepted; the edited report is parsed again by the
product's NLP stage and checked with `medsight.verify.coherence.find_contradictions` (a finding stated
and, elsewhere, denied by "the lungs are clear" / "no acute cardiopulmonary process" / "normal chest", or
negated on the same side). A report counts as made contradictory when the edited report contradicts itself
about a finding the original did not contradict itself about. The flagged findings should also end up stated:
that is counted too, so that suggesting nothing cannot score well.

Example:
    python -m training.evaluate_edit_coherence --limit 1000 --out benchmarks/results/edit_coherence.json
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path

LABELS = ("consolidation", "nodule", "effusion", "pneumothorax", "cardiomegaly")
UNSIDED = {"cardiomegaly"}


def flagged_findings(report_id: str, stated: set[str], seed: int) -> dict[str, str | None]:
    """One or two labels the report does not state, each with a side (None for cardiomegaly)."""
    rng = random.Random(f"{seed}:{report_id}")
    pool = [label for label in LABELS if label not in stated]
    chosen = rng.sample(pool, k=min(len(pool), rng.choice((1, 2))))
    return {f: (None if f in UNSIDED else rng.choice(("left", "right"))) for f in chosen}


def analysis_with(flagged: dict[str, str | None]) -> dict:
    """An analysis dict (the pipeline's shape) whose pathology model flags exactly `flagged`."""
    return {"pathology": {
        "labels": list(LABELS), "probabilities": {l: (0.9 if l in flagged else 0.05) for l in LABELS},
        "thresholds": {l: 0.5 for l in LABELS}, "positives": sorted(flagged), "tier": "demo",
        "laterality": {f: s for f, s in flagged.items() if s}}}


def evaluate(limit: int | None = None, seed: int = 0, examples: int = 5) -> dict:
    from medsight.nlp.indiana import LICENSE, load_indiana_reports, report_text
    from medsight.verify import apply_edits, parse_report, verify_report
    from medsight.verify.coherence import find_contradictions
    from medsight.verify.discrepancies import related

    reports = [r for r in load_indiana_reports() if r["findings"] and r["impression"]]
    if limit:
        reports = reports[:limit]
    start = time.perf_counter()
    counts = dict(reports=0, edits=0, linked_edits=0, contradictory_before=0, contradictory_after=0,
                  made_contradictory=0, flagged=0, flagged_stated_after=0)
    bad: list[dict] = []
    for report in reports:
        text = report_text(report)
        facts = parse_report(text)
        flagged = flagged_findings(report["id"], facts.positive(), seed)
        if not flagged:
            continue
        analysis = analysis_with(flagged)
        result = verify_report(text, analysis)
        edited = apply_edits(text, result.edits, [e.id for e in result.edits])
        after = parse_report(edited)
        before_set = {c.finding for c in find_contradictions(facts)}
        after_list = find_contradictions(after)
        new = [c for c in after_list if c.finding not in before_set]
        counts["reports"] += 1
        counts["edits"] += len(result.edits)
        counts["linked_edits"] += sum(bool(getattr(e, "applies_with", None)) for e in result.edits)
        counts["contradictory_before"] += bool(before_set)
        counts["contradictory_after"] += bool(after_list)
        counts["made_contradictory"] += bool(new)
        counts["flagged"] += len(flagged)
        counts["flagged_stated_after"] += sum(after.status_any(related(f)) in ("present", "uncertain") for f in flagged)
        if new and len(bad) < examples:
            bad.append({"id": report["id"], "flagged": flagged, "edited": edited,
                        "contradictions": [c.message for c in new]})
    n = max(counts["reports"], 1)
    return {
        "what": "suggested edits applied in full to real reports against generated positive image findings; "
                "contradictions found by re-parsing with the product's NLP stage",
        "data": f"Indiana/OpenI reports with FINDINGS and IMPRESSION ({LICENSE})",
        "seed": seed, "limit": limit, **counts,
        "made_contradictory_rate": round(counts["made_contradictory"] / n, 4),
        "flagged_stated_after_rate": round(counts["flagged_stated_after"] / max(counts["flagged"], 1), 4),
        "examples_made_contradictory": bad,
        "seconds": round(time.perf_counter() - start, 1),
        "machine": f"{platform.machine()} {platform.system()}, python {platform.python_version()}",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate_edit_coherence", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="first N reports with both sections (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    try:
        figures = evaluate(args.limit, args.seed)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(figures, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    keys = ("reports", "edits", "contradictory_before", "made_contradictory", "made_contradictory_rate",
            "flagged_stated_after_rate", "seconds")
    print(json.dumps({k: figures[k] for k in keys}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
