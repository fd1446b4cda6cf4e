"""Score a whole folder of studies (PNG/JPEG/DICOM) and write CSV + JSON results.

The path a site with many studies would use:

    python -m medsight.batch /path/to/studies --out results/ [--no-pathology] [--batch-size 16]

Every study passes the input gate first: a study that is not a frontal chest radiograph is listed as refused
with the gate's reason and is not scored. The domain rule then decides per study which loaded image models can
speak about it; the scores of the others are left empty (never zero) and named in the `withheld` column, with
the reason in `withheld_reason`. Anomaly scores are computed in batches through one VGG16 pass per image; the
pathology classifier runs per image. Files that cannot be read are listed with their reason and do not stop the
run.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from tqdm import tqdm

from medsight import domain, registry
from medsight.deid.metadata import burned_in_warning
from medsight.gate import check_study
from medsight.ingest import IngestError, load_study

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm", ".dicom", ""}


@dataclass
class BatchRow:
    file: str
    study_id: str = ""
    status: str = "ok"
    message: str = ""
    warning: str = ""
    gate: str = ""
    withheld: str = ""
    withheld_reason: str = ""
    anomaly_score: float | None = None
    threshold: float | None = None
    anomalous: bool | None = None
    positives: str = ""
    probabilities: dict = field(default_factory=dict)


def find_studies(folder: Path) -> list[Path]:
    """Image and DICOM files under `folder` (recursively; DICOMs may have no extension)."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def score_folder(files: Iterable[Path], *, batch_size: int = 16, pathology: bool = True,
                 progress: bool = True) -> tuple[list[BatchRow], dict]:
    """Score files; returns rows and a summary (counts, images/s, model tiers)."""
    files = list(files)
    detector = registry.load("anomaly.detector")
    classifier = registry.load("pathology.classifier") if pathology else None
    rows: list[BatchRow] = []
    start = time.perf_counter()
    bar = tqdm(total=len(files), unit="study", disable=not progress, desc="Scoring")
    models = {"anomaly.detector": detector} | ({"pathology.classifier": classifier} if classifier else {})
    for chunk in _chunks(files, batch_size):
        to_score: list[tuple[BatchRow, object, set[str]]] = []
        for path in chunk:
            row = BatchRow(file=str(path))
            rows.append(row)
            try:
                study = load_study(path)
            except IngestError as exc:
                row.status, row.message = "unreadable", str(exc)
                continue
            row.study_id = study.study_id
            row.warning = burned_in_warning(study.metadata) or ""
            inside = _admit(row, study, models)
            if inside:
                to_score.append((row, study, inside))
        scored_anomaly = [(row, study) for row, study, inside in to_score if "anomaly.detector" in inside]
        if scored_anomaly:
            results = detector.model.score_batch([s.image for _, s in scored_anomaly], batch_size=batch_size)
            for (row, _), result in zip(scored_anomaly, results):
                row.anomaly_score, row.threshold = round(result.fused_score, 5), round(result.threshold, 5)
                row.anomalous = bool(result.is_anomalous)
        for row, study, inside in to_score:
            if classifier is not None and "pathology.classifier" in inside:
                prediction = classifier.model.predict(study.image)
                row.positives = ";".join(prediction.positives)
                row.probabilities = {k: round(float(v), 4) for k, v in prediction.probabilities.items()}
        bar.update(len(chunk))
    bar.close()
    elapsed = time.perf_counter() - start
    scored = sum(r.status == "ok" for r in rows)
    summary = {
        "files": len(files), "scored": scored, "unreadable": sum(r.status == "unreadable" for r in rows),
        "refused": sum(r.status == "refused" for r in rows),
        "withheld": sum(bool(r.withheld) for r in rows),
        "anomalous": sum(bool(r.anomalous) for r in rows),
        "seconds": round(elapsed, 2), "images_per_second": round(scored / elapsed, 2) if elapsed else 0.0,
        "models": {"anomaly.detector": detector.provenance.to_dict()}
        | ({"pathology.classifier": classifier.provenance.to_dict()} if classifier else {}),
    }
    return rows, summary


def _admit(row: BatchRow, study, models: dict) -> set[str]:
    """Gate and domain rule for one study: fills the row's gate/withheld fields, returns the slots that may score it."""
    decision = check_study(study)
    row.gate = decision.decision if decision.accepted else f"refused: {decision.reason}"
    if not decision.accepted:
        row.status, row.message = "refused", decision.reason
        return set()
    assessment = domain.assess(study, {slot: loaded.provenance.to_dict() for slot, loaded in models.items()},
                               gate=decision.to_dict())
    row.withheld = ";".join(assessment.outside)
    row.withheld_reason = " | ".join(f"{slot}: {verdict.reason}" for slot, verdict in assessment.outside.items())
    if not assessment.inside:
        row.status = "withheld"
    return assessment.inside


def write_results(rows: list[BatchRow], summary: dict, out_dir: Path) -> tuple[Path, Path]:
    """Write results.csv (one row per file) and results.json (rows + summary)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out_dir / "results.csv", out_dir / "results.json"
    labels = sorted({label for r in rows for label in r.probabilities})
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "study_id", "status", "message", "warning", "gate", "withheld", "withheld_reason", "anomaly_score",
                         "threshold", "anomalous", "positives"] + [f"p_{label}" for label in labels])
        for r in rows:
            writer.writerow([r.file, r.study_id, r.status, r.message, r.warning, r.gate, r.withheld, r.withheld_reason,
                             _blank(r.anomaly_score), _blank(r.threshold), _blank(r.anomalous), r.positives]
                            + [r.probabilities.get(label, "") for label in labels])
    json_path.write_text(json.dumps({"summary": summary, "rows": [asdict(r) for r in rows]}, indent=1), encoding="utf-8")
    return csv_path, json_path


def _blank(value):
    """Empty cell for a score that was not produced (withheld or refused): never a zero or 'None'."""
    return "" if value is None else value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medsight.batch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="folder of PNG/JPEG/DICOM studies (searched recursively)")
    parser.add_argument("--out", type=Path, default=Path("batch_results"), help="output folder (default: batch_results)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--no-pathology", action="store_true", help="anomaly scores only (faster)")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        parser.error(f"not a folder: {args.folder}")
    files = find_studies(args.folder)
    if not files:
        print(f"No PNG, JPEG or DICOM files found in {args.folder}", file=sys.stderr)
        return 1
    try:
        rows, summary = score_folder(files, batch_size=args.batch_size, pathology=not args.no_pathology)
    except registry.ModelUnavailable as exc:
        print(f"Cannot score: {exc}", file=sys.stderr)
        return 2
    csv_path, json_path = write_results(rows, summary, args.out)
    tiers = ", ".join(f"{k}: {v['tier']}" for k, v in summary["models"].items())
    print(f"Scored {summary['scored']}/{summary['files']} studies ({summary['anomalous']} above threshold) in "
          f"{summary['seconds']} s = {summary['images_per_second']} images/s [{tiers}]")
    if summary["refused"] or summary["withheld"]:
        print(f"Refused by the input gate: {summary['refused']}; outputs withheld by the domain rule for "
              f"{summary['withheld']} (see the gate, withheld and withheld_reason columns)")
    print(f"Results: {csv_path} and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
