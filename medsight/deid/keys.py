"""The installation secret and the keyed pseudonyms derived from it.

One random secret per installation (created once with :mod:`secrets`, stored 0600 in the data
directory) keys every pseudonym with HMAC-SHA256: the same UID or Patient ID always gets the same
pseudonym on this workstation, so series, studies and priors still link, while another
installation, or anyone who holds an original UID but not the secret, cannot recompute it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tempfile
import uuid
from pathlib import Path

_SECRET_BYTES = 32
_cache: dict[str, bytes] = {}


def _default_path() -> Path:
    from medsight.config import get_settings

    return get_settings().deid_secret_path


def _read_secret(path: Path) -> bytes:
    text = path.read_text(encoding="ascii").strip()
    secret = bytes.fromhex(text)
    if len(secret) < _SECRET_BYTES:
        raise ValueError(f"The de-identification secret in {path} is too short.")
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)  # the secret must stay private to this user account
    return secret


def installation_secret(path: Path | str | None = None) -> bytes:
    """This installation's secret, created on first use (0600; never replaced once written)."""
    path = Path(path) if path is not None else _default_path()
    key = str(path)
    if key in _cache and path.exists():
        return _cache[key]
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".deid-secret-")
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(secrets.token_hex(_SECRET_BYTES) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o600)
            try:
                os.link(tmp, path)  # atomic and never overwrites: a concurrent first use keeps one secret
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
    _cache[key] = _read_secret(path)
    return _cache[key]


def _digest(purpose: str, value: str, secret: bytes | None) -> bytes:
    secret = secret if secret is not None else installation_secret()
    return hmac.new(secret, f"{purpose}\x00{value}".encode("utf-8"), hashlib.sha256).digest()


def uid_pseudonym(uid: str, secret: bytes | None = None) -> str:
    """Replacement UID for ``uid``: ``2.25.<int>`` of a keyed random-form UUID (same input, same output)."""
    digest = _digest("uid", str(uid).strip().rstrip("\x00"), secret)
    return f"2.25.{uuid.UUID(bytes=digest[:16], version=4).int}"


def patient_pseudonym(patient_id: str, secret: bytes | None = None) -> str:
    """Keyed pseudonym of a Patient ID (16 upper-case hex digits), linking priors inside this installation."""
    return _digest("patient", str(patient_id).strip(), secret).hex()[:16].upper()


def pseudonym(value: str, secret: bytes | None = None) -> str:
    """Keyed, non-reversible 16-hex-digit pseudonym for an identifier such as a UID."""
    return _digest("pseudonym", str(value).strip(), secret).hex()[:16]


def date_offset_days(patient_id: str, secret: bytes | None = None) -> int:
    """Days every date of this patient moves back under the modified-dates option (1 to 3650)."""
    return 1 + int.from_bytes(_digest("date-offset", str(patient_id).strip(), secret)[:4], "big") % 3650


def installation_fingerprint(secret: bytes | None = None) -> str:
    """Short tag recorded in what this installation de-identified, so it is not pseudonymised twice."""
    return _digest("fingerprint", "", secret).hex()[:8]
