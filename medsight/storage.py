"""Per-user history in SQLite: studies, analyses, reports, verification results, chat threads, audit log.

The database runs in WAL mode with `synchronous=FULL`, so a record is on disk once `save_record` returns:
a killed process loses nothing that was committed. One connection is shared behind a lock because
Streamlit runs each rerun in its own thread; SQLite's own locking (with a busy timeout) covers other
processes on the same file.

Every read takes the user name and filters on it: a user never sees another user's studies or records.

Example:
    >>> from medsight.storage import History
    >>> history = History("/tmp/medsight-doc.sqlite3")           # doctest: +SKIP
    >>> rid = history.save_record("radiologist", "report", None, "Draft", {"text": "No acute findings."})  # doctest: +SKIP
    >>> history.get_record("radiologist", rid)["payload"]["text"]  # doctest: +SKIP
    'No acute findings.'
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import io
import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import numpy as np

RECORD_KINDS = ("analysis", "report", "verification", "chat")
SCHEMA_VERSION = 1

# Arrays bigger than this are not turned into JSON lists: images belong in the studies table.
_MAX_JSON_ARRAY = 4096

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE studies (
        id INTEGER PRIMARY KEY,
        user TEXT NOT NULL,
        study_id TEXT NOT NULL,
        created TEXT NOT NULL,
        filename TEXT,
        modality TEXT,
        metadata TEXT NOT NULL DEFAULT '{}',
        thumbnail BLOB,
        image BLOB,
        UNIQUE (user, study_id)
    );
    CREATE TABLE records (
        id INTEGER PRIMARY KEY,
        user TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('analysis', 'report', 'verification', 'chat')),
        study_id TEXT,
        created TEXT NOT NULL,
        updated TEXT NOT NULL,
        title TEXT NOT NULL DEFAULT '',
        payload TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX records_user_created ON records (user, id DESC);
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        created TEXT NOT NULL,
        user TEXT,
        event TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE login_state (
        account TEXT PRIMARY KEY,
        failed_count INTEGER NOT NULL DEFAULT 0,
        last_failed TEXT,
        locked_until TEXT
    );
    """,
}


def utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _iso(moment: _dt.datetime | None = None) -> str:
    return (moment or utc_now()).astimezone(_dt.timezone.utc).isoformat(timespec="milliseconds")


def _json_default(value: Any) -> Any:
    """Turn the objects results are made of (numpy values, dataclasses, paths) into JSON."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        if value.size > _MAX_JSON_ARRAY:
            raise TypeError(
                f"array of shape {value.shape} is too large to store in a record; store images with save_study"
            )
        return value.tolist()
    if hasattr(value, "to_dict") and callable(value.to_dict):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, (Path, _dt.date, _dt.datetime)):
        return str(value) if isinstance(value, Path) else value.isoformat()
    raise TypeError(f"cannot store a {type(value).__name__} in a history record")


def to_json(value: Any) -> str:
    """Serialise a payload for storage (numpy values and dataclasses are converted)."""
    return json.dumps(value, default=_json_default, ensure_ascii=False, allow_nan=True)


def encode_image(image: np.ndarray) -> bytes:
    """Lossless-enough image blob: [0,1] float image quantised to 16 bits, saved as a 16-bit PNG."""
    from PIL import Image

    array = np.asarray(image, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D greyscale image, got shape {array.shape}")
    quantised = np.round(np.clip(np.nan_to_num(array), 0.0, 1.0) * 65535.0).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(quantised).save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def decode_image(blob: bytes) -> np.ndarray:
    """Inverse of `encode_image`: float32 HxW in [0, 1]."""
    from PIL import Image

    with Image.open(io.BytesIO(blob)) as img:
        array = np.asarray(img)
    return (array.astype(np.float32) / 65535.0).astype(np.float32)


def make_thumbnail(image: np.ndarray, size: int = 256) -> bytes:
    """8-bit PNG thumbnail (longest side `size`) of a [0,1] image."""
    from PIL import Image

    array = np.round(np.clip(np.asarray(image, dtype=np.float32), 0, 1) * 255).astype(np.uint8)
    img = Image.fromarray(array)
    img.thumbnail((size, size))
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class History:
    """SQLite-backed history of one workstation's studies and results.

    Args:
        db_path: database file; its folder is created if needed.
    """

    def __init__(self, db_path: str | Path):
        self.path = Path(db_path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():  # owner-only from the start; SQLite gives -wal/-shm the same mode
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        self._lock = threading.RLock()
        # One connection shared across Streamlit's script threads; every use holds the lock.
        self._conn = sqlite3.connect(self.path, check_same_thread=False, timeout=10.0, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        with self._lock:
            mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise RuntimeError(f"could not switch {self.path} to WAL mode (got {mode})")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.execute("PRAGMA busy_timeout=10000")
            self._migrate()

    # --- plumbing -------------------------------------------------------------------------------
    def _migrate(self) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path} has schema version {version}, newer than this program ({SCHEMA_VERSION}); "
                "update MedSight before opening it"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                # Another process may have migrated between our read and the lock.
                if self._conn.execute("PRAGMA user_version").fetchone()[0] >= target:
                    self._conn.execute("COMMIT")
                    continue
                for statement in _MIGRATIONS[target].split(";"):
                    if statement.strip():
                        self._conn.execute(statement)
                self._conn.execute(f"PRAGMA user_version={target}")
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def _write(self, sql: str, params: tuple = ()) -> sqlite3.Cursor:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                cursor = self._conn.execute(sql, params)
                self._conn.execute("COMMIT")
                return cursor
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def _read(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @property
    def schema_version(self) -> int:
        return self._read("PRAGMA user_version")[0][0]

    @property
    def journal_mode(self) -> str:
        return str(self._read("PRAGMA journal_mode")[0][0]).lower()

    def integrity_check(self) -> str:
        """SQLite's `PRAGMA integrity_check` result ("ok" when healthy)."""
        return str(self._read("PRAGMA integrity_check")[0][0])

    # --- studies --------------------------------------------------------------------------------
    def save_study(self, user: str, study: Any) -> int:
        """Store a study (image, thumbnail, de-identified metadata) so it can be reopened later.

        Saving the same study again for the same user keeps the first copy.

        Args:
            user: account name.
            study: a `medsight.ingest.Study`.

        Returns:
            The row id of the stored study.
        """
        image = np.asarray(study.image, dtype=np.float32)
        thumbnail_fn = getattr(study, "thumbnail_png", None)
        thumbnail = thumbnail_fn() if callable(thumbnail_fn) else make_thumbnail(image)
        metadata = study.to_dict() if hasattr(study, "to_dict") else {}
        self._write(
            "INSERT OR IGNORE INTO studies (user, study_id, created, filename, modality, metadata, thumbnail, image)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                user,
                str(study.study_id),
                _iso(),
                getattr(study, "filename", None),
                getattr(study, "modality", None),
                to_json(metadata),
                sqlite3.Binary(thumbnail),
                sqlite3.Binary(encode_image(image)),
            ),
        )
        row = self._read("SELECT id FROM studies WHERE user = ? AND study_id = ?", (user, str(study.study_id)))
        return int(row[0]["id"])

    def list_studies(self, user: str, limit: int = 200) -> list[dict]:
        """The user's studies, newest first (metadata and thumbnail, without the full image)."""
        rows = self._read(
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

    def load_study_image(self, user: str, study_id: str) -> np.ndarray | None:
        """The stored image (float32 HxW in [0,1]) of one of the user's studies, or None."""
        rows = self._read("SELECT image FROM studies WHERE user = ? AND study_id = ?", (user, str(study_id)))
        if not rows or rows[0]["image"] is None:
            return None
        return decode_image(bytes(rows[0]["image"]))

    def load_study(self, user: str, study_id: str) -> Any | None:
        """Rebuild a `medsight.ingest.Study` from the stored image and metadata, or None if absent.

        The original modality values are not stored, so the reopened study has `raw=None` and keeps
        the window it was saved with.
        """
        rows = self._read("SELECT metadata, filename, modality FROM studies WHERE user = ? AND study_id = ?",
                          (user, str(study_id)))
        if not rows:
            return None
        image = self.load_study_image(user, study_id)
        from medsight.ingest import Study  # late import: storage must not require the imaging stack

        stored = json.loads(rows[0]["metadata"] or "{}")
        stored.update(study_id=str(study_id), image=image, raw=None)
        stored.setdefault("filename", rows[0]["filename"])
        stored.setdefault("modality", rows[0]["modality"])
        names = {f.name for f in dataclasses.fields(Study)}
        values = {k: v for k, v in stored.items() if k in names}
        for key in ("original_size", "pixel_spacing", "window_used"):
            if isinstance(values.get(key), list):
                values[key] = tuple(values[key])
        if isinstance(values.get("windows"), list):
            values["windows"] = [tuple(w) if isinstance(w, list) else w for w in values["windows"]]
        notices = list(values.get("notices") or [])
        notices.append("Reopened from History: windowing is fixed to the stored view.")
        values["notices"] = notices
        return Study(**values)

    # --- records --------------------------------------------------------------------------------
    def save_record(self, user: str, kind: str, study_id: str | None, title: str, payload: dict) -> int:
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
        now = _iso()
        cursor = self._write(
            "INSERT INTO records (user, kind, study_id, created, updated, title, payload) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (user, kind, None if study_id is None else str(study_id), now, now, title or "", body),
        )
        return int(cursor.lastrowid)

    def update_record(self, user: str, record_id: int, *, title: str | None = None, payload: dict | None = None) -> bool:
        """Replace the title and/or payload of one of the user's records (e.g. a growing chat thread).

        Returns:
            True when the record existed and belongs to `user`.
        """
        sets, params = ["updated = ?"], [_iso()]
        if title is not None:
            sets.append("title = ?")
            params.append(title)
        if payload is not None:
            sets.append("payload = ?")
            params.append(to_json(payload))
        cursor = self._write(
            f"UPDATE records SET {', '.join(sets)} WHERE id = ? AND user = ?", (*params, int(record_id), user)
        )
        return cursor.rowcount == 1

    @staticmethod
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

    def list_records(self, user: str, kind: str | None = None, text: str | None = None, limit: int = 100) -> list[dict]:
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
            pattern = _like_pattern(text.strip())
            sql += " AND (title LIKE ? ESCAPE '\\' OR payload LIKE ? ESCAPE '\\' OR study_id LIKE ? ESCAPE '\\')"
            params += [pattern, pattern, pattern]
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(int(limit))
        return [self._record(row) for row in self._read(sql, tuple(params))]

    def latest_payload(self, user: str, kind: str, study_id: str) -> dict | None:
        """Payload of this user's most recent record of `kind` for `study_id`, or None."""
        rows = self._read("SELECT * FROM records WHERE user = ? AND kind = ? AND study_id = ? ORDER BY id DESC LIMIT 1",
                          (user, kind, study_id))
        return self._record(rows[0])["payload"] if rows else None

    def get_record(self, user: str, record_id: int) -> dict | None:
        """One record of this user, or None (also when it belongs to someone else)."""
        rows = self._read("SELECT * FROM records WHERE id = ? AND user = ?", (int(record_id), user))
        return self._record(rows[0]) if rows else None

    # --- audit ----------------------------------------------------------------------------------
    def audit(self, user: str | None, event: str, detail: Any = "") -> None:
        """Append an audit event. Callers pass no passwords and no patient identifiers."""
        text = detail if isinstance(detail, str) else to_json(detail)
        self._write("INSERT INTO audit (created, user, event, detail) VALUES (?, ?, ?, ?)", (_iso(), user, event, text))

    def audit_log(self, limit: int = 100, user: str | None = None) -> list[dict]:
        """Newest audit events first."""
        if user is None:
            rows = self._read("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (int(limit),))
        else:
            rows = self._read("SELECT * FROM audit WHERE user = ? ORDER BY id DESC LIMIT ?", (user, int(limit)))
        return [dict(row) for row in rows]

    # --- login state (used by medsight.auth) ----------------------------------------------------
    def login_state(self, account: str) -> dict:
        """Failed-login counter and lockout of one account key."""
        rows = self._read("SELECT * FROM login_state WHERE account = ?", (account,))
        if not rows:
            return {"account": account, "failed_count": 0, "last_failed": None, "locked_until": None}
        return dict(rows[0])

    def set_login_state(self, account: str, failed_count: int, last_failed: str | None, locked_until: str | None) -> None:
        self._write(
            "INSERT INTO login_state (account, failed_count, last_failed, locked_until) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(account) DO UPDATE SET failed_count = excluded.failed_count,"
            " last_failed = excluded.last_failed, locked_until = excluded.locked_until",
            (account, int(failed_count), last_failed, locked_until),
        )

    def clear_login_state(self, account: str) -> None:
        self._write("DELETE FROM login_state WHERE account = ?", (account,))
