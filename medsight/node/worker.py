"""The background worker: files received instances (ingest, input gate, History) and analyses them on arrival.

The database is the queue of record (rows in state "pending", or queued for analysis), so nothing waiting is
lost when the process stops; the in-memory queue is bounded and only wakes the worker. One worker thread
analyses one study at a time with the process's single copy of each model (`medsight.registry`), and the
pipeline itself takes `medsight.device.MODELS_IN_USE`, so page, API and worker never run the models at once.
"""

from __future__ import annotations

import datetime as _dt
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any

from medsight.config import Settings

log = logging.getLogger("medsight.node")

QUEUE_SIZE = 64
POLL_SECONDS = 2.0


def _describe_non_image(path: Path) -> str | None:
    """What a pixel-less DICOM object is ("a DICOM Structured Report ..."), or None for anything else."""
    try:
        import pydicom

        from medsight.ingest.dicom import describe_non_image_object

        header = pydicom.dcmread(path, defer_size=4096, force=True)  # large values stay on disk
        if "PixelData" in header or "FloatPixelData" in header or "DoubleFloatPixelData" in header:
            return None
        sop_class = header.get("SOPClassUID")
        name = sop_class.name if sop_class is not None else ""
        return describe_non_image_object(name) or (f"a {name} object, not an image" if name else None)
    except Exception:  # noqa: BLE001 - unreadable header: the caller reports the ingest error instead
        return None


def _seconds_since(iso: str) -> float | None:
    try:
        return (_dt.datetime.now(_dt.timezone.utc) - _dt.datetime.fromisoformat(iso)).total_seconds()
    except (TypeError, ValueError):
        return None


class AnalysisWorker:
    """Files and (optionally) analyses received instances in one background thread.

    Args:
        settings: workstation settings (data directory, device, upload limit, identifiers setting).
        history: the History holding the worklist.
        inbox_root: folder of the received files.
        auto_analyse: analyse every accepted chest film as soon as it is filed.
        queue_size: bound of the wake-up queue.
    """

    def __init__(self, settings: Settings, history: Any, inbox_root: Path, *, auto_analyse: bool = False,
                 queue_size: int = QUEUE_SIZE):
        self.settings, self.history, self.inbox_root = settings, history, Path(inbox_root)
        self.auto_analyse = auto_analyse
        self._wake: queue.Queue = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.filed = 0
        self.analysed = 0
        self.busy = ""

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="medsight-node-worker", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the current study (what is still waiting stays in the database for next time)."""
        self._stop.set()
        self.wake()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wake(self) -> None:
        """Tell the worker there is work; when the queue is full it is already awake and will find it."""
        try:
            self._wake.put_nowait(None)
        except queue.Full:
            pass

    def waiting(self) -> int:
        """How many received instances still wait to be filed or analysed."""
        return len(self.history.worklist.next_work(limit=10_000))

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._wake.get(timeout=POLL_SECONDS)
            except queue.Empty:
                pass
            self.run_pending()

    def run_pending(self) -> int:
        """File and analyse everything waiting, oldest first. Returns how many rows were handled."""
        done = 0
        while not self._stop.is_set():
            rows = self.history.worklist.next_work(limit=20)
            if not rows:
                break
            for row in rows:
                if self._stop.is_set():
                    break
                try:
                    if row["state"] == "pending":
                        self.file(row)
                    else:
                        self.analyse(row)
                except Exception as exc:  # noqa: BLE001 - one bad instance must not stop the queue
                    log.warning("worklist entry %s could not be processed: %s", row["id"], type(exc).__name__)
                    if row["state"] == "pending":
                        self.history.worklist.file_instance(row["id"], "unreadable",
                                                            description="This instance could not be processed.")
                    else:
                        self.history.worklist.analysis_finished(row["id"], False)
                finally:
                    self.busy = ""
                done += 1
        return done

    def _load(self, row: dict):
        from medsight.ingest import load_study

        name = f"{row['calling_ae'] or 'DICOM'}-{row['id']}.dcm"
        return load_study(self.inbox_root / row["file"], filename=name,
                          max_bytes=max(self.settings.max_upload_mb, 1) * 2**20 + 2**20,
                          store_identifiers=self.settings.store_identifiers)

    def file(self, row: dict) -> None:
        """Ingest one received instance, run the input gate and store it in the owner's History."""
        from medsight.gate import check_study
        from medsight.ingest import IngestError

        self.busy = "filing"
        worklist = self.history.worklist
        try:
            study = self._load(row)
        except IngestError as exc:
            what = _describe_non_image(self.inbox_root / row["file"])
            if what:
                worklist.file_instance(row["id"], "not_image", description=f"Not an image: {what}")
            else:
                worklist.file_instance(row["id"], "unreadable", description=str(exc))
            self.filed += 1
            return
        gate = check_study(study).to_dict()
        self.history.save_study(row["user"], study)
        self.history.audit(row["user"], "study_received", {
            "study_id": study.study_id, "modality": study.modality, "gate": gate.get("decision"),
            "calling_ae": row["calling_ae"], "via": "dicom"})
        worklist.file_instance(row["id"], "image", study_id=study.study_id, description=study.filename or "",
                               gate=gate, analyse=self.auto_analyse and gate.get("decision") == "accepted")
        self.filed += 1

    def analyse(self, row: dict) -> None:
        """Analyse one filed study with the shared models and store the analysis in the owner's History."""
        from medsight import registry
        from medsight.analysis_summary import record_title
        from medsight.device import pick_device
        from medsight.pipeline import run_analysis

        self.busy = "analysing"
        study = self._load(row)
        device = pick_device(self.settings.device).torch_device
        models = []
        for slot in ("anomaly.detector", "pathology.classifier"):
            try:
                models.append(registry.load(slot, settings=self.settings, device=device))
            except registry.ModelUnavailable:
                models.append(None)  # the pipeline records the stage as skipped with the registry's reason
        started = time.perf_counter()
        result = run_analysis(study, "", detector=models[0], classifier=models[1], maps="key", gate=row["gate"])
        data = result.to_dict()
        data["study_id"] = study.study_id
        data["via"] = "dicom"
        title = record_title(study.filename, data, result.status)
        data["record_id"] = self.history.save_record(row["user"], "analysis", study.study_id, title, data)
        self.history.audit(row["user"], "analysis", {"study_id": study.study_id, "status": result.status,
                                                     "via": "dicom", "seconds": round(time.perf_counter() - started, 2)})
        self.history.worklist.analysis_finished(row["id"], result.status != "FAILED", _seconds_since(row["received"]))
        self.analysed += 1
