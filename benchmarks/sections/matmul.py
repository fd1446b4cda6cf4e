"""The machine's dense fp32 matmul rate, the yardstick of the efficiency section."""

from __future__ import annotations

from benchmarks.context import Context
from benchmarks.flops import matmul_flops_per_second

NAME = "matmul"


def run(context: Context) -> dict:
    """Best and median GFLOP/s of 2048² fp32 matrix products."""
    return matmul_flops_per_second(2048, repeats=4 if context.options.quick else 8)
