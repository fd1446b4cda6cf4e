"""Scoring of studies, the same on every engine: input gate, domain rule, batched anomaly scores, pathology.

Every study passes the input gate first: a study that is not a frontal chest radiograph is listed as refused
with the gate's reason and is not scored. The domain rule then decides per study which loaded image models can
speak about it; the scores of the others are left empty (never zero) and named in the `withheld` column, with
the reason in `withheld_reason`. Anomaly scores are computed in batches through one VGG16 pass per image; the
pathology classifier runs per image. Files that cannot be read are listed with their reason and do not stop the
run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from tqdm import tqdm

from medsight import domain, registry
from medsight.deid.metadata import burned_in_warning
from medsight.gate import check_study
from medsight.ingest import IngestError, load_study
from medsight.models.onnx_runtime import wait_for_runtime

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm", ".dicom", ""}
ANOMALY, PATHOLOGY = "anomaly.detector", "pathology.classifier"


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


def chunks(items: list, size: int) -> Iterator[list]:
    """Consecutive slices of `items` of at most `size` elements."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


class Scorer:
    """The models of one scoring process (loaded once through the registry) and the per-chunk scoring."""

    def __init__(self, *, batch_size: int = 16, pathology: bool = True):
        self.batch_size = batch_size
        self.detector = registry.load(ANOMALY)
        self.classifier = registry.load(PATHOLOGY) if pathology else None
        self.models = {ANOMALY: self.detector} | ({PATHOLOGY: self.classifier} if self.classifier else {})
        for loaded in self.models.values():  # the whole archive on the faster runtime (ready in seconds)
            wait_for_runtime(loaded.model)

    def provenance(self) -> dict:
        """Where each loaded model came from (tier, file, sha256), per slot."""
        return {slot: loaded.provenance.to_dict() for slot, loaded in self.models.items()}

    def score_chunk(self, files: Iterable[str | Path]) -> list[BatchRow]:
        """One row per file: read, gate, domain rule, then one batched anomaly pass and per-image pathology."""
        rows: list[BatchRow] = []
        to_score: list[tuple[BatchRow, object, set[str]]] = []
        for path in files:
            row = BatchRow(file=str(path))
            rows.append(row)
            try:
                study = load_study(path)
            except IngestError as exc:
                row.status, row.message = "unreadable", str(exc)
                continue
            row.study_id = study.study_id
            row.warning = burned_in_warning(study.metadata) or ""
            inside = _admit(row, study, self.models)
            if inside:
                to_score.append((row, study, inside))
        scored_anomaly = [(row, study) for row, study, inside in to_score if ANOMALY in inside]
        if scored_anomaly:
            results = self.detector.model.score_batch([s.image for _, s in scored_anomaly],
                                                      batch_size=self.batch_size)
            for (row, _), result in zip(scored_anomaly, results):
                row.anomaly_score, row.threshold = round(result.fused_score, 5), round(result.threshold, 5)
                row.anomalous = bool(result.is_anomalous)
        for row, study, inside in to_score:
            if self.classifier is not None and PATHOLOGY in inside:
                prediction = self.classifier.model.predict(study.image)
                row.positives = ";".join(prediction.positives)
                row.probabilities = {k: round(float(v), 4) for k, v in prediction.probabilities.items()}
        return rows


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


def count_rows(rows: Iterable[BatchRow | dict]) -> dict:
    """Summary counts over rows (objects or their dicts): scored, unreadable, refused, withheld, anomalous."""
    counts = {"files": 0, "scored": 0, "unreadable": 0, "refused": 0, "withheld": 0, "anomalous": 0}
    for row in rows:
        get = row.get if isinstance(row, dict) else row.__dict__.get
        counts["files"] += 1
        counts["scored"] += get("status") == "ok"
        counts["unreadable"] += get("status") == "unreadable"
        counts["refused"] += get("status") == "refused"
        counts["withheld"] += bool(get("withheld"))
        counts["anomalous"] += bool(get("anomalous"))
    return counts


def score_folder(files: Iterable[Path], *, batch_size: int = 16, pathology: bool = True,
                 progress: bool = True) -> tuple[list[BatchRow], dict]:
    """Score files in this process, all rows kept in memory; returns rows and a summary (counts, images/s, models).

    The command line streams rows to disk instead (medsight.batch.cli); this is the library form.
    """
    files = list(files)
    scorer = Scorer(batch_size=batch_size, pathology=pathology)
    rows: list[BatchRow] = []
    start = time.perf_counter()
    bar = tqdm(total=len(files), unit="study", disable=not progress, desc="Scoring")
    for chunk in chunks(files, batch_size):
        rows += scorer.score_chunk(chunk)
        bar.update(len(chunk))
    bar.close()
    elapsed = time.perf_counter() - start
    summary = count_rows(rows) | {
        "seconds": round(elapsed, 2),
        "images_per_second": round(sum(r.status == "ok" for r in rows) / elapsed, 2) if elapsed else 0.0,
        "models": scorer.provenance(),
    }
    return rows, summary
