"""Talking to remote nodes: C-ECHO (is it there?) and C-STORE (send objects to it)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from medsight.node.settings import RemoteNode

MAX_CONTEXTS = 128  # PS3.8: at most 128 presentation contexts per association


@dataclass
class EchoResult:
    """Outcome of a C-ECHO."""

    ok: bool
    message: str
    seconds: float = 0.0


@dataclass
class SendResult:
    """Outcome of sending objects: one status per object, in order."""

    sent: int = 0
    failed: int = 0
    statuses: list[dict] = field(default_factory=list)
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.sent > 0

    def to_dict(self) -> dict:
        return {"ok": self.ok, "sent": self.sent, "failed": self.failed, "statuses": self.statuses,
                "message": self.message}


def _ae(local_ae_title: str):
    from pynetdicom import AE

    ae = AE(ae_title=local_ae_title)
    ae.acse_timeout = ae.network_timeout = 15
    ae.dimse_timeout = 120
    return ae


def _unreachable(remote: RemoteNode) -> str:
    return (f"{remote} did not accept the association: check that it is running, that its AE title, host and "
            f"port are right, and that it lists this workstation's AE title as a known node.")


def echo(remote: RemoteNode, local_ae_title: str = "MEDSIGHT") -> EchoResult:
    """Check that `remote` answers DICOM (C-ECHO, the "DICOM ping")."""
    from pynetdicom.sop_class import Verification

    ae = _ae(local_ae_title)
    ae.add_requested_context(Verification)
    started = time.perf_counter()
    assoc = ae.associate(remote.host, remote.port, ae_title=remote.ae_title)
    if not assoc.is_established:
        return EchoResult(False, _unreachable(remote), time.perf_counter() - started)
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    seconds = time.perf_counter() - started
    if status and status.Status == 0x0000:
        return EchoResult(True, f"{remote} answered in {seconds * 1000:.0f} ms.", seconds)
    return EchoResult(False, f"{remote} answered the echo with a failure status.", seconds)


def _dataset(item: Any):
    """A Dataset from a path or a Dataset; one built in memory without a transfer syntax gets Explicit VR LE."""
    import copy

    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    if isinstance(item, (str, Path)):
        return pydicom.dcmread(item, force=True)
    if "TransferSyntaxUID" in (getattr(item, "file_meta", None) or {}):
        return item
    item = copy.copy(item)
    item.file_meta = FileMetaDataset()
    item.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return item


def send(datasets: Iterable[Any], remote: RemoteNode, local_ae_title: str = "MEDSIGHT") -> SendResult:
    """Send DICOM objects (pydicom Datasets or file paths) to `remote` with C-STORE, in one association.

    Each object is sent in its own transfer syntax (uncompressed ones in whichever the remote picks). Returns a status per object; nothing raises for a refusal by the remote.
    """
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    items = [_dataset(item) for item in datasets]
    if not items:
        return SendResult(message="Nothing to send.")
    # One context per SOP class for uncompressed data (the remote picks the syntax), and one per compressed
    # syntax in use: a remote that accepts only the uncompressed context would leave no way to send the other.
    uncompressed = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    contexts: dict[tuple[str, str], list[str]] = {}
    for ds in items:
        syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or ExplicitVRLittleEndian)
        sop_class = str(ds.SOPClassUID)
        if syntax in uncompressed:
            contexts[(sop_class, "")] = uncompressed
        else:
            contexts[(sop_class, syntax)] = [syntax]
    if len(contexts) > MAX_CONTEXTS:
        return SendResult(failed=len(items), message=f"Too many kinds of object ({len(contexts)}) for one association.")
    ae = _ae(local_ae_title)
    for (sop_class, _), syntaxes in contexts.items():
        ae.add_requested_context(sop_class, syntaxes)
    result = SendResult()
    assoc = ae.associate(remote.host, remote.port, ae_title=remote.ae_title)
    if not assoc.is_established:
        result.failed, result.message = len(items), _unreachable(remote)
        return result
    try:
        for ds in items:
            uid = str(ds.get("SOPInstanceUID", ""))
            try:
                status = assoc.send_c_store(ds)
                code = int(status.Status) if status else None
            except Exception as exc:  # noqa: BLE001 - e.g. no accepted context for this object
                code, note = None, type(exc).__name__
            else:
                note = "" if code is not None else "no answer (association lost)"
            ok = code is not None and (code == 0x0000 or 0xB000 <= code <= 0xBFFF)  # B: stored with a warning
            result.sent += ok
            result.failed += not ok
            result.statuses.append({"sop_instance_uid": uid, "status": code, "ok": ok, "note": note})
            if not assoc.is_established:
                break
    finally:
        if assoc.is_established:
            assoc.release()
    result.failed += len(items) - len(result.statuses)
    result.message = f"{result.sent} of {len(items)} object(s) stored by {remote}."
    return result
