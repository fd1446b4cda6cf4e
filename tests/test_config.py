"""Settings from the environment."""

from pathlib import Path

from medsight.config import PROJECT_ROOT, Settings, get_settings


def test_defaults(monkeypatch):
    for name in ("MEDSIGHT_HOME", "MEDSIGHT_ALLOW_DOWNLOADS", "MEDSIGHT_CLOUD_LLM", "MEDSIGHT_DEVICE"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings.from_env()
    assert settings.home == PROJECT_ROOT / ".medsight"
    assert settings.allow_network is False and settings.cloud_llm_consent is False
    assert settings.device == "auto"


def test_environment_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDSIGHT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MEDSIGHT_ALLOW_DOWNLOADS", "yes")
    monkeypatch.setenv("MEDSIGHT_CLOUD_LLM", "0")
    monkeypatch.setenv("MEDSIGHT_DEVICE", "CPU")
    settings = get_settings().ensure_dirs()
    assert settings.home == (tmp_path / "home").resolve()
    assert settings.allow_network is True and settings.cloud_llm_consent is False
    assert settings.device == "cpu"
    assert settings.models_dir.is_dir() and settings.chroma_dir.is_dir()
    assert settings.db_path.parent == settings.home


def test_api_key_never_in_repr(monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "secret-value-123")
    settings = Settings.from_env()
    assert Settings.api_key() == "secret-value-123"
    assert "secret-value-123" not in repr(settings)
    assert "secret-value-123" not in str(settings.__dict__)


def test_blank_key_is_none(monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "  ")
    assert Settings.api_key() is None
    assert isinstance(Path(Settings.from_env().home), Path)
