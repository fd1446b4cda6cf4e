"""Registry source chain: order, download consent, broken sources, caching and provenance."""

import pytest

from medsight import registry
from medsight.config import Settings
from medsight.registry import Found, ModelSlot, ModelUnavailable, Source, SourceKind, Tier


@pytest.fixture
def settings(tmp_path):
    return Settings(home=tmp_path / "home").ensure_dirs()


def _file_source(filename):
    def loader(ctx):
        path = ctx.find_file(filename)
        return Found(model=("file", path.read_text()), path=str(path), version="v1") if path else None

    return Source(SourceKind.FILE, f"weights file {filename}", Tier.REAL, loader)


def _slot(name, calls, cache_dir=None):
    def cache_loader(ctx):
        calls.append("cache")
        target = cache_dir / "cached.bin" if cache_dir else None
        return Found(model=("cache",), path=str(target)) if target and target.exists() else None

    def download_loader(ctx):
        calls.append("download")
        return Found(model=("download",))

    def demo_loader(ctx):
        calls.append("demo")
        return Found(model=("demo",), notes="trained on phantoms")

    return registry.register(
        ModelSlot(
            name=name,
            title=f"Test slot {name}",
            task="testing",
            sources=[
                _file_source(f"{name}.bin"),
                Source(SourceKind.CACHE, "library cache", Tier.REAL, cache_loader),
                Source(SourceKind.DOWNLOAD, "download", Tier.REAL, download_loader),
                Source(SourceKind.BUILTIN, "demo weights", Tier.DEMO, demo_loader),
            ],
            how_to_get_real="put the file in the models folder",
        )
    )


def test_falls_through_to_demo_offline_and_records_each_attempt(settings):
    calls = []
    _slot("t.offline", calls)
    loaded = registry.load("t.offline", settings=settings, device="cpu", reload=True)
    assert loaded.model == ("demo",)
    assert calls == ["cache", "demo"], "download must not run without consent"
    prov = loaded.provenance
    assert prov.tier == "demo" and prov.source == "builtin"
    assert [t.split(":")[0] for t in prov.tried] == ["weights file t.offline.bin", "library cache", "download", "demo weights"]
    assert "skipped" in prov.tried[2]
    assert "DEMO" in prov.badge


def test_download_runs_only_when_allowed(tmp_path):
    calls = []
    _slot("t.online", calls)
    online = Settings(home=tmp_path / "h", allow_network=True).ensure_dirs()
    loaded = registry.load("t.online", settings=online, device="cpu", reload=True)
    assert loaded.model == ("download",) and calls == ["cache", "download"]
    assert loaded.provenance.tier == "real"


def test_user_file_wins_and_is_hashed(settings):
    calls = []
    _slot("t.file", calls)
    (settings.models_dir / "t.file.bin").write_text("weights")
    loaded = registry.load("t.file", settings=settings, device="cpu", reload=True)
    assert loaded.model == ("file", "weights") and calls == []
    assert loaded.provenance.sha256 == registry.sha256_of(settings.models_dir / "t.file.bin")
    assert len(loaded.provenance.sha256) == 64


def test_cache_before_download_and_demo(settings, tmp_path):
    calls = []
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    (cache_dir / "cached.bin").write_bytes(b"x")
    _slot("t.cache", calls, cache_dir=cache_dir)
    loaded = registry.load("t.cache", settings=settings, device="cpu", reload=True)
    assert loaded.model == ("cache",) and calls == ["cache"]


def test_broken_source_is_recorded_and_next_tried(settings):
    def broken(ctx):
        raise OSError("file is truncated")

    registry.register(
        ModelSlot(
            name="t.broken",
            title="Broken",
            task="testing",
            sources=[
                Source(SourceKind.FILE, "weights file", Tier.REAL, broken),
                Source(SourceKind.BUILTIN, "rules", Tier.RULES, lambda ctx: Found(model="rules")),
            ],
        )
    )
    loaded = registry.load("t.broken", settings=settings, device="cpu", reload=True)
    assert loaded.provenance.tier == "rules"
    assert "failed (OSError: file is truncated)" in loaded.provenance.tried[0]


def test_nothing_available_raises_with_the_chain(settings):
    registry.register(
        ModelSlot(
            name="t.none",
            title="Nothing",
            task="testing",
            sources=[Source(SourceKind.FILE, "weights file", Tier.REAL, lambda ctx: None)],
            how_to_get_real="ask the vendor",
        )
    )
    with pytest.raises(ModelUnavailable, match="weights file: not present") as info:
        registry.load("t.none", settings=settings, device="cpu", reload=True)
    assert "ask the vendor" in str(info.value)


def test_loaded_once_per_process(settings):
    calls = []
    _slot("t.cached", calls)
    first = registry.load("t.cached", settings=settings, device="cpu", reload=True)
    second = registry.load("t.cached", settings=settings, device="cpu")
    assert first is second and calls.count("demo") == 1
    assert first in registry.loaded_models()


def test_unknown_slot_names_the_known_ones(monkeypatch):
    monkeypatch.setattr(registry, "SLOT_MODULES", ())
    with pytest.raises(KeyError, match="No model slot named"):
        registry.get_slot("does.not.exist")


def test_slot_without_sources_rejected():
    with pytest.raises(ValueError):
        registry.register(ModelSlot(name="t.empty", title="x", task="x", sources=[]))
