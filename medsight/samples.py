"""Bundled synthetic sample studies, listed in `models/samples/manifest.json`."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from medsight.config import SHIPPED_MODELS_DIR

log = logging.getLogger("medsight.app")

SAMPLES_DIR = SHIPPED_MODELS_DIR / "samples"


@dataclass(frozen=True)
class SampleStudy:
    title: str
    path: Path
    description: str = ""


def sample_studies(samples_dir: Path | None = None) -> list[SampleStudy]:
    """Sample studies of the manifest in `samples_dir` (default `SAMPLES_DIR`); empty if none or unreadable.

    Only files inside the samples folder are listed.
    """
    samples_dir = Path(samples_dir or SAMPLES_DIR)
    manifest = samples_dir / "manifest.json"
    if not manifest.is_file():
        return []
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("sample manifest unreadable: %s", type(exc).__name__)
        return []
    entries = data.get("samples", data.get("studies", [])) if isinstance(data, dict) else data
    samples: list[SampleStudy] = []
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, str):
            entry = {"file": entry}
        if not isinstance(entry, dict):
            continue
        name = entry.get("file") or entry.get("path") or entry.get("filename")
        if not name:
            continue
        path = (samples_dir / str(name)).resolve()
        if samples_dir.resolve() not in path.parents or not path.is_file():
            continue
        title = str(entry.get("title") or entry.get("name") or entry.get("label") or path.name)
        samples.append(SampleStudy(title, path, str(entry.get("description") or "")))
    return samples
