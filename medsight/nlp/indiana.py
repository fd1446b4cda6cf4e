"""Loader for the Indiana University / OpenI chest X-ray reports shipped inside torchxrayvision.

torchxrayvision's wheel carries `data/NLMCXR_reports.tgz`: 3,955 de-identified radiology report XMLs
(CC BY-NC-ND 4.0) with COMPARISON, INDICATION, FINDINGS and IMPRESSION sections. De-identification
replaced names, dates and some words with "XXXX"; that text is kept as is.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

ARCHIVE_NAME = "NLMCXR_reports.tgz"
LICENSE = "CC BY-NC-ND 4.0 (Indiana University Chest X-ray Collection, via OpenI / torchxrayvision)"


def indiana_archive_path() -> Path:
    """Path of the report archive inside the installed torchxrayvision package.

    Raises:
        FileNotFoundError: when torchxrayvision (or the archive inside it) is not installed.
    """
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("torchxrayvision is not installed; the Indiana reports ship inside its wheel")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / ARCHIVE_NAME
    if not path.is_file():
        raise FileNotFoundError(f"Indiana report archive not found at {path}")
    return path


def _clean(text: str | None) -> str:
    return re.sub(r"\s+", " ", text or "").strip()


def _parse(xml_bytes: bytes) -> dict | None:
    root = ET.fromstring(xml_bytes)
    uid = root.find("uId")
    if uid is None or not uid.get("id"):
        return None
    sections = {
        (node.get("Label") or "").upper(): _clean(node.text) for node in root.iter("AbstractText")
    }
    return {
        "id": uid.get("id"),
        "findings": sections.get("FINDINGS", ""),
        "impression": sections.get("IMPRESSION", ""),
        "indication": sections.get("INDICATION", ""),
        "comparison": sections.get("COMPARISON", ""),
        "mesh": [_clean(node.text) for node in root.iter("major") if node.text],
        "images": [node.get("id") for node in root.iter("parentImage") if node.get("id")],
    }


@functools.lru_cache(maxsize=1)
def _load_all() -> tuple[dict, ...]:
    reports = []
    with tarfile.open(indiana_archive_path(), "r:gz") as archive:
        for member in archive:
            if not member.isfile() or not member.name.endswith(".xml"):
                continue
            handle = archive.extractfile(member)
            if handle is None:
                continue
            parsed = _parse(handle.read())
            if parsed is not None:
                reports.append(parsed)
    # Stable order by numeric report number (CXR1, CXR2, ...), independent of archive order.
    reports.sort(key=lambda r: int(re.sub(r"\D", "", r["id"]) or 0))
    return tuple(reports)


def load_indiana_reports(limit: int | None = None) -> list[dict]:
    """Read the Indiana/OpenI reports (parsed once per process, then served from memory).

    Args:
        limit: return only the first `limit` reports (in report-number order); None for all 3,955.

    Returns:
        A list of dicts with keys `id` (e.g. "CXR1"), `findings`, `impression` (possibly empty strings),
        plus `indication`, `comparison`, `mesh` (MeSH major terms) and `images` (image ids).

    Raises:
        FileNotFoundError: when torchxrayvision's archive is missing.
    """
    reports = _load_all()
    if limit is not None:
        reports = reports[: max(0, int(limit))]
    return [dict(r, mesh=list(r["mesh"]), images=list(r["images"])) for r in reports]


def report_text(report: dict) -> str:
    """The report as one text with FINDINGS and IMPRESSION headers (the form `analyze_text` expects)."""
    parts = []
    if report.get("findings"):
        parts.append(f"FINDINGS: {report['findings']}")
    if report.get("impression"):
        parts.append(f"IMPRESSION: {report['impression']}")
    return "\n".join(parts)
