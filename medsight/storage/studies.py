"""Stored studies: the display image, a thumbnail and the de-identified metadata of each opened study."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import numpy as np

from medsight.storage.database import Database, like_pattern, timestamp
from medsight.storage.encoding import decode_image, encode_image, make_thumbnail, to_json

REOPENED_NOTICE = "Reopened from History: windowing is fixed to the stored view."


class StudyStore:
    """The `studies` table. Every call takes the user name: a user never sees another user's studies."""

    def __init__(self, database: Database):
        self.database = database

    def save(self, user: str, study: Any) -> int:
        """Store a study (image, thumbnail, de-identified metadata) so it can be reopened later.

        Saving the same study again for the same user keeps the first copy.

        Args:
            user: account name.
            study: a `medsight.ingest.Study`.

        Returns:
            The row id of the stored study.
        """
        stored = self.database.read("SELECT id FROM studies WHERE user = ? AND study_id = ?",
                                    (user, str(study.study_id)))
        if stored:  # reopened: encoding a full-size film again only to be ignored costs about half a second
            return int(stored[0]["id"])
        image = np.asarray(study.image, dtype=np.float32)
        thumbnail_fn = getattr(study, "thumbnail_png", None)
        thumbnail = thumbnail_fn() if callable(thumbnail_fn) else make_thumbnail(image)
        metadata = study.to_dict() if hasattr(study, "to_dict") else {}
        self.database.write(
            "INSERT OR IGNORE INTO studies (user, study_id, created, filename, modality, metadata, thumbnail, image)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                user,
                str(study.study_id),
                timestamp(),
                getattr(study, "filename", None),
                getattr(study, "modality", None),
                to_json(metadata),
                sqlite3.Binary(thumbnail),
                sqlite3.Binary(encode_image(image)),
            ),
        )
        row = self.database.read("SELECT id FROM studies WHERE user = ? AND study_id = ?",
                                 (user, str(study.study_id)))
        return int(row[0]["id"])

    def recent(self, user: str, limit: int = 200) -> list[dict]:
        """The user's studies, newest first (metadata and thumbnail, without the full image)."""
        rows = self.database.read(
            "SELECT id, study_id, created, filename, modality, metadata, thumbnail FROM studies"
            " WHERE user = ? ORDER BY id DESC LIMIT ?",
            (user, int(limit)),
        )
        return [
            {
                "id": row["id"],
                "study_id": row["study_id"],
                "created": row["created"],
                "filename": row["filename"],
                "modality": row["modality"],
                "metadata": json.loads(row["metadata"] or "{}"),
                "thumbnail": bytes(row["thumbnail"]) if row["thumbnail"] is not None else None,
            }
            for row in rows
        ]

    def note_gate(self, user: str, study_id: str, gate: dict) -> None:
        """Keep the input gate's decision with a stored study, so lists (the Worklist) can say "not a chest film"
        without reopening the image."""
        rows = self.database.read("SELECT metadata FROM studies WHERE user = ? AND study_id = ?",
                                  (user, str(study_id)))
        if not rows:
            return
        metadata = json.loads(rows[0]["metadata"] or "{}")
        if metadata.get("gate") == gate:
            return
        metadata["gate"] = gate
        self.database.write("UPDATE studies SET metadata = ? WHERE user = ? AND study_id = ?",
                            (to_json(metadata), user, str(study_id)))

    def mentioning(self, user: str, text: str) -> list[dict]:
        """The user's studies whose stored metadata contains `text` (e.g. a patient pseudonym), oldest first;
        id, study_id, created and the study's technical metadata, without images."""
        rows = self.database.read(
            "SELECT id, study_id, created, metadata FROM studies WHERE user = ? AND metadata LIKE ? ESCAPE '\\'"
            " ORDER BY id", (user, like_pattern(text)))
        return [{"id": int(row["id"]), "study_id": str(row["study_id"]), "created": str(row["created"]),
                 "metadata": json.loads(row["metadata"] or "{}").get("metadata") or {}} for row in rows]

    def load_image(self, user: str, study_id: str) -> np.ndarray | None:
        """The stored image (float32 HxW in [0,1]) of one of the user's studies, or None."""
        rows = self.database.read("SELECT image FROM studies WHERE user = ? AND study_id = ?",
                                  (user, str(study_id)))
        if not rows or rows[0]["image"] is None:
            return None
        return decode_image(bytes(rows[0]["image"]))

    def load(self, user: str, study_id: str) -> Any | None:
        """Rebuild a `medsight.ingest.Study` from the stored image and metadata, or None if absent.

        The original modality values are not stored, so the reopened study has `raw=None` and keeps
        the window it was saved with.
        """
        rows = self.database.read("SELECT metadata, filename, modality FROM studies WHERE user = ? AND study_id = ?",
                                  (user, str(study_id)))
        if not rows:
            return None
        from medsight.ingest.study import Study  # late import: storage must not require the imaging stack

        stored = json.loads(rows[0]["metadata"] or "{}")
        stored["study_id"] = str(study_id)
        stored.setdefault("filename", rows[0]["filename"])
        stored.setdefault("modality", rows[0]["modality"])
        study = Study.from_dict(stored, image=self.load_image(user, study_id))
        study.notices.append(REOPENED_NOTICE)
        return study
