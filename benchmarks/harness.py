"""One benchmark run: measure the selected sections, add the targets, write the JSON."""

from __future__ import annotations

import json
import sys
import time
import traceback
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, load_average, log
from benchmarks.context import Context, Options
from benchmarks.report import write_results
from benchmarks.sections import SECTIONS, Section, plan
from benchmarks.targets import target_rows

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "latest.json"
SCHEMA_VERSION = 1


def measure(section: Section, context: Context) -> dict:
    """Run one section into `context.results`; an error is recorded in the JSON instead of ending the run."""
    if section.timed:
        log(f"{section.name} …  (load average {load_average()})")
    start = time.perf_counter()
    try:
        value = section.run(context)
    except Exception as exc:  # noqa: BLE001 - one broken section must not lose the others
        value = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=5)}
        log(f"{section.name} failed: {type(exc).__name__}: {exc}")
    if section.timed and isinstance(value, dict):
        value.setdefault("section_seconds", round(time.perf_counter() - start, 2))
        value.setdefault("load_average", load_average())
    context.results[section.name] = value
    return value


def run(options: Options | None = None, out: Path = DEFAULT_OUT, only: list[str] | None = None) -> dict:
    """Run the sections and write the JSON; returns the results dict.

    With `only`, the named sections are measured again and merged into the existing JSON at `out`
    (e.g. after another process disturbed them); the rest of that file is kept as it was.
    """
    import torch

    options = options or Options()
    out = Path(out)
    if only:
        results: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
        results.setdefault("rerun", []).append({
            "sections": sorted(set(only)), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "load_average_start": load_average()})
    else:
        results = {
            "schema": SCHEMA_VERSION, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "mode": "quick" if options.quick else "full",
            "command": " ".join(["python -m benchmarks.run"] + sys.argv[1:]),
        }
    with ExitStack() as stack:
        context = Context(options, results, stack)
        for section in plan(only or SECTIONS):
            measure(section, context)
    results["machine"]["load_average_end"] = load_average()
    results["machine"]["torch_threads_end"] = torch.get_num_threads()
    results["targets"] = target_rows(results)
    for name in SECTIONS:
        results.setdefault(name, {"error": "not run"})
    write_results(results, out)
    return results
