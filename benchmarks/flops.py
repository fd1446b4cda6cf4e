"""FLOP counting for the CNN stages and the machine's dense fp32 matmul rate.

FLOPs are counted as 2 × multiply-accumulates (MACs), the convention of papers and of
``torch.utils.flop_counter.FlopCounterMode``: its formulas count a convolution as
``2 · batch · prod(weight shape) · prod(output spatial shape)`` and an ``mm``/``addmm`` of (m×k)·(k×n) as
``2·m·k·n``. Only convolutions, matmuls and attention are counted; ReLU, pooling, batch norm and
additions are not (they are a fraction of a percent of the total for these networks).
`linear_flops_check` verifies the 2×MAC convention on a layer whose MACs are known by hand.

Reference values at 224×224, 3 channels (torchvision's model docs list them as "GFLOPS" but they are
GMACs): VGG16 15.47 GMAC of which the classifier holds 0.12, so the convolutional trunk ("features") is
15.35 GMAC = 30.7 GFLOPs; DenseNet-121 2.83 GMAC = 5.7 GFLOPs. torchxrayvision's DenseNet-121 takes one
channel, which removes 2/3 of the stem convolution (0.079 GMAC).

The machine's reference rate is the best of several dense fp32 ``torch.mm`` calls of n×n matrices
(2·n³ FLOPs each), run with the same torch thread count as the model stages, so a stage's achieved
FLOP/s divided by it ("efficiency") compares across machines and load levels.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_flops(module: nn.Module | Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> int:
    """FLOPs (2 × MACs) of one forward pass of `module` on `x`.

    Args:
        module: a network or any callable running torch ops.
        x: its input batch.

    Returns:
        Total FLOPs counted by `FlopCounterMode` (convolutions, matmuls, attention).
    """
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        module(x)
    return int(counter.get_total_flops())


def linear_flops_check(in_features: int = 64, out_features: int = 32, batch: int = 4) -> tuple[int, int]:
    """(counted, 2 × hand-counted MACs) for a bias-free Linear layer; equal when the convention holds."""
    layer = nn.Linear(in_features, out_features, bias=False)
    counted = count_flops(layer, torch.zeros(batch, in_features))
    return counted, 2 * batch * in_features * out_features


@dataclass
class Timing:
    """Latencies of repeated calls, in milliseconds."""

    runs: int
    min_ms: float
    median_ms: float
    p95_ms: float

    def to_dict(self) -> dict:
        return asdict(self)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between order statistics."""
    data = sorted(values)
    if not data:
        return float("nan")
    position = (len(data) - 1) * q / 100.0
    low = int(position)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (position - low)


def time_calls(fn: Callable[[], object], runs: int, warmup: int = 2) -> Timing:
    """Call `fn` `warmup` times untimed, then `runs` times timed."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000.0)
    return Timing(runs=runs, min_ms=round(min(samples), 3), median_ms=round(statistics.median(samples), 3),
                  p95_ms=round(percentile(samples, 95), 3))


def matmul_flops_per_second(n: int = 2048, repeats: int = 6) -> dict:
    """The machine's dense fp32 matmul rate: best (and median) of `repeats` n×n `torch.mm` calls.

    Runs on the current torch thread count (call it with the count the model stages use).

    Returns:
        {"n", "repeats", "threads", "best_gflops", "median_gflops", "best_ms"}.
    """
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=generator)
    b = torch.randn(n, n, generator=generator)
    out = torch.empty(n, n)
    timing = time_calls(lambda: torch.mm(a, b, out=out), runs=repeats, warmup=1)
    flops = 2.0 * n ** 3
    return {
        "n": n, "repeats": repeats, "threads": torch.get_num_threads(),
        "best_gflops": round(flops / (timing.min_ms / 1000.0) / 1e9, 1),
        "median_gflops": round(flops / (timing.median_ms / 1000.0) / 1e9, 1),
        "best_ms": timing.min_ms,
    }


def _onnx_forward(module: nn.Module, x: torch.Tensor):
    """`module`'s forward pass in an ONNX Runtime session with the product's session options."""
    import copy
    import io

    import onnxruntime as ort

    from medsight.models.onnx_runtime import OPSET, session_options

    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(copy.deepcopy(module).eval(), (x,), buffer, input_names=["x"], opset_version=OPSET,
                          dynamo=False)
    session = ort.InferenceSession(buffer.getvalue(), session_options(), providers=["CPUExecutionProvider"])
    feed = {"x": x.numpy()}
    return lambda: session.run(None, feed)


def network_efficiency(name: str, module: nn.Module, x: torch.Tensor, matmul_gflops: float, runs: int = 10,
                       target: float | None = None, note: str = "", runtime: str = "pytorch") -> dict:
    """Achieved FLOP/s of a network's forward pass (inference mode, batch of `x`) against the matmul rate.

    The ratio uses the best latency, like the matmul rate it is divided by (both are the machine's
    capability with the least interference from other processes); the median is reported beside it.
    `runtime` "onnx" times the pass in ONNX Runtime, as the product runs it on the CPU.

    Returns:
        dict with gflops (per forward), latency (Timing), achieved GFLOP/s and the efficiency ratio.
    """
    module = module.eval()
    flops = count_flops(module, x)
    if runtime == "onnx":
        forward = _onnx_forward(module, x)
    else:
        def forward():
            with torch.inference_mode():
                module(x)

    timing = time_calls(forward, runs=runs, warmup=2)
    achieved = flops / (timing.min_ms / 1000.0) / 1e9
    achieved_median = flops / (timing.median_ms / 1000.0) / 1e9
    return {
        "name": name, "input": list(x.shape), "gflops": round(flops / 1e9, 3), "latency": timing.to_dict(),
        "achieved_gflops_per_s": round(achieved, 1), "achieved_gflops_per_s_median": round(achieved_median, 1),
        "efficiency": round(achieved / matmul_gflops, 3) if matmul_gflops else None,
        "efficiency_median": round(achieved_median / matmul_gflops, 3) if matmul_gflops else None,
        "target": target, "met": (achieved / matmul_gflops >= target) if (target and matmul_gflops) else None,
        "threads": torch.get_num_threads(), "note": note, "runtime": runtime,
    }
