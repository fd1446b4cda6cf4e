"""The audit log: who did what and when (sign-ins, analyses, reopened records, model loads)."""

from __future__ import annotations

from typing import Any

from medsight.storage.database import Database, timestamp
from medsight.storage.encoding import to_json


class AuditTrail:
    """The append-only `audit` table."""

    def __init__(self, database: Database):
        self.database = database

    def record(self, user: str | None, event: str, detail: Any = "") -> None:
        """Append an audit event. Callers pass no passwords and no patient identifiers."""
        text = detail if isinstance(detail, str) else to_json(detail)
        self.database.write("INSERT INTO audit (created, user, event, detail) VALUES (?, ?, ?, ?)",
                            (timestamp(), user, event, text))

    def recent(self, limit: int = 100, user: str | None = None) -> list[dict]:
        """Newest audit events first, of everyone or of one user."""
        if user is None:
            rows = self.database.read("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (int(limit),))
        else:
            rows = self.database.read("SELECT * FROM audit WHERE user = ? ORDER BY id DESC LIMIT ?",
                                      (user, int(limit)))
        return [dict(row) for row in rows]
