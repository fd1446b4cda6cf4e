"""Score a whole folder of studies (PNG/JPEG/DICOM) and write CSV + JSON results.

The path a site with many studies would use:

    python -m medsight.batch /path/to/studies --out results/ [--no-pathology] [--batch-size 16]

Anomaly scores are computed in batches through one VGG16 pass per image; the pathology classifier runs per
image. Files that cannot be read are listed with their reason and do not stop the run.
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

from medsight import registry
from medsight.ingest import IngestError, load_study

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm", ".dicom", ""}


@dataclass
class BatchRow:
    file: str
    study_id: str = ""
    status: str = "ok"
    message: str = ""
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
    for chunk in _chunks(files, batch_size):
        studies, chunk_rows = [], []
        for path in chunk:
            row = BatchRow(file=str(path))
            try:
                study = load_study(path)
                row.study_id = study.study_id
                studies.append(study)
                chunk_rows.append(row)
            except IngestError as exc:
                row.status, row.message = "unreadable", str(exc)
                rows.append(row)
        if studies:
            results = detector.model.score_batch([s.image for s in studies], batch_size=batch_size)
            for row, study, result in zip(chunk_rows, studies, results):
                row.anomaly_score, row.threshold = round(result.fused_score, 5), round(result.threshold, 5)
                row.anomalous = bool(result.is_anomalous)
                if classifier is not None:
                    prediction = classifier.model.predict(study.image)
                    row.positives = ";".join(prediction.positives)
                    row.probabilities = {k: round(float(v), 4) for k, v in prediction.probabilities.items()}
                rows.append(row)
        bar.update(len(chunk))
    bar.close()
    elapsed = time.perf_counter() - start
    scored = sum(r.status == "ok" for r in rows)
    summary = {
        "files": len(files), "scored": scored, "unreadable": len(files) - scored,
        "anomalous": sum(bool(r.anomalous) for r in rows),
        "seconds": round(elapsed, 2), "images_per_second": round(scored / elapsed, 2) if elapsed else 0.0,
        "models": {"anomaly.detector": detector.provenance.to_dict()}
        | ({"pathology.classifier": classifier.provenance.to_dict()} if classifier else {}),
    }
    return rows, summary


def write_results(rows: list[BatchRow], summary: dict, out_dir: Path) -> tuple[Path, Path]:
    """Write results.csv (one row per file) and results.json (rows + summary)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out_dir / "results.csv", out_dir / "results.json"
    labels = sorted({label for r in rows for label in r.probabilities})
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "study_id", "status", "message", "anomaly_score", "threshold", "anomalous", "positives"]
                        + [f"p_{label}" for label in labels])
        for r in rows:
            writer.writerow([r.file, r.study_id, r.status, r.message, r.anomaly_score, r.threshold, r.anomalous,
                             r.positives] + [r.probabilities.get(label, "") for label in labels])
    json_path.write_text(json.dumps({"summary": summary, "rows": [asdict(r) for r in rows]}, indent=1), encoding="utf-8")
    return csv_path, json_path


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
    print(f"Results: {csv_path} and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
