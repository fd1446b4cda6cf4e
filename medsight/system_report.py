"""What the System page reports, as plain rows and text: models, settings, data directory, versions, audit, users."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib.metadata
import platform
import shutil
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from medsight import registry
from medsight.config import Settings

KEY_LIBRARIES = (
    "streamlit", "torch", "torchvision", "numpy", "pydicom", "pylibjpeg", "torchxrayvision", "scikit-learn",
    "opencv-python-headless", "transformers", "sentence-transformers", "spacy", "negspacy", "chromadb",
    "faster-whisper", "google-genai", "fpdf2", "bcrypt", "streamlit-authenticator",
)
NOT_INSTALLED = "NOT INSTALLED\n"  # prefix of a slot's load error that means "no weights", not a fault


def known_slots() -> list[registry.ModelSlot]:
    """Every slot that registered, even when one slot module failed to import."""
    try:
        return registry.all_slots()
    except Exception:
        # all_slots() stops at the first module that fails; show what did register.
        return registry.registered_slots()


def mask_url(url: str) -> str:
    """The URL with any user name and password replaced by ***."""
    if not url:
        return ""
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        parts = parts._replace(netloc=f"***@{host}")
    return urlunsplit(parts)


def package_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def file_size(path: Path) -> str:
    try:
        size = path.stat().st_size
    except OSError:
        return "—"
    return f"{size / 2**20:.1f} MB" if size >= 2**20 else f"{size / 1024:.0f} KB"


def tier_counts(slots: list[registry.ModelSlot], loaded: dict[str, registry.LoadedModel]) -> str:
    """"N slots · M loaded · r real, u user, d demo, x rules"."""
    tiers = [loaded[s.name].provenance.tier for s in slots if s.name in loaded]
    return (f"{len(slots)} slots · {len(loaded)} loaded · "
            f"{tiers.count('real')} real, {tiers.count('user')} user, {tiers.count('demo')} demo, "
            f"{tiers.count('rules')} rules")


def provenance_facts(p: registry.Provenance) -> list[str]:
    """Where a loaded model came from: source, file, version, hash, training domain, notes."""
    facts = [f"From: {p.source_label}"]
    if p.path:
        facts.append(f"File: `{p.path}`")
    if p.version:
        facts.append(f"Version: {p.version}")
    if p.sha256:
        facts.append(f"SHA-256: `{p.sha256[:16]}…`")
    if p.domain:
        facts.append(f"Trained on: {p.domain_description}")
    if p.hash_status:
        facts.append("Weights: " + ("published ✓" if p.hash_status == "published"
                                    else "unknown provenance (not a pinned published file)"))
    if p.notes:
        facts.append(p.notes)
    return facts


def runtime_facts(loaded: registry.LoadedModel) -> list[str]:
    """Which runtime an image model's forward pass uses now (ONNX Runtime or PyTorch, and why); [] for others."""
    if not hasattr(loaded.model, "start_onnx_runtime"):
        return []
    from medsight.models.onnx_runtime import runtime_note

    return [runtime_note(loaded.model)]


def outputs_line(slot: registry.ModelSlot, loaded: registry.LoadedModel | None) -> str:
    """The loaded model's own output labels (the demo classifier has 5, the published one 18), else the slot's."""
    labels = list(getattr(loaded.model, "labels", None) or []) if loaded is not None else []
    if not (labels or slot.labels):
        return ""
    return ("Outputs: " if labels else "Outputs of the published model: ") + ", ".join(labels or slot.labels)


def weights_rows(rows: list) -> list[dict]:
    """Table of a slot's published files (`weights.verify` items)."""
    return [{"file": item.row.path, "status": item.label, "sha256 (pinned)": item.row.sha256 or "not published",
             "size": f"{item.row.size:,} B" if item.row.size else "not published",
             "installed at": str(item.path) if item.path else "—", "notes": item.row.notes} for item in rows]


def settings_rows(current: Settings) -> list[dict]:
    """Every setting with its value; the Chroma URL without credentials, the API key only as set / not set."""
    rows = []
    for field in dataclasses.fields(Settings):
        value = getattr(current, field.name)
        if field.name == "chroma_url":
            value = mask_url(str(value)) or "(embedded store)"
        rows.append({"setting": field.name, "value": str(value)})
    rows.append({"setting": "GEMINI_API_KEY", "value": "set" if Settings.api_key() else "not set"})
    return rows


def data_rows(current: Settings, history: Any) -> list[dict]:
    """Data directory, database, accounts file, user models folder and free disk."""
    usage = shutil.disk_usage(current.home)
    return [
        {"item": "Data directory", "value": str(current.home)},
        {"item": "History database", "value": f"{current.db_path} ({file_size(current.db_path)})"},
        {"item": "Database mode", "value": f"{history.journal_mode}, schema v{history.schema_version}"},
        {"item": "Accounts file",
         "value": f"{current.users_path} ({'present' if current.users_path.exists() else 'absent'})"},
        {"item": "User model folder", "value": str(current.models_dir)},
        {"item": "Free disk", "value": f"{usage.free / 2**30:.1f} GB of {usage.total / 2**30:.1f} GB"},
    ]


def version_rows() -> list[dict]:
    """Python, medsight and the key libraries with their installed versions."""
    rows = [{"package": "python", "version": platform.python_version()},
            {"package": "medsight", "version": sys.modules["medsight"].__version__}]
    return rows + [{"package": name, "version": package_version(name)} for name in KEY_LIBRARIES]


def audit_rows(events: list[dict]) -> list[dict]:
    """Audit events with local times."""
    rows = []
    for event in events:
        try:
            when = _dt.datetime.fromisoformat(event["created"]).astimezone().strftime("%Y-%m-%d %H:%M:%S")
        except ValueError:
            when = event["created"]
        rows.append({"time": when, "user": event["user"] or "—", "event": event["event"], "detail": event["detail"]})
    return rows


def account_rows(auth: Any) -> list[dict]:
    """Accounts with display name, roles and sign-in state (open, recent failures, paused until)."""
    rows = []
    for name, entry in sorted(auth.users.users().items()):
        until = auth.locked_until(name)
        failures = auth.failed_attempts(name)
        rows.append({"user": name, "name": auth.users.display_name(entry, name),
                     "roles": ", ".join(auth.users.roles_of(entry)),
                     "sign-in": f"paused until {until.astimezone():%H:%M:%S}" if until else
                                (f"{failures} recent failures" if failures else "open")})
    return rows


def roles_with_admin(current: tuple, make_admin: bool) -> tuple:
    """The roles an account gets when the administrator role is given or taken (radiologist at least)."""
    from medsight.auth import ADMIN, RADIOLOGIST

    if make_admin:
        return tuple({*current, RADIOLOGIST, ADMIN})
    return tuple(set(current) - {ADMIN}) or (RADIOLOGIST,)


def placement_rows(titles: dict[str, str], target: Any, device: str) -> list[dict]:
    """Which processor each model slot uses on `target` (a `device.Platform`)."""
    from medsight.device import placements

    return [{"Model": titles.get(p.slot, p.slot), "Runs on": p.processor, "Framework": p.framework,
             "Weights": p.dtype, "Note": p.note} for p in placements(titles, target, device)]
