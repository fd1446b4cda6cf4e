"""Model registry: every model slot in the product, its ordered sources, and honest provenance.

A slot tries its sources in order: a weights file (user data dir, then the shipped `models/` folder) →
the library's own local cache (Hugging Face / torch hub / whisper cache) → a download, only when the
user has allowed network access → a built-in demo tier (weights trained here on synthetic phantoms) or a
deterministic rule engine. Loading returns the model with where it came from; the System page is a view
of this module.

Example:
    >>> from medsight import registry
    >>> loaded = registry.load("anomaly.detector")          # doctest: +SKIP
    >>> loaded.provenance.tier                               # doctest: +SKIP
    'demo'
"""

from __future__ import annotations

import hashlib
import importlib
import threading
import time
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable

from medsight.config import SHIPPED_MODELS_DIR, Settings, get_settings
from medsight.device import pick_device


class Tier(str, Enum):
    """How trustworthy a loaded model is. Shown wherever its output is shown."""

    REAL = "real"  # the published/official weights
    DEMO = "demo"  # weights this project trained on synthetic phantoms: for demonstration only
    RULES = "rules"  # a deterministic rule engine (no learned weights)

    def __str__(self) -> str:  # so f-strings print "demo", not "Tier.DEMO"
        return self.value


TIER_BADGES = {
    Tier.REAL: "REAL — published weights",
    Tier.DEMO: "DEMO — trained on synthetic phantoms, not for clinical use",
    Tier.RULES: "RULES — deterministic engine, no learned model",
}


class SourceKind(str, Enum):
    FILE = "file"
    CACHE = "cache"
    DOWNLOAD = "download"
    BUILTIN = "builtin"

    def __str__(self) -> str:
        return self.value


class ModelUnavailable(RuntimeError):
    """No source of a slot could provide a model. The message lists what was tried."""


@dataclass
class Found:
    """What a source loader returns when it has the model."""

    model: Any
    path: str | None = None
    version: str = ""
    notes: str = ""


@dataclass
class LoadContext:
    """Passed to every source loader."""

    settings: Settings
    device: str

    def find_file(self, *names: str) -> Path | None:
        """First existing file among `names`, in the user's models dir, then the shipped `models/`."""
        for base in (self.settings.models_dir, SHIPPED_MODELS_DIR):
            for name in names:
                candidate = base / name
                if candidate.is_file() or candidate.is_dir():
                    return candidate
        return None


Loader = Callable[[LoadContext], "Found | None"]


@dataclass
class Source:
    """One place a slot may get its model from.

    A loader returns `Found` when it has the model, `None` when the source is simply absent, and raises
    when the source is present but broken (the error is recorded and the next source is tried).
    """

    kind: SourceKind
    label: str
    tier: Tier
    loader: Loader


@dataclass
class ModelSlot:
    """A named place in the product where a model runs."""

    name: str
    title: str
    task: str
    sources: list[Source]
    labels: tuple[str, ...] = ()
    input_spec: str = ""
    how_to_get_real: str = ""


@dataclass
class Provenance:
    """Where a loaded model came from; serialises to JSON for History and the PDF."""

    slot: str
    title: str
    tier: str
    source: str
    source_label: str
    device: str
    path: str | None = None
    version: str = ""
    sha256: str = ""
    load_seconds: float = 0.0
    rss_delta_mb: float = 0.0
    notes: str = ""
    tried: list[str] = field(default_factory=list)

    @property
    def badge(self) -> str:
        return TIER_BADGES[Tier(self.tier)]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LoadedModel:
    model: Any
    provenance: Provenance


_SLOTS: dict[str, ModelSlot] = {}
_CACHE: dict[tuple, LoadedModel] = {}
_LOCK = threading.RLock()

# Modules that register slots when imported. Kept in pipeline order for the System page.
SLOT_MODULES = (
    "medsight.models.anomaly",
    "medsight.models.pathology",
    "medsight.nlp",
    "medsight.retrieval",
    "medsight.llm",
    "medsight.voice",
)


def register(slot: ModelSlot) -> ModelSlot:
    """Add a slot (re-registering the same name replaces it, so module reloads are harmless)."""
    if not slot.sources:
        raise ValueError(f"slot {slot.name} has no sources")
    with _LOCK:
        _SLOTS[slot.name] = slot
    return slot


def _import_slot_modules() -> None:
    for module in SLOT_MODULES:
        importlib.import_module(module)


def all_slots() -> list[ModelSlot]:
    """Every registered slot, importing the modules that define them."""
    _import_slot_modules()
    return list(_SLOTS.values())


def registered_slots() -> list[ModelSlot]:
    """Slots registered so far, without importing anything (for views that import modules one by one)."""
    with _LOCK:
        return list(_SLOTS.values())


def get_slot(name: str) -> ModelSlot:
    if name not in _SLOTS:
        _import_slot_modules()
    try:
        return _SLOTS[name]
    except KeyError:
        raise KeyError(f"No model slot named {name!r}. Known: {', '.join(sorted(_SLOTS))}") from None


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


def _rss_mb() -> float:
    try:
        import psutil
    except ImportError:
        return 0.0
    return psutil.Process().memory_info().rss / 2**20


def load(name: str, settings: Settings | None = None, device: str | None = None, *, reload: bool = False) -> LoadedModel:
    """Load a slot's model from the first source that has it; cached once per process.

    Args:
        name: slot name, e.g. "anomaly.detector".
        settings: defaults to `get_settings()`.
        device: torch device; defaults to the settings' device preference resolved by `pick_device`.
        reload: ignore the process cache.

    Raises:
        ModelUnavailable: when no source could provide the model; the message lists each attempt.
    """
    settings = settings or get_settings()
    device = device or pick_device(settings.device).torch_device
    key = (name, device, settings.allow_network, str(settings.home))
    with _LOCK:
        if not reload and key in _CACHE:
            return _CACHE[key]
        slot = get_slot(name)
        ctx = LoadContext(settings=settings, device=device)
        tried: list[str] = []
        for source in slot.sources:
            if source.kind is SourceKind.DOWNLOAD and not settings.allow_network:
                tried.append(f"{source.label}: skipped (downloads not allowed; set MEDSIGHT_ALLOW_DOWNLOADS=1)")
                continue
            rss_before, start = _rss_mb(), time.perf_counter()
            try:
                found = source.loader(ctx)
            except Exception as exc:  # a present-but-broken source must not hide the next one
                tried.append(f"{source.label}: failed ({type(exc).__name__}: {exc})")
                continue
            if found is None:
                tried.append(f"{source.label}: not present")
                continue
            elapsed = time.perf_counter() - start
            sha = ""
            if found.path and Path(found.path).exists():
                sha = sha256_of(found.path)
            provenance = Provenance(
                slot=slot.name,
                title=slot.title,
                tier=source.tier.value,
                source=source.kind.value,
                source_label=source.label,
                device=device,
                path=found.path,
                version=found.version,
                sha256=sha,
                load_seconds=round(elapsed, 3),
                rss_delta_mb=round(max(0.0, _rss_mb() - rss_before), 1),
                notes=found.notes,
                tried=tried + [f"{source.label}: loaded"],
            )
            loaded = LoadedModel(model=found.model, provenance=provenance)
            _CACHE[key] = loaded
            return loaded
        raise ModelUnavailable(
            f"{slot.title}: no source could provide a model.\n- " + "\n- ".join(tried)
            + (f"\nHow to get the real model: {slot.how_to_get_real}" if slot.how_to_get_real else "")
        )


def loaded_models() -> list[LoadedModel]:
    """Models loaded so far in this process (for the System page)."""
    with _LOCK:
        return list(_CACHE.values())


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()
