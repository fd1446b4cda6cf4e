"""Stored results: analyses, reports, verification results and chat threads, each as one JSON payload."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from medsight.storage.database import Database, like_pattern, timestamp
from medsight.storage.encoding import to_json

RECORD_KINDS = ("analysis", "report", "verification", "chat")


def _record(row: sqlite3.Row) -> dict:
    return {
        "id": row["id"],
        "user": row["user"],
        "kind": row["kind"],
        "study_id": row["study_id"],
        "created": row["created"],
        "updated": row["updated"],
        "title": row["title"],
        "payload": json.loads(row["payload"] or "{}"),
    }


class RecordStore:
    """The `records` table. Every call takes the user name: a user never sees another user's records."""

    def __init__(self, database: Database):
        self.database = database

    def save(self, user: str, kind: str, study_id: str | None, title: str, payload: dict) -> int:
        """Store one result (analysis, report, verification or chat thread).

        Args:
            user: account name.
            kind: one of `RECORD_KINDS`.
            study_id: the study it belongs to, or None.
            title: short human-readable label shown in History.
            payload: JSON-serialisable dict (numpy values and dataclasses with `to_dict` are converted).

        Returns:
            The new record id.

        Raises:
            ValueError: on an unknown kind.
            TypeError: when the payload holds something that cannot be stored (e.g. a full image array).
        """
        if kind not in RECORD_KINDS:
            raise ValueError(f"unknown record kind {kind!r}; expected one of {', '.join(RECORD_KINDS)}")
        body = to_json(payload)
        now = timestamp()
        cursor = self.database.write(
            "INSERT INTO records (user, kind, study_id, created, updated, title, payload) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (user, kind, None if study_id is None else str(study_id), now, now, title or "", body),
        )
        return int(cursor.lastrowid)

    def update(self, user: str, record_id: int, *, title: str | None = None, payload: dict | None = None) -> bool:
        """Replace the title and/or payload of one of the user's records (e.g. a growing chat thread).

        Returns:
            True when the record existed and belongs to `user`.
        """
        sets, params = ["updated = ?"], [timestamp()]
        if title is not None:
            sets.append("title = ?")
            params.append(title)
        if payload is not None:
            sets.append("payload = ?")
            params.append(to_json(payload))
        cursor = self.database.write(
            f"UPDATE records SET {', '.join(sets)} WHERE id = ? AND user = ?", (*params, int(record_id), user)
        )
        return cursor.rowcount == 1

    def find(self, user: str, kind: str | None = None, text: str | None = None, limit: int = 100) -> list[dict]:
        """The user's records, newest first.

        Args:
            user: account name.
            kind: only this kind (None for all).
            text: case-insensitive substring searched in the title, study id and payload.
            limit: at most this many records.

        Returns:
            Dicts with id, user, kind, study_id, created, updated, title, payload.
        """
        sql = "SELECT * FROM records WHERE user = ?"
        params: list[Any] = [user]
        if kind:
            if kind not in RECORD_KINDS:
                raise ValueError(f"unknown record kind {kind!r}")
            sql += " AND kind = ?"
            params.append(kind)
        if text and text.strip():
            pattern = like_pattern(text.strip())
            sql += " AND (title LIKE ? ESCAPE '\\' OR payload LIKE ? ESCAPE '\\' OR study_id LIKE ? ESCAPE '\\')"
            params += [pattern, pattern, pattern]
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(int(limit))
        return [_record(row) for row in self.database.read(sql, tuple(params))]

    def latest_payload(self, user: str, kind: str, study_id: str) -> dict | None:
        """Payload of this user's most recent record of `kind` for `study_id`, or None."""
        rows = self.database.read(
            "SELECT * FROM records WHERE user = ? AND kind = ? AND study_id = ? ORDER BY id DESC LIMIT 1",
            (user, kind, study_id),
        )
        return _record(rows[0])["payload"] if rows else None

    def get(self, user: str, record_id: int) -> dict | None:
        """One record of this user, or None (also when it belongs to someone else)."""
        rows = self.database.read("SELECT * FROM records WHERE id = ? AND user = ?", (int(record_id), user))
        return _record(rows[0]) if rows else None
