"""The History database file: one SQLite connection, its settings, schema migrations and locking.

The database runs in WAL mode with `synchronous=FULL`, so a row is on disk once a write returns: a
killed process loses nothing that was committed. One connection is shared behind a lock because
Streamlit runs each rerun in its own thread; SQLite's own locking (with a busy timeout) covers other
processes on the same file. The stores in this package (studies, records, audit, lockout, API tokens, worklist) all write
through one `Database`.
"""

from __future__ import annotations

import datetime as _dt
import os
import sqlite3
import threading
from pathlib import Path

SCHEMA_VERSION = 3

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
    # Version 2 only adds a table: a version-1 file migrates in place and keeps every row.
    2: """
    CREATE TABLE api_tokens (
        id INTEGER PRIMARY KEY,
        user TEXT NOT NULL,
        label TEXT NOT NULL DEFAULT '',
        token_hash TEXT NOT NULL UNIQUE,
        hint TEXT NOT NULL DEFAULT '',
        created TEXT NOT NULL,
        last_used TEXT,
        revoked TEXT
    );
    CREATE INDEX api_tokens_user ON api_tokens (user, id DESC);
    """,
    # Version 3 only adds tables (the DICOM node's worklist): earlier files migrate in place.
    3: """
    CREATE TABLE worklist (
        id INTEGER PRIMARY KEY,
        user TEXT NOT NULL,
        instance_key TEXT NOT NULL UNIQUE,
        received TEXT NOT NULL,
        calling_ae TEXT NOT NULL DEFAULT '',
        file TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending'
            CHECK (state IN ('pending', 'image', 'not_image', 'unreadable')),
        study_id TEXT,
        description TEXT NOT NULL DEFAULT '',
        gate TEXT NOT NULL DEFAULT '{}',
        analysis TEXT NOT NULL DEFAULT ''
            CHECK (analysis IN ('', 'queued', 'done', 'failed')),
        analysed TEXT,
        analysis_seconds REAL
    );
    CREATE INDEX worklist_user ON worklist (user, id);
    CREATE INDEX worklist_work ON worklist (state, analysis, id);
    CREATE TABLE sent_studies (
        id INTEGER PRIMARY KEY,
        user TEXT NOT NULL,
        study_id TEXT NOT NULL,
        remote TEXT NOT NULL,
        sent TEXT NOT NULL,
        instances INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX sent_studies_user ON sent_studies (user, study_id);
    """,
}


def utc_now() -> _dt.datetime:
    """The current time, timezone-aware in UTC."""
    return _dt.datetime.now(_dt.timezone.utc)


def timestamp(moment: _dt.datetime | None = None) -> str:
    """ISO 8601 UTC time with milliseconds, as stored in the `created`/`updated` columns."""
    return (moment or utc_now()).astimezone(_dt.timezone.utc).isoformat(timespec="milliseconds")


class Database:
    """One History database file, opened (and created or migrated if needed).

    Args:
        path: database file; its folder is created if needed.

    Raises:
        RuntimeError: when the file cannot use WAL mode or was written by a newer MedSight.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
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

    def write(self, sql: str, params: tuple = ()) -> sqlite3.Cursor:
        """Run one statement in its own immediate transaction; it is on disk when this returns."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                cursor = self._conn.execute(sql, params)
                self._conn.execute("COMMIT")
                return cursor
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def read(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        """All rows of one query."""
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def close(self) -> None:
        """Close the connection; the stores built on this database cannot be used afterwards."""
        with self._lock:
            self._conn.close()

    @property
    def schema_version(self) -> int:
        return self.read("PRAGMA user_version")[0][0]

    @property
    def journal_mode(self) -> str:
        return str(self.read("PRAGMA journal_mode")[0][0]).lower()

    def integrity_check(self) -> str:
        """SQLite's `PRAGMA integrity_check` result ("ok" when healthy)."""
        return str(self.read("PRAGMA integrity_check")[0][0])


def like_pattern(text: str) -> str:
    """SQL LIKE pattern matching `text` anywhere, with LIKE's wildcards escaped (use with ESCAPE '\\')."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
