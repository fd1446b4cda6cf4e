"""Per-user history in SQLite: studies, analyses, reports, verification results, chat threads, audit log.

`History(db_path)` is what the app opens. It is made of one `Database` (the connection, WAL and
`synchronous=FULL`, migrations, locking) and one store per concern, each usable on its own:

    history.studies       StudyStore    images, thumbnails and metadata of opened studies
    history.records       RecordStore   analyses, reports, verification results, chat threads
    history.audit_trail   AuditTrail    the audit log
    history.lockout       LoginLockout  failed sign-ins and lockouts (used by medsight.auth)
    history.api_tokens    ApiTokenStore tokens of the local HTTP API (hashed; medsight.api)
    history.worklist      WorklistStore received DICOM instances and the AI-ordered worklist (medsight.node)

Every read of studies and records takes the user name and filters on it: a user never sees another
user's studies or records.

Example:
    >>> from medsight.storage import History
    >>> history = History("/tmp/medsight-doc.sqlite3")           # doctest: +SKIP
    >>> rid = history.records.save("radiologist", "report", None, "Draft", {"text": "No acute findings."})  # doctest: +SKIP
    >>> history.records.get("radiologist", rid)["payload"]["text"]  # doctest: +SKIP
    'No acute findings.'
"""

from medsight.storage.audit import AuditTrail
from medsight.storage.database import SCHEMA_VERSION, Database, timestamp, utc_now
from medsight.storage.encoding import decode_image, encode_image, make_thumbnail, to_json
from medsight.storage.history import History
from medsight.storage.lockout import LoginLockout
from medsight.storage.records import RECORD_KINDS, RecordStore
from medsight.storage.studies import StudyStore
from medsight.storage.tokens import ApiToken, ApiTokenStore
from medsight.storage.worklist import WorklistStore

__all__ = [
    "RECORD_KINDS",
    "SCHEMA_VERSION",
    "ApiToken",
    "ApiTokenStore",
    "AuditTrail",
    "Database",
    "History",
    "LoginLockout",
    "RecordStore",
    "StudyStore",
    "WorklistStore",
    "decode_image",
    "encode_image",
    "make_thumbnail",
    "timestamp",
    "to_json",
    "utc_now",
]
