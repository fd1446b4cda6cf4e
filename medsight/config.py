"""One settings object, read from environment variables.

API keys are read from the environment on demand and never written to disk or logs; `Settings.__repr__`
masks them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_MODELS_DIR = PROJECT_ROOT / "models"

_TRUE = {"1", "true", "yes", "on"}


def _env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in _TRUE


RETAIN_DATES_CHOICES = ("off", "modified", "full")


def _retain_dates(value: str) -> str:
    """An unknown value falls back to "off", the choice that keeps no dates."""
    value = value.strip().lower()
    return value if value in RETAIN_DATES_CHOICES else "off"


@dataclass(frozen=True)
class Settings:
    """Runtime settings for the workstation.

    Attributes:
        home: data directory (history DB, case base, caches, user accounts). `MEDSIGHT_HOME`.
        device: "auto", "cpu", "cuda" or "mps". `MEDSIGHT_DEVICE`.
        allow_network: whether model weights may be downloaded. `MEDSIGHT_ALLOW_DOWNLOADS`.
        cloud_llm_consent: whether de-identified text may be sent to a cloud model. `MEDSIGHT_CLOUD_LLM`.
        store_identifiers: keep patient identifiers from DICOM headers (off by default).
            `MEDSIGHT_STORE_IDENTIFIERS`.
        chroma_url: use a Chroma server at this URL instead of the embedded store. `MEDSIGHT_CHROMA_URL`.
        max_upload_mb: largest accepted upload. `MEDSIGHT_MAX_UPLOAD_MB`.
        session_minutes: login session lifetime. `MEDSIGHT_SESSION_MINUTES`.
        lockout_attempts / lockout_minutes: failed logins before a lockout, and its length.
        deid_secret_file: where this installation's de-identification secret lives (default
            `<home>/deid-secret.key`). `MEDSIGHT_DEID_SECRET_FILE`.
        deid_retain_dates: PS3.15 Retain Longitudinal Temporal Information option: "off" (dates
            removed), "modified" (dates shifted by a per-patient offset, so intervals between
            priors stay real) or "full" (dates kept). `MEDSIGHT_DEID_RETAIN_DATES`.
        identity_map_days: days the protected map of original study identifiers is kept (results
            sent back to the source PACS need them). `MEDSIGHT_IDENTITY_MAP_DAYS`.
        node_ae_title: this workstation's DICOM AE title. `MEDSIGHT_NODE_AE_TITLE`.
        node_port: TCP port of the DICOM receiver. `MEDSIGHT_NODE_PORT`.
        node_bind: address the receiver listens on; 127.0.0.1 (this computer only) unless changed.
            `MEDSIGHT_NODE_BIND`.
        node_remotes: remote DICOM nodes (PACS) as "AE@host:port", separated by ";" or ",".
            `MEDSIGHT_NODE_REMOTES`.
        node_auto_analyse: analyse received studies in the background as they arrive. `MEDSIGHT_NODE_AUTO_ANALYSE`.
        node_user: account that owns received studies (empty: the first administrator). `MEDSIGHT_NODE_USER`.
    """

    home: Path = field(default_factory=lambda: PROJECT_ROOT / ".medsight")
    device: str = "auto"
    allow_network: bool = False
    cloud_llm_consent: bool = False
    store_identifiers: bool = False
    chroma_url: str = ""
    max_upload_mb: int = 200
    session_minutes: int = 60
    lockout_attempts: int = 5
    lockout_minutes: int = 15
    deid_secret_file: Path | None = None
    deid_retain_dates: str = "off"
    identity_map_days: int = 30
    node_ae_title: str = "MEDSIGHT"
    node_port: int = 11112
    node_bind: str = "127.0.0.1"
    node_remotes: str = ""
    node_auto_analyse: bool = False
    node_user: str = ""

    @classmethod
    def from_env(cls) -> "Settings":
        """Build settings from `MEDSIGHT_*` environment variables."""
        home = os.environ.get("MEDSIGHT_HOME")
        secret_file = os.environ.get("MEDSIGHT_DEID_SECRET_FILE", "").strip()
        return cls(
            home=Path(home).expanduser().resolve() if home else PROJECT_ROOT / ".medsight",
            device=os.environ.get("MEDSIGHT_DEVICE", "auto").strip().lower() or "auto",
            allow_network=_env_bool("MEDSIGHT_ALLOW_DOWNLOADS"),
            cloud_llm_consent=_env_bool("MEDSIGHT_CLOUD_LLM"),
            store_identifiers=_env_bool("MEDSIGHT_STORE_IDENTIFIERS"),
            chroma_url=os.environ.get("MEDSIGHT_CHROMA_URL", "").strip(),
            max_upload_mb=int(os.environ.get("MEDSIGHT_MAX_UPLOAD_MB", "200")),
            session_minutes=int(os.environ.get("MEDSIGHT_SESSION_MINUTES", "60")),
            lockout_attempts=int(os.environ.get("MEDSIGHT_LOCKOUT_ATTEMPTS", "5")),
            lockout_minutes=int(os.environ.get("MEDSIGHT_LOCKOUT_MINUTES", "15")),
            deid_secret_file=Path(secret_file).expanduser().resolve() if secret_file else None,
            deid_retain_dates=_retain_dates(os.environ.get("MEDSIGHT_DEID_RETAIN_DATES", "")),
            identity_map_days=int(os.environ.get("MEDSIGHT_IDENTITY_MAP_DAYS", "30")),
            node_ae_title=os.environ.get("MEDSIGHT_NODE_AE_TITLE", "").strip() or "MEDSIGHT",
            node_port=int(os.environ.get("MEDSIGHT_NODE_PORT", "11112")),
            node_bind=os.environ.get("MEDSIGHT_NODE_BIND", "").strip() or "127.0.0.1",
            node_remotes=os.environ.get("MEDSIGHT_NODE_REMOTES", "").strip(),
            node_auto_analyse=_env_bool("MEDSIGHT_NODE_AUTO_ANALYSE"),
            node_user=os.environ.get("MEDSIGHT_NODE_USER", "").strip(),
        )

    # Derived locations inside the data directory.
    @property
    def models_dir(self) -> Path:
        """User-supplied weights (checked before the shipped `models/` folder)."""
        return self.home / "models"

    @property
    def db_path(self) -> Path:
        return self.home / "history.sqlite3"

    @property
    def chroma_dir(self) -> Path:
        return self.home / "chroma"

    @property
    def dicom_inbox(self) -> Path:
        """Instances received by the DICOM node, one file each (owner-only, like the rest of `home`)."""
        return self.home / "dicom-inbox"

    @property
    def users_path(self) -> Path:
        return self.home / "users.yaml"

    @property
    def deid_secret_path(self) -> Path:
        """The per-installation secret behind UID, patient and date pseudonyms."""
        return self.deid_secret_file or self.home / "deid-secret.key"

    @property
    def identity_map_path(self) -> Path:
        """Encrypted map from pseudonymous study UIDs back to the source PACS's identifiers."""
        return self.home / "identity-map.sqlite3"

    def ensure_dirs(self) -> "Settings":
        """Create the data directory tree, readable by its owner only (idempotent), and return self."""
        for path in (self.home, self.models_dir, self.chroma_dir):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.home, 0o700)  # studies, history and accounts are private to this user account
        return self

    @staticmethod
    def api_key(name: str = "GEMINI_API_KEY") -> str | None:
        """Read an API key from the environment; never cached or persisted."""
        value = os.environ.get(name, "").strip()
        return value or None

    def __repr__(self) -> str:  # keys are never part of the object, but keep repr explicit
        parts = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self))
        return f"Settings({parts})"


def get_settings() -> Settings:
    """Current settings (re-read from the environment each call so tests can patch it)."""
    return Settings.from_env()
