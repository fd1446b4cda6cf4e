"""MedGemma's MLX path run for real on a tiny Gemma 3 model (mlx[cpu] on Linux, Metal on a Mac).

The model folder is built offline by `tests/tiny_gemma3.py` (random weights, tokenizer trained on report text):
it exists only to exercise loading through the registry, streaming generation, timings and memory, the
schema and grounding checks, the fall-through to the next tier, and unloading. Its output is garbage and
must be rejected everywhere.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil

import numpy as np
import pytest
from pydantic import BaseModel, Field

if importlib.util.find_spec("mlx_vlm") is None:
    # Required under CI=true, as the browser tests are: a silent skip would hide a broken install.
    if os.environ.get("CI", "").lower() == "true":
        raise ImportError("mlx-vlm is not installed; `make install-dev` installs mlx[cpu] and mlx-vlm on Linux")
    pytest.skip("mlx-vlm is not installed; `make install-dev` installs mlx[cpu] and mlx-vlm on Linux",
                allow_module_level=True)

from medsight import registry  # noqa: E402
from medsight.llm import get_language_model  # noqa: E402
from medsight.llm.base import LanguageModel, LLMBackend, LLMError, Prompt  # noqa: E402
from medsight.llm.mlx_backend import MLXMedGemmaBackend  # noqa: E402
from tiny_gemma3 import build_tiny_gemma3  # noqa: E402

PROMPT = Prompt("You check chest X-ray reports.", "Report: small left pleural effusion. Is it consistent?")


class Verdict(BaseModel):
    consistent: bool
    confidence: float = Field(ge=0, le=1)


class NextTier(LLMBackend):
    """Stands for the next local model; answers valid JSON and records that it was asked."""

    name, tier = "next-local-model", "real"

    def __init__(self):
        self.calls = 0

    def _generate(self, prompt, *, image=None, max_tokens=512, json_mode=False, schema=None):
        self.calls += 1
        return json.dumps({"consistent": True, "confidence": 0.7})

    def _stream(self, prompt, *, image=None, max_tokens=512):
        self.calls += 1
        yield "Small left pleural effusion."


@pytest.fixture(scope="module")
def tiny_gemma3(tmp_path_factory):
    """The tiny MLX Gemma 3 folder, built once per test module."""
    return build_tiny_gemma3(tmp_path_factory.mktemp("mlx") / "medgemma-4b-it-mlx")


@pytest.fixture
def mlx_from_registry(tiny_gemma3, medsight_home):
    """The tiny model placed in the data directory's models folder and loaded by the registry's file source."""
    from medsight.config import get_settings

    settings = get_settings()
    shutil.copytree(tiny_gemma3, settings.models_dir / "medgemma-4b-it-mlx")
    loaded = registry.load("llm.text", settings, reload=True)
    yield loaded
    if isinstance(loaded.model, MLXMedGemmaBackend) and loaded.model.loaded:
        loaded.model.unload()
    registry.clear_cache()


def test_registry_file_source_loads_mlx_model_with_honest_provenance(mlx_from_registry):
    backend, provenance = mlx_from_registry.model, mlx_from_registry.provenance
    assert isinstance(backend, MLXMedGemmaBackend)
    assert backend.model.config.model_type == "gemma3"
    assert provenance.source == "file" and provenance.path.endswith("medgemma-4b-it-mlx")
    assert len(provenance.sha256) == 64
    # A hand-placed folder is not a recognised published build: USER tier, checked like a small model.
    assert provenance.tier == "user" and backend.tier == "user" and backend.weak
    assert "checked before it is shown" in provenance.notes and "MB of MLX memory" in provenance.notes
    assert backend.load_seconds > 0 and backend.load_memory_mb > 0
    assert provenance.tried[0].endswith("loaded")


def test_streaming_matches_generation_and_records_timings(mlx_from_registry):
    backend = mlx_from_registry.model
    text = backend.generate(PROMPT, max_tokens=24)
    stats = dict(backend.last_stats)
    chunks = list(backend.stream(PROMPT, max_tokens=24))
    assert text and len(chunks) >= 2 and all(chunks), "streamed in several non-empty pieces"
    assert "".join(chunks).strip() == text, "greedy decoding: the stream and the one-shot answer agree"
    for run in (stats, backend.last_stats):
        assert run["prompt_tokens"] > 10 and 0 < run["generation_tokens"] <= 24
        assert run["generation_tokens_per_s"] > 0 and run["peak_memory_mb"] > 0 and run["seconds"] > 0
    assert 0 < backend.last_stats["first_chunk_seconds"] <= backend.last_stats["seconds"]


def test_radiograph_goes_through_the_vision_tower(mlx_from_registry):
    backend = mlx_from_registry.model
    radiograph = np.random.default_rng(0).random((96, 80)).astype(np.float32)
    backend.generate(PROMPT, image=radiograph, max_tokens=4)
    with_image = backend.last_stats["prompt_tokens"]
    backend.generate(PROMPT, max_tokens=4)
    # The image adds its soft tokens (4 for this tiny model) plus the begin/end-of-image markers.
    assert with_image > backend.last_stats["prompt_tokens"]


def test_garbage_from_mlx_is_rejected_and_the_next_tier_answers(mlx_from_registry):
    mlx, following = mlx_from_registry.model, NextTier()
    answer = LanguageModel([mlx, following]).generate_json(Verdict, PROMPT, max_tokens=32,
                                                           rules=lambda: Verdict(consistent=False, confidence=0))
    assert answer.backend == "next-local-model" and answer.value.confidence == 0.7 and following.calls == 1
    rejected = [a for a in answer.attempts if a.backend == "medgemma-mlx"]
    assert len(rejected) == 2, "one retry with the validation error, then the next tier"
    assert all(not a.ok and a.error for a in rejected)
    assert any("JSON" in a.error for a in rejected), "the reason is recorded"
    assert answer.to_dict()["attempts"][-1] == {"backend": "next-local-model", "ok": True,
                                                "seconds": answer.attempts[-1].seconds, "error": ""}


@pytest.mark.slow  # the reasoning task asks for up to 768 tokens, twice
def test_clinical_reasoning_rejects_mlx_garbage_and_records_why(mlx_from_registry):
    from medsight.llm.reasoning import clinical_reasoning

    analysis = {"pathology": {"labels": ["Effusion"], "probabilities": {"Effusion": 0.8},
                              "thresholds": {"Effusion": 0.5}, "positives": ["Effusion"], "tier": "demo"}}
    radiograph = np.random.default_rng(1).random((64, 64)).astype(np.float32)
    result = clinical_reasoning(analysis, "dyspnoea", image=radiograph, llm=LanguageModel([mlx_from_registry.model]))
    assert result.backend == "rules" and result.tier == "rules" and not result.used_image
    assert [a["backend"] for a in result.attempts] == ["medgemma-mlx", "medgemma-mlx", "rules"]
    assert all(a["error"] for a in result.attempts[:2])


def test_chat_checks_an_unrecognised_mlx_model_before_showing_it(mlx_from_registry):
    from medsight.chat import ChatEngine

    analysis = {"analysis_id": "a-1", "pathology": {
        "labels": ["Effusion"], "probabilities": {"Effusion": 0.7}, "thresholds": {"Effusion": 0.5},
        "positives": ["Effusion"], "tier": "demo"}}
    reply = ChatEngine(None, LanguageModel([mlx_from_registry.model])).answer(
        "Explain the pleural effusion", analysis=analysis)
    assert reply.backend == "template" and reply.tier == "rules"
    attempt = next(a for a in reply.attempts if a["backend"] == "medgemma-mlx")
    assert attempt["ok"] is False and attempt["error"]
    assert any("medgemma-mlx" in note and "failed the checks" in note for note in reply.notes)


def test_get_language_model_keeps_next_local_model_behind_mlx(mlx_from_registry, monkeypatch):
    import medsight.llm as llm

    following = NextTier()
    monkeypatch.setattr(llm, "_smollm2", lambda ctx: registry.Found(following))
    monkeypatch.setattr(llm, "_NEXT_LOCAL", {})
    lm = get_language_model(use_local=True)
    assert lm.names == ["medgemma-mlx", "next-local-model", "rules"]
    record: dict = {}
    text = "".join(lm.stream_text(PROMPT, max_tokens=8, record=record))
    assert record["backend"] == "medgemma-mlx" and text, "MLX streamed first"
    assert get_language_model(use_local=True, include_weak=False).names == ["next-local-model", "rules"]


def test_failed_mlx_stream_falls_through_visibly(mlx_from_registry):
    mlx, following = mlx_from_registry.model, NextTier()
    mlx.unload()
    record: dict = {}
    text = "".join(LanguageModel([mlx, following]).stream_text(PROMPT, record=record))
    assert text == "Small left pleural effusion." and record["backend"] == "next-local-model"
    assert record["errors"] == ["medgemma-mlx: LLMError"]
    with pytest.raises(LLMError, match="unloaded"):
        mlx.generate(PROMPT, max_tokens=4)


def test_unloading_frees_the_mlx_memory(mlx_from_registry):
    import mlx.core as mx

    backend = mlx_from_registry.model
    backend.generate(PROMPT, max_tokens=8)
    held = mx.get_active_memory() / 2**20
    freed = backend.unload()
    assert not backend.loaded
    assert freed >= 0.9 * backend.load_memory_mb > 0, (freed, backend.load_memory_mb)
    assert mx.get_active_memory() / 2**20 <= held - freed + 0.01
    assert mx.get_cache_memory() == 0, "MLX's buffer cache was released too"


@pytest.mark.slow  # loads SmolLM2 as the real next tier
def test_real_chain_mlx_then_smollm2_then_rules(mlx_from_registry, monkeypatch):
    import medsight.llm as llm

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setattr(llm, "_NEXT_LOCAL", {})
    lm = get_language_model(use_local=True)
    assert lm.names == ["medgemma-mlx", "smollm2-135m-instruct", "rules"]
    answer = lm.generate_json(Verdict, PROMPT, max_tokens=24, rules=lambda: Verdict(consistent=False, confidence=0))
    tried = [a.backend for a in answer.attempts]
    assert tried[:2] == ["medgemma-mlx", "medgemma-mlx"] and "smollm2-135m-instruct" in tried
    assert not any(a.ok for a in answer.attempts if a.backend == "medgemma-mlx")
    assert answer.backend in ("smollm2-135m-instruct", "rules") and isinstance(answer.value, Verdict)
