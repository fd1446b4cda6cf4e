"""Cold start: a fresh process (benchmarks.cold) from spawn to the first full result on a sample study."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, SAMPLE_STUDY, symptom_text
from benchmarks.context import Context

NAME = "cold_start"


def run_cold_start(study: Path, all_models: bool) -> dict:
    """Fresh subprocess (benchmarks.cold): process start → imports → models loaded → first full result."""
    with tempfile.TemporaryDirectory() as tmp:
        out_path = Path(tmp) / "cold.json"
        cmd = [sys.executable, "-m", "benchmarks.cold", "--study", str(study), "--symptoms", symptom_text(0),
               "--out", str(out_path)] + (["--all-models"] if all_models else [])
        t_spawn = time.time()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
        t_exit = time.time()
        if proc.returncode != 0 or not out_path.exists():
            raise RuntimeError(f"cold-start process failed ({proc.returncode}): {proc.stderr[-1500:]}")
        child = json.loads(out_path.read_text())
    parts = {
        "interpreter_start_s": child["t_main"] - t_spawn,
        "imports_s": child["t_imports"] - child["t_main"],
        "models_loaded_s": child["t_models"] - child["t_imports"],
        "first_result_s": child["t_first_result"] - child["t_models"],
    }
    total = child["t_first_result"] - t_spawn
    return {
        "study": study.name,
        "parts": {k: round(v, 3) for k, v in parts.items()},
        "total_s": round(total, 3),
        "models": child.get("models", {}),
        "first_result": child.get("first_result", {}),
        "ingest_s": child.get("ingest_seconds"),
        "peak_rss_mb_analysis": child.get("peak_rss_mb_analysis"),
        "peak_rss_mb_all": child.get("peak_rss_mb_all"),
        "rss_mb_all": child.get("rss_mb_all"),
        "other_models": child.get("other_models", {}),
        "process_seconds_to_exit": round(t_exit - t_spawn, 3),
        "notes": [child["fusion_import_error"]] if "fusion_import_error" in child else [],
    }


def run(context: Context) -> dict:
    """Cold start of the sample study (with every other local model loaded afterwards, unless told not to)."""
    return run_cold_start(SAMPLE_STUDY, all_models=context.options.cold_all_models)
