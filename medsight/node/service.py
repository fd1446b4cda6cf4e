"""`DicomNode`: the receiver and the background worker started and stopped together, with their status."""

from __future__ import annotations

from typing import Any

from medsight.config import Settings
from medsight.node.receiver import Receiver
from medsight.node.settings import NodeSettings, receiving_user
from medsight.node.worker import AnalysisWorker


class DicomNode:
    """This workstation as a DICOM node: a Storage SCP feeding the worklist and its worker.

    Args:
        settings: workstation settings.
        history: the History to file received studies in.
        node: AE title, port, address, receiving account and automatic analysis (default: from `settings`).

    Raises:
        ValueError: when the receiving account does not exist (see `receiving_user`).
    """

    def __init__(self, settings: Settings, history: Any, node: NodeSettings | None = None):
        self.settings = settings.ensure_dirs()
        self.history = history
        self.node = node or NodeSettings.from_settings(settings)
        self.user = receiving_user(settings, self.node.user)
        self.worker = AnalysisWorker(settings, history, settings.dicom_inbox, auto_analyse=self.node.auto_analyse)
        self.receiver = Receiver(settings, self.node, history, self.user, on_received=self.worker.wake)

    def start(self) -> "DicomNode":
        """Start the worker, then the receiver (RuntimeError when the port is taken or another receiver runs)."""
        self.worker.start()
        try:
            self.receiver.start()
        except Exception:
            self.worker.stop()
            raise
        self.worker.wake()  # anything left from last time
        return self

    def stop(self) -> None:
        """Stop receiving, then let the worker finish the study in hand."""
        self.receiver.stop()
        self.worker.stop()

    @property
    def running(self) -> bool:
        return self.receiver.status.running

    @property
    def port(self) -> int | None:
        return self.receiver.port

    def status(self) -> dict:
        """Receiver counts and address, the receiving account, and the worker's state and backlog."""
        data = self.receiver.status.to_dict()
        data.update(auto_analyse=self.node.auto_analyse, worker_running=self.worker.running,
                    worker_busy=self.worker.busy, filed=self.worker.filed, analysed=self.worker.analysed,
                    waiting=self.worker.waiting())
        return data


def results_for_pacs(history: Any, settings: Settings, user: str, study_id: str) -> list:
    """The study's DICOM results (SR, maps, PDF from `medsight.dicom_out`) ready to send.

    A study that arrived through the receiver is filed into its original study: the results reference the
    received instance, and the original UIDs and patient identifiers are put back from the encrypted identity
    map (kept `identity_map_days`). An uploaded study, or one whose identifiers have been purged, gets results in
    a new, de-identified study.
    """
    import pydicom

    from medsight.deid import IdentityMap, installation_secret
    from medsight.dicom_out import derived_objects
    from medsight.report import study_pdf

    study = history.load_study(user, study_id)
    analysis = history.latest_payload(user, "analysis", study_id)
    if study is None or analysis is None:
        raise ValueError("This study has no stored analysis to send; analyse it first.")
    received = [row for row in history.worklist.received(user) if row.get("study_id") == study_id]
    source = None
    if received and (settings.dicom_inbox / received[-1]["file"]).is_file():
        source = pydicom.dcmread(settings.dicom_inbox / received[-1]["file"], stop_before_pixels=True)
    # The same PDF as the Analyze page's download, with the radiograph as analysed (the maps are not stored).
    objects = derived_objects(study, analysis, source=source, pdf_bytes=study_pdf(analysis, study, user=user))
    if source is None:
        return objects
    identities = IdentityMap(settings.identity_map_path, installation_secret(settings.deid_secret_path))
    if identities.original_identifiers(str(source.StudyInstanceUID)) is None:
        return objects
    return [identities.reidentify(ds) for ds in objects]


def send_results(history: Any, user: str, study_id: str, datasets: list, remote: Any,
                 local_ae_title: str = "MEDSIGHT") -> Any:
    """Send a study's result objects (Datasets or files) to `remote`; when every one was stored the worklist
    shows the study as sent. The attempt is audited either way (no identifiers, only counts)."""
    from medsight.node.scu import send

    result = send(datasets, remote, local_ae_title)
    if result.ok:
        history.worklist.mark_sent(user, study_id, str(remote), result.sent)
    history.audit(user, "sent_to_pacs", {"study_id": study_id, "remote": str(remote), "sent": result.sent,
                                         "failed": result.failed})
    return result
