"""The protected map from pseudonymous studies back to the identifiers of the PACS they came from.

Results sent back to the source PACS must name the original study and patient, or the PACS cannot
file them; everything else (History, analyses, exports, training data) sees only de-identified
data. So the original identifiers live only here:

- its own SQLite file in the data directory (`identity-map.sqlite3`), mode 0600, directory 0700;
- each study's identifiers and UID map are one AES-256-GCM record whose key is derived (HMAC-SHA256)
  from the installation secret, with the pseudonymous Study Instance UID as associated data, so a
  copied file without the secret reveals nothing and a record cannot be moved to another study;
- a record goes when the study's results have been sent (:func:`forget`) or when it has not been
  touched for `identity_map_days` days (:func:`purge`, default from the settings, 30).

Example:
    >>> clean = deidentify_dataset(received)                 # doctest: +SKIP
    >>> remember(received, clean)                            # doctest: +SKIP
    >>> outgoing = reidentify(derived_sr)                    # doctest: +SKIP
    >>> forget(clean.StudyInstanceUID)                       # after the send succeeded  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import os
import sqlite3
import time
from contextlib import closing
from datetime import timedelta
from pathlib import Path
from typing import Any

from medsight.deid.keys import installation_secret, uid_pseudonym
from medsight.deid.table import actions_by_tag

# Patient and study attributes a result needs to be filed with the original study.
PATIENT_KEYWORDS = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex")
STUDY_KEYWORDS = ("StudyInstanceUID", "AccessionNumber", "StudyID", "StudyDate", "StudyTime",
                  "ReferringPhysicianName", "StudyDescription")
# Recorded by de-identification and no longer true once identifiers are restored.
_DEID_MARKERS = ("PatientIdentityRemoved", "DeidentificationMethod", "DeidentificationMethodCodeSequence",
                 "LongitudinalTemporalInformationModified")

_SCHEMA = """CREATE TABLE IF NOT EXISTS identities (
    study_uid TEXT PRIMARY KEY, updated REAL NOT NULL, nonce BLOB NOT NULL, payload BLOB NOT NULL)"""


def _text(ds: Any, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value)


def _original_uids(ds: Any, secret: bytes) -> dict[str, str]:
    """Every UID the profile replaces (U rows, at any level) → pseudonym → original."""
    u_tags = {tag for tag, row in actions_by_tag().items() if row.basic == "U"}
    found: dict[str, str] = {}

    def visit(dataset: Any, elem: Any) -> None:
        if int(elem.tag) in u_tags and elem.VR == "UI" and elem.value:
            for value in (elem.value if elem.VM > 1 else [elem.value]):
                found[uid_pseudonym(value, secret)] = str(value)

    ds.walk(visit)
    return found


class IdentityMap:
    """The encrypted map in one SQLite file (see the module docstring for how it is protected)."""

    def __init__(self, path: Path | str | None = None, secret: bytes | None = None,
                 retention_days: int | None = None):
        from medsight.config import get_settings

        settings = get_settings()
        self.path = Path(path) if path is not None else settings.identity_map_path
        self._secret = secret if secret is not None else installation_secret()
        self.retention_days = settings.identity_map_days if retention_days is None else retention_days
        self._key = hmac.new(self._secret, b"identity-map-key", hashlib.sha256).digest()

    # -- storage
    def _connect(self) -> sqlite3.Connection:
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        os.chmod(self.path, 0o600)
        conn = sqlite3.connect(self.path, timeout=30)
        conn.execute(_SCHEMA)
        return conn

    def _seal(self, study_uid: str, record: dict) -> tuple[bytes, bytes]:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = os.urandom(12)
        return nonce, AESGCM(self._key).encrypt(nonce, json.dumps(record).encode("utf-8"), study_uid.encode())

    def _open(self, study_uid: str, nonce: bytes, payload: bytes) -> dict:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        return json.loads(AESGCM(self._key).decrypt(nonce, payload, study_uid.encode()))

    def _load(self, conn: sqlite3.Connection, study_uid: str) -> dict | None:
        row = conn.execute("SELECT nonce, payload FROM identities WHERE study_uid = ?", (study_uid,)).fetchone()
        return self._open(study_uid, row[0], row[1]) if row else None

    # -- public
    def remember(self, original_ds: Any, deidentified_ds: Any) -> str:
        """Keep the original identifiers of ``deidentified_ds``; returns its pseudonymous Study Instance UID.

        Instances of one study accumulate in one record (their UID maps merge).
        """
        study_uid = _text(deidentified_ds, "StudyInstanceUID")
        uids = _original_uids(original_ds, self._secret)
        if not study_uid or uids.get(study_uid) != _text(original_ds, "StudyInstanceUID"):
            raise ValueError("The second dataset is not this installation's de-identified copy of the first.")
        with closing(self._connect()) as conn, conn:
            record = self._load(conn, study_uid) or {"uids": {}}
            record.update({kw: _text(original_ds, kw) for kw in PATIENT_KEYWORDS + STUDY_KEYWORDS})
            record["uids"].update(uids)
            nonce, payload = self._seal(study_uid, record)
            conn.execute("INSERT OR REPLACE INTO identities VALUES (?, ?, ?, ?)", (study_uid, time.time(), nonce, payload))
        return study_uid

    def original_identifiers(self, pseudonymous_study_uid: str) -> dict | None:
        """Original patient/study attributes and ``uids`` (pseudonym → original), or None if not kept."""
        if not self.path.exists():
            return None
        with closing(self._connect()) as conn:
            return self._load(conn, str(pseudonymous_study_uid))

    def reidentify(self, ds: Any) -> Any:
        """A copy of ``ds`` (e.g. a result about a de-identified study) that names the original study and patient.

        Every UID that is a known pseudonym, at any level, becomes its original; the patient and study
        attributes are restored; the de-identification markers are removed, since they no longer hold.

        Raises:
            KeyError: no identifiers are kept for this study (never received, already sent, or purged).
        """
        record = self.original_identifiers(_text(ds, "StudyInstanceUID"))
        if record is None:
            raise KeyError("No original identifiers are kept for this study.")
        out = copy.deepcopy(ds)
        uids = record["uids"]

        def restore(dataset: Any, elem: Any) -> None:
            if elem.VR == "UI" and elem.value:
                if elem.VM > 1:
                    elem.value = [uids.get(str(v), str(v)) for v in elem.value]
                else:
                    elem.value = uids.get(str(elem.value), elem.value)

        out.walk(restore)
        for keyword in PATIENT_KEYWORDS + STUDY_KEYWORDS:
            if record.get(keyword):
                setattr(out, keyword, record[keyword])
        for keyword in _DEID_MARKERS:
            if keyword in out:
                delattr(out, keyword)
        meta = getattr(out, "file_meta", None)
        if meta is not None and "MediaStorageSOPInstanceUID" in meta and "SOPInstanceUID" in out:
            meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
        return out

    def forget(self, pseudonymous_study_uid: str) -> bool:
        """Drop one study's identifiers (call once its results have been sent); True if there were any."""
        if not self.path.exists():
            return False
        with closing(self._connect()) as conn, conn:
            return conn.execute("DELETE FROM identities WHERE study_uid = ?", (str(pseudonymous_study_uid),)).rowcount > 0

    def purge(self, older_than: timedelta | float | None = None) -> int:
        """Drop records untouched for ``older_than`` (a timedelta or days; default the retention setting)."""
        if not self.path.exists():
            return 0
        if older_than is None:
            older_than = timedelta(days=self.retention_days)
        seconds = older_than.total_seconds() if isinstance(older_than, timedelta) else float(older_than) * 86400
        with closing(self._connect()) as conn, conn:
            return conn.execute("DELETE FROM identities WHERE updated < ?", (time.time() - seconds,)).rowcount

    def __len__(self) -> int:
        if not self.path.exists():
            return 0
        with closing(self._connect()) as conn:
            return conn.execute("SELECT COUNT(*) FROM identities").fetchone()[0]


def remember(original_ds: Any, deidentified_ds: Any) -> str:
    """Keep the original identifiers of a de-identified dataset in this installation's map."""
    return IdentityMap().remember(original_ds, deidentified_ds)


def original_identifiers(pseudonymous_study_uid: str) -> dict | None:
    """Original identifiers kept for a pseudonymous Study Instance UID, or None."""
    return IdentityMap().original_identifiers(pseudonymous_study_uid)


def reidentify(ds: Any) -> Any:
    """Copy of ``ds`` naming the original study and patient, for sending back to the source PACS."""
    return IdentityMap().reidentify(ds)


def forget(pseudonymous_study_uid: str) -> bool:
    """Drop a study's original identifiers once its results have been sent."""
    return IdentityMap().forget(pseudonymous_study_uid)


def purge(older_than: timedelta | float | None = None) -> int:
    """Drop records older than ``older_than`` (default: the `identity_map_days` setting); returns how many."""
    return IdentityMap().purge(older_than)
