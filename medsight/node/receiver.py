"""The Storage SCP: receives instances over DICOM and files them in the inbox and the worklist.

An instance is acknowledged (status 0x0000) only after its file is fsynced under its final name and its
worklist row is committed; until then the sender still holds it and resends on failure. A resent instance
(same SOP Instance UID) is answered with success and ignored. Filing (ingest, input gate, History) and any
automatic analysis happen afterwards in `medsight.node.worker`, so a slow analysis never delays the sender.
"""

from __future__ import annotations

import fcntl
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from medsight.config import Settings
from medsight.node.inbox import Inbox
from medsight.node.settings import NodeSettings

log = logging.getLogger("medsight.node")

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # the sender keeps the instance and may retry later
CANNOT_UNDERSTAND = 0xC000


@dataclass
class ReceiverStatus:
    """What the System page and the command line show of a receiver."""

    running: bool = False
    address: str = ""
    ae_title: str = ""
    user: str = ""
    started: float | None = None
    received: int = 0
    duplicates: int = 0
    failed: int = 0
    associations: int = 0
    last_error: str = ""
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _storage_contexts() -> list:
    """Every storage SOP class (images, SR, PDF, ...) in every transfer syntax, plus Verification (C-ECHO)."""
    from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, build_context
    from pynetdicom.sop_class import Verification

    contexts = [build_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES) for cx in AllStoragePresentationContexts]
    return [*contexts, build_context(Verification)]


class Receiver:
    """A Storage SCP for one data directory, owned by one account.

    Args:
        settings: the workstation settings (data directory, de-identification setting).
        node: AE title, port and listening address.
        history: the History the worklist rows go to.
        user: the account that owns received studies.
        on_received: called with the worklist row id after each new instance is acknowledged (wakes the worker).
    """

    def __init__(self, settings: Settings, node: NodeSettings, history: Any, user: str,
                 on_received: Any = None):
        self.settings, self.node, self.history, self.user = settings, node, history, user
        self.inbox = Inbox(settings.dicom_inbox)
        self.on_received = on_received
        self.status = ReceiverStatus(ae_title=node.ae_title, user=user)
        self._server = None
        self._lock_file = None
        self._counter = threading.Lock()

    # --- life cycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start listening (in background threads). Raises RuntimeError when another receiver owns the inbox."""
        from pynetdicom import AE, evt

        if self._server is not None:
            return
        self._lock_file = open(self.inbox.root / ".receiver.lock", "w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_file.close()
            self._lock_file = None
            raise RuntimeError("Another DICOM receiver is already running for this data directory.") from None
        self.inbox.sweep_partials()  # only a crash leaves these, and none of them was acknowledged
        self.recover()
        ae = AE(ae_title=self.node.ae_title)
        ae.supported_contexts = _storage_contexts()
        ae.maximum_pdu_size = 1 << 20  # 1 MiB PDUs: few round trips for large instances, bounded buffers
        ae.network_timeout = 60
        ae.dimse_timeout = 120
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_C_ECHO, lambda event: SUCCESS),
                    (evt.EVT_ACCEPTED, self._on_association)]
        try:
            self._server = ae.start_server((self.node.bind, self.node.port), block=False, evt_handlers=handlers)
        except OSError as exc:
            self._release_lock()
            raise RuntimeError(f"The DICOM receiver could not listen on {self.node.bind}:{self.node.port} "
                               f"({exc.strerror or exc}).") from None
        port = self._server.server_address[1]
        self.status.address = f"{self.node.bind}:{port}"
        self.status.running, self.status.started = True, time.time()
        self.status.warnings = [w for w in (self.node.warning,) if w]
        log.info("DICOM receiver %s listening on %s", self.node.ae_title, self.status.address)

    @property
    def port(self) -> int | None:
        return self._server.server_address[1] if self._server is not None else None

    def stop(self) -> None:
        """Stop listening; associations in progress are ended."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self.status.running = False
        self._release_lock()

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def recover(self) -> int:
        """Record instance files that a crash left without a worklist row (written, not yet acknowledged)."""
        known = self.history.worklist.known_files()
        added = 0
        for path in self.inbox.files():
            if path.name not in known:
                added += self.history.worklist.add_received(self.user, path.stem, path.name)
        return added

    # --- events ---------------------------------------------------------------------------------
    def _on_association(self, event: Any) -> None:
        with self._counter:
            self.status.associations += 1

    def _writer(self, event: Any):
        """How to write the instance: as sent, or de-identified first when identifiers are not kept."""
        if self.settings.store_identifiers:
            encoded = event.encoded_dataset()
            return lambda handle: handle.write(encoded)

        from medsight.deid import IdentityMap, deidentify_dataset, installation_secret

        dataset = event.dataset
        dataset.file_meta = event.file_meta
        secret = installation_secret(self.settings.deid_secret_path)
        clean = deidentify_dataset(dataset, pseudonymous_patient_id=True, secret=secret,
                                   retain_dates=self.settings.deid_retain_dates)
        # Results filed back into the sender's study need its real identifiers: kept only in the encrypted map.
        IdentityMap(self.settings.identity_map_path, secret).remember(dataset, clean)

        def write(handle: BinaryIO) -> None:
            clean.save_as(handle, enforce_file_format=True)

        return write

    def _on_store(self, event: Any) -> int:
        try:
            sop_uid = str(event.request.AffectedSOPInstanceUID or "")
            if not sop_uid:
                return CANNOT_UNDERSTAND
            key = self.inbox.instance_key(sop_uid)
            worklist = self.history.worklist
            if worklist.has_instance(key):
                with self._counter:
                    self.status.duplicates += 1
                return SUCCESS
            path, created = self.inbox.store(key, self._writer(event))
            calling = str(getattr(event.assoc.requestor, "ae_title", "") or "").strip()
            new_row = worklist.add_received(self.user, key, path.name, calling)
            with self._counter:
                if created and new_row:
                    self.status.received += 1
                else:
                    self.status.duplicates += 1
            if new_row and self.on_received is not None:
                self.on_received()
            return SUCCESS
        except MemoryError:
            self._failed("not enough memory for this instance")
            return OUT_OF_RESOURCES
        except Exception as exc:  # noqa: BLE001 - the sender gets a failure status and keeps its copy
            self._failed(type(exc).__name__)
            return OUT_OF_RESOURCES

    def _failed(self, what: str) -> None:
        with self._counter:
            self.status.failed += 1
            self.status.last_error = what
        log.warning("a received instance could not be stored: %s", what)  # no UID or patient data in logs
