"""Full-size films: warm analysis of a 2k × 2.5k 16-bit DICOM and a 1.8k JPEG beside a 512 px study.

Runs in a fresh process (`python -m benchmarks.fullsize`, after another one generated the studies), so
its peak RSS is the analysis models plus full-size work and nothing the earlier sections left behind. The three inputs are analysed in
turn (512 px, JPEG, DICOM, 512 px, ...), so a change in the machine's load reaches all three alike and
their ratios stay meaningful. Each analysis is `load_study` + `run_analysis(maps="key")`, as in the warm
section; the stages are read from the pipeline's own stage records, and each stage's share is its median
over the median of the whole analysis. Drawing one map for display (three panels + PNG) is timed apart.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import ROOT, load_average
from benchmarks.context import Context

NAME = "fullsize"


def run_fullsize(runs: int) -> dict:
    """The full-size measurement in a fresh process; its JSON with the load average around it."""
    with tempfile.TemporaryDirectory(prefix="medsight-bench-full-") as tmp:
        out_path = Path(tmp) / "fullsize.json"
        probe = [sys.executable, "-m", "benchmarks.fullsize", "--folder", tmp]
        for args in (["--generate-only"], ["--out", str(out_path), "--runs", str(runs)]):
            before = load_average()
            proc = subprocess.run(probe + args, cwd=ROOT, capture_output=True, text=True, timeout=3600)
            if proc.returncode != 0:
                raise RuntimeError(f"full-size process failed ({proc.returncode}): {proc.stderr[-1500:]}")
        result = json.loads(out_path.read_text(encoding="utf-8"))
    result["load_average_before"] = before
    return result


def run(context: Context) -> dict:
    """Full-size films in a fresh process (3 timed runs each in a quick run, 10 in a full run)."""
    return run_fullsize(3 if context.options.quick else 10)
