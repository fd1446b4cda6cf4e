"""Timings and memory of the MLX language-model path on a tiny random Gemma 3 (a code-path check).

    python -m benchmarks.mlx_path          # writes benchmarks/results/mlx_tiny_gemma3.json

The model is the test fixture from `tests/tiny_gemma3.py` (random weights, built offline): the figures say
what the MLX code costs around a model (load, generate, stream, unload), not how MedGemma performs. They
are measured with mlx[cpu] on Linux unless run on a Mac.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROMPT_USER = "Report: small left pleural effusion. Is it consistent with the image findings?"


def _fixture():
    spec = importlib.util.spec_from_file_location("tiny_gemma3", ROOT / "tests" / "tiny_gemma3.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def measure(max_tokens: int = 64) -> dict:
    """Build the tiny model, then load → generate → stream → unload it once, recording each step."""
    import mlx.core as mx
    import psutil

    from medsight.llm.base import Prompt
    from medsight.llm.mlx_backend import MLXMedGemmaBackend

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        folder = _fixture().build_tiny_gemma3(Path(tmp) / "medgemma-4b-it-mlx")
        build_s = time.perf_counter() - t0
        size_mb = sum(f.stat().st_size for f in folder.iterdir()) / 2**20
        backend = MLXMedGemmaBackend(folder)
        prompt = Prompt("You check chest X-ray reports.", PROMPT_USER)
        backend.generate(prompt, max_tokens=4)  # first call compiles kernels; not counted
        backend.generate(prompt, max_tokens=max_tokens)
        generated = dict(backend.last_stats)
        chunks = list(backend.stream(prompt, max_tokens=max_tokens))
        streamed = dict(backend.last_stats, chunks=len(chunks))
        held = mx.get_active_memory() / 2**20
        freed = backend.unload()
    return {
        "what": "MLX code path on a tiny random Gemma 3 (tests/tiny_gemma3.py); not a model result",
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.system()} {platform.machine()}, mlx {mx.__version__}, device {mx.default_device()}",
        "fixture": {"build_seconds": round(build_s, 2), "folder_mb": round(size_mb, 2),
                    "architecture": "Gemma3ForConditionalGeneration, 6 text layers (5 local + 1 global), "
                                    "hidden 128, SigLIP 1 layer, 4-bit language model"},
        "load": {"seconds": backend.load_seconds, "mlx_memory_mb": backend.load_memory_mb},
        "generate": generated,
        "stream": streamed,
        "unload": {"mlx_memory_before_mb": round(held, 2), "freed_mb": freed,
                   "mlx_memory_after_mb": round(mx.get_active_memory() / 2**20, 2)},
        "process_rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "mlx_tiny_gemma3.json"))
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args(argv)
    result = measure(args.max_tokens)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
