"""MedGemma on Apple Silicon through mlx-vlm (image + text).

mlx and mlx-vlm install only on Apple Silicon (mlx[cpu] on Linux for tests), so every MLX import is inside
functions. Prompt building and output parsing are plain Python and are tested without MLX.

Model folders are looked up in the user's models dir (`medgemma-4b-it-mlx/`) and in the local Hugging Face
cache for the MLX community builds listed in `MLX_REPOS`; downloads happen only when the user allows them.
"""

from __future__ import annotations

import gc
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from medsight.llm.base import LLMBackend, LLMError, Prompt

MLX_REPOS = (
    "mlx-community/medgemma-4b-it-4bit",
    "mlx-community/medgemma-4b-it-8bit",
    "mlx-community/medgemma-4b-it-bf16",
)
LOCAL_FOLDER_NAMES = ("medgemma-4b-it-mlx", "medgemma-4b-it-4bit", "medgemma-4b-it-8bit")
IMAGE_TOKEN = "<start_of_image>"


def build_gemma_prompt(prompt: Prompt, with_image: bool = False) -> str:
    """Gemma 3 / MedGemma chat format.

    Gemma has no system role, so the system text opens the first user turn (as its chat template does).
    The image placeholder goes into the last user turn.
    """
    turns = [("user", m.content) if m.role == "user" else ("model", m.content) for m in prompt.history]
    turns.append(("user", prompt.user))
    if with_image:
        role, content = turns[-1]
        turns[-1] = (role, f"{IMAGE_TOKEN}\n{content}")
    first_user = next(i for i, (role, _) in enumerate(turns) if role == "user")
    role, content = turns[first_user]
    turns[first_user] = (role, f"{prompt.system}\n\n{content}")
    text = "<bos>" + "".join(f"<start_of_turn>{role}\n{content}<end_of_turn>\n" for role, content in turns)
    return text + "<start_of_turn>model\n"


_STOP_TOKENS = ("<end_of_turn>", "<eos>", "<start_of_turn>")


def parse_mlx_output(result: Any) -> str:
    """Text from an mlx-vlm `generate` result (a `GenerationResult` in recent versions, a str or
    (text, stats) tuple in older ones), cut at the first end-of-turn token."""
    if isinstance(result, tuple):
        result = result[0]
    text = getattr(result, "text", result)
    if not isinstance(text, str):
        raise LLMError(f"unexpected mlx-vlm output type {type(result).__name__}")
    for stop in _STOP_TOKENS:
        index = text.find(stop)
        if index != -1:
            text = text[:index]
    text = re.sub(r"^\s*model\s*\n", "", text)  # some templates echo the role line
    return text.strip()


def mlx_memory_mb() -> float:
    """Memory held by MLX arrays in this process, in MB (Metal buffers on a Mac, RAM with mlx[cpu])."""
    import mlx.core as mx

    return mx.get_active_memory() / 2**20


def _stats(result: Any, seconds: float, first_chunk_s: float | None = None) -> dict:
    """Timings and memory of one generation, from mlx-vlm's `GenerationResult` (missing fields stay 0)."""
    stats = {"seconds": round(seconds, 3),
             "prompt_tokens": int(getattr(result, "prompt_tokens", 0) or 0),
             "generation_tokens": int(getattr(result, "generation_tokens", 0) or 0),
             "prompt_tokens_per_s": round(float(getattr(result, "prompt_tps", 0.0) or 0.0), 1),
             "generation_tokens_per_s": round(float(getattr(result, "generation_tps", 0.0) or 0.0), 1),
             # mlx-vlm reports decimal GB; MB here are MiB, like every other memory figure in the product.
             "peak_memory_mb": round(float(getattr(result, "peak_memory", 0.0) or 0.0) * 1e9 / 2**20, 1)}
    if first_chunk_s is not None:
        stats["first_chunk_seconds"] = round(first_chunk_s, 3)
    return stats


def find_mlx_model(models_dir: Path | None = None, allow_download: bool = False) -> Path | None:
    """Folder of an MLX MedGemma build: user models dir → local HF cache → download (only when allowed)."""
    if models_dir is not None:
        for name in LOCAL_FOLDER_NAMES:
            candidate = Path(models_dir) / name
            if (candidate / "config.json").is_file():
                return candidate
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    for repo in MLX_REPOS:
        try:
            return Path(snapshot_download(repo, local_files_only=True))
        except Exception:  # noqa: BLE001 - not in the cache
            continue
    if allow_download:
        return Path(snapshot_download(MLX_REPOS[0]))
    return None


class MLXMedGemmaBackend(LLMBackend):
    """MedGemma 4B (instruction-tuned) through mlx-vlm.

    Args:
        model_path: folder with the MLX weights.
        model, processor: already loaded objects (loaded from `model_path` when omitted).

    Attributes:
        load_seconds, load_memory_mb: time and MLX memory taken by loading (0 when objects were passed in).
        last_stats: timings, token counts and peak memory of the latest generation (see `_stats`).
    """

    name = "medgemma-mlx"
    tier = "real"
    local = True
    supports_images = True
    timeout_s = 120.0

    def __init__(self, model_path: str | Path, model: Any = None, processor: Any = None):
        self.model_path = Path(model_path)
        self.load_seconds = self.load_memory_mb = 0.0
        self.last_stats: dict = {}
        if model is None or processor is None:
            from mlx_vlm import load  # Apple Silicon (mlx[cpu] elsewhere)

            before, start = mlx_memory_mb(), time.perf_counter()
            model, processor = load(str(self.model_path))
            self.load_seconds = round(time.perf_counter() - start, 3)
            self.load_memory_mb = round(mlx_memory_mb() - before, 1)
        self.model, self.processor = model, processor

    @property
    def loaded(self) -> bool:
        return self.model is not None

    def unload(self) -> float:
        """Drop the weights and MLX's buffer cache; returns the MLX memory freed, in MB (measured)."""
        import mlx.core as mx

        before = mlx_memory_mb()
        self.model = self.processor = None
        gc.collect()
        mx.clear_cache()
        return round(before - mlx_memory_mb(), 1)

    def _require_loaded(self) -> None:
        if self.model is None:
            raise LLMError(f"{self.name} was unloaded; load the language model again")

    def describe(self) -> str:
        return f"MedGemma via MLX ({self.model_path.name}, on this machine)"

    def _formatted(self, prompt: Prompt, with_image: bool) -> str:
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        if getattr(tokenizer, "chat_template", None):
            # Prefer the model's own template; Gemma's folds the system turn into the first user turn.
            messages = [{"role": "system", "content": prompt.system}]
            messages += [{"role": m.role, "content": m.content} for m in prompt.history]
            content: Any = prompt.user
            if with_image:
                content = [{"type": "image"}, {"type": "text", "text": prompt.user}]
            messages.append({"role": "user", "content": content})
            try:
                return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            except Exception:  # noqa: BLE001 - fall back to the documented Gemma format
                pass
        return build_gemma_prompt(prompt, with_image=with_image)

    @staticmethod
    def _image_file(image: Any) -> str:
        import numpy as np
        from PIL import Image

        handle = tempfile.NamedTemporaryFile(suffix=".png", delete=False)
        Image.fromarray((np.clip(np.asarray(image, dtype=np.float32), 0, 1) * 255).astype("uint8")).convert("RGB").save(handle)
        return handle.name

    def _generate(self, prompt: Prompt, *, image: Any = None, max_tokens: int = 512, json_mode: bool = False,
                  schema=None) -> str:
        from mlx_vlm import generate

        self._require_loaded()
        images = [self._image_file(image)] if image is not None else None
        start = time.perf_counter()
        try:
            result = generate(self.model, self.processor, self._formatted(prompt, images is not None),
                              image=images, max_tokens=max_tokens, temperature=0.0, verbose=False)
        finally:
            for path in images or []:
                Path(path).unlink(missing_ok=True)
        self.last_stats = _stats(result, time.perf_counter() - start)
        return parse_mlx_output(result)

    def _stream(self, prompt: Prompt, *, image: Any = None, max_tokens: int = 512) -> Iterator[str]:
        from mlx_vlm import stream_generate

        self._require_loaded()
        images = [self._image_file(image)] if image is not None else None
        start, first, last = time.perf_counter(), None, None
        try:
            for chunk in stream_generate(self.model, self.processor, self._formatted(prompt, images is not None),
                                         image=images, max_tokens=max_tokens, temperature=0.0):
                last = chunk
                text = getattr(chunk, "text", chunk)
                cut = min((i for i in (text.find(stop) for stop in _STOP_TOKENS) if i != -1), default=-1)
                if cut != -1:
                    if text[:cut]:
                        yield text[:cut]
                    break
                if not text:
                    continue  # the detokenizer holds partial words back; nothing to show yet
                if first is None:
                    first = time.perf_counter() - start
                yield text
            self.last_stats = _stats(last, time.perf_counter() - start, first)
        finally:
            for path in images or []:
                Path(path).unlink(missing_ok=True)
