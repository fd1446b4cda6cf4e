"""The machine the run measured: CPU, memory, Python and torch versions, threads, commit, load average."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

from benchmarks.common import ROOT, load_average
from benchmarks.context import Context

NAME = "machine"


def git_commit() -> str:
    """Short commit of the working tree measured ("" outside a git checkout)."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001
        return ""


def machine_info() -> dict:
    """CPU model, core count, memory, versions, torch threads and the load average at the start."""
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil

        total_gb = round(psutil.virtual_memory().total / 1e9, 1)
    except ImportError:
        total_gb = None
    return {
        "cpu": cpu, "logical_cpus": os.cpu_count(), "memory_gb": total_gb, "python": platform.python_version(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
        "git_commit": git_commit(), "load_average_start": load_average(),
    }


def run(context: Context) -> dict:
    """The machine record."""
    return machine_info()
