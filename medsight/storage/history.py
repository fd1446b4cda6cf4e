"""`History`: the one object the app opens, composed of the per-concern stores on one database."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from medsight.storage.audit import AuditTrail
from medsight.storage.database import Database
from medsight.storage.lockout import LoginLockout
from medsight.storage.records import RecordStore
from medsight.storage.studies import StudyStore
from medsight.storage.tokens import ApiTokenStore
from medsight.storage.worklist import WorklistStore


class History:
    """SQLite-backed history of one workstation's studies and results.

    The work is done by the stores: `studies`, `records`, `audit_trail`, `lockout`, `api_tokens` and `worklist`, all on
    `database`. The methods below are shorthands for them, kept so callers need only this object.

    Args:
        db_path: database file; its folder is created if needed.
    """

    def __init__(self, db_path: str | Path):
        self.database = Database(db_path)
        self.path = self.database.path
        self.studies = StudyStore(self.database)
        self.records = RecordStore(self.database)
        self.audit_trail = AuditTrail(self.database)
        self.lockout = LoginLockout(self.database)
        self.api_tokens = ApiTokenStore(self.database)
        self.worklist = WorklistStore(self.database)

    # --- database -------------------------------------------------------------------------------
    def _read(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        return self.database.read(sql, params)

    def close(self) -> None:
        self.database.close()

    @property
    def schema_version(self) -> int:
        return self.database.schema_version

    @property
    def journal_mode(self) -> str:
        return self.database.journal_mode

    def integrity_check(self) -> str:
        """SQLite's `PRAGMA integrity_check` result ("ok" when healthy)."""
        return self.database.integrity_check()

    # --- studies --------------------------------------------------------------------------------
    def save_study(self, user: str, study: Any) -> int:
        """See `StudyStore.save`."""
        return self.studies.save(user, study)

    def list_studies(self, user: str, limit: int = 200) -> list[dict]:
        """See `StudyStore.recent`."""
        return self.studies.recent(user, limit)

    def load_study_image(self, user: str, study_id: str) -> np.ndarray | None:
        """See `StudyStore.load_image`."""
        return self.studies.load_image(user, study_id)

    def load_study(self, user: str, study_id: str) -> Any | None:
        """See `StudyStore.load`."""
        return self.studies.load(user, study_id)

    # --- records --------------------------------------------------------------------------------
    def save_record(self, user: str, kind: str, study_id: str | None, title: str, payload: dict) -> int:
        """See `RecordStore.save`."""
        return self.records.save(user, kind, study_id, title, payload)

    def update_record(self, user: str, record_id: int, *, title: str | None = None, payload: dict | None = None) -> bool:
        """See `RecordStore.update`."""
        return self.records.update(user, record_id, title=title, payload=payload)

    def list_records(self, user: str, kind: str | None = None, text: str | None = None, limit: int = 100) -> list[dict]:
        """See `RecordStore.find`."""
        return self.records.find(user, kind, text, limit)

    def latest_payload(self, user: str, kind: str, study_id: str) -> dict | None:
        """See `RecordStore.latest_payload`."""
        return self.records.latest_payload(user, kind, study_id)

    def get_record(self, user: str, record_id: int) -> dict | None:
        """See `RecordStore.get`."""
        return self.records.get(user, record_id)

    # --- audit ----------------------------------------------------------------------------------
    def audit(self, user: str | None, event: str, detail: Any = "") -> None:
        """See `AuditTrail.record`. Callers pass no passwords and no patient identifiers."""
        self.audit_trail.record(user, event, detail)

    def audit_log(self, limit: int = 100, user: str | None = None) -> list[dict]:
        """See `AuditTrail.recent`."""
        return self.audit_trail.recent(limit, user)

    # --- login state ----------------------------------------------------------------------------
    def login_state(self, account: str) -> dict:
        """See `LoginLockout.state`."""
        return self.lockout.state(account)

    def set_login_state(self, account: str, failed_count: int, last_failed: str | None, locked_until: str | None) -> None:
        """See `LoginLockout.set`."""
        self.lockout.set(account, failed_count, last_failed, locked_until)

    def clear_login_state(self, account: str) -> None:
        """See `LoginLockout.clear`."""
        self.lockout.clear(account)
