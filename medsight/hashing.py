"""SHA-256 of weights files and folders, remembered per process (the registry and the weights table share it)."""

from __future__ import annotations

import hashlib
from pathlib import Path

_HASHES: dict[tuple, str] = {}


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, or of every file in a folder in sorted order.

    Remembered per process by (path, sizes, modification times), because weights folders reach hundreds of
    MB and the same folder is loaded again whenever the data directory changes.
    """
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    stamps = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    key = (str(path.resolve()), stamps)
    if key in _HASHES:
        return _HASHES[key]
    digest = hashlib.sha256()
    for file in files:
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(chunk), b""):
                digest.update(block)
    _HASHES[key] = digest.hexdigest()
    return _HASHES[key]
