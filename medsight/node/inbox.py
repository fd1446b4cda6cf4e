"""Received instances on disk: one file per SOP instance, written so a crash never leaves a half-written one.

Each instance is written to `partial/` (owner-only), flushed and fsynced, then hard-linked to its final name
and the folder fsynced: the final name appears only for a complete file, and a second copy of the same
instance can never replace the first (the link fails). Files are named by a keyed hash of the SOP Instance
UID (the key is a random secret of this data directory), so file names reveal no UID.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import uuid
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

SUFFIX = ".dcm"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Inbox:
    """The folder of received instances (`Settings.dicom_inbox`)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.partial = self.root / "partial"
        for folder in (self.root, self.partial):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(folder, 0o700)
        self._key = self._secret()

    def _secret(self) -> bytes:
        path = self.root / ".instance-key"
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            return bytes.fromhex(path.read_text().strip())
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
            handle.flush()
            os.fsync(handle.fileno())
        return bytes.fromhex(path.read_text().strip())

    def instance_key(self, sop_instance_uid: str) -> str:
        """The keyed hash naming an instance (same UID, same key, in this data directory only)."""
        return hmac.new(self._key, str(sop_instance_uid).strip().encode("ascii", "replace"),
                        hashlib.sha256).hexdigest()[:40]

    def path_for(self, key: str) -> Path:
        return self.root / f"{key}{SUFFIX}"

    def store(self, key: str, write: Callable[[BinaryIO], None]) -> tuple[Path, bool]:
        """Durably store one instance; `write(file)` writes its DICOM file content.

        Returns:
            (final path, True) for a new instance; (final path, False) when it was already stored (the new
            copy is discarded).
        """
        final = self.path_for(key)
        if final.exists():
            return final, False
        temporary = self.partial / f"{key}.{uuid.uuid4().hex}.part"
        fd = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(temporary, final)
                created = True
            except FileExistsError:  # another association delivered the same instance first
                created = False
            _fsync_dir(self.root)
        finally:
            temporary.unlink(missing_ok=True)
        return final, created

    def files(self) -> Iterator[Path]:
        """Every complete instance file."""
        return (p for p in self.root.glob(f"*{SUFFIX}") if p.is_file())

    def sweep_partials(self) -> int:
        """Delete what a crash left in `partial/` (never acknowledged, so the sender retries). Returns how many."""
        removed = 0
        for leftover in self.partial.glob("*.part"):
            leftover.unlink(missing_ok=True)
            removed += 1
        return removed

    def partial_files(self) -> list[Path]:
        return sorted(self.partial.glob("*.part"))
