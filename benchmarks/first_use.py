"""First use in a fresh data directory: how long until the chat answers and verification has similar cases.

Runs in a new process with a new, empty `MEDSIGHT_HOME` (the way a first start sees it) and the setup build
of `python -m medsight.reference build`. Times: preparing the data directory (copy of the setup build), the
first chat answer (from the question: loading the text embedder, opening the store, retrieving and
answering; the imports the Chat page does when it opens are timed apart), and the first verification
with its similar-case query (including loading the NLP stage).

Example:
    python -m benchmarks.first_use --out benchmarks/results/first_use.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

QUESTION = "What is a pleural effusion?"
WARM = os.environ.get("MEDSIGHT_BENCH_WARM", "1") == "1"
REPORT = ("FINDINGS: The lungs are clear. No focal consolidation, pleural effusion or pneumothorax. Heart size "
          "normal.\nIMPRESSION: No acute cardiopulmonary process.")


def measure() -> dict:
    """Run in the fresh data directory named by MEDSIGHT_HOME (call in a new process)."""
    start = time.perf_counter()
    from medsight import reference
    from medsight.config import get_settings

    settings = get_settings().ensure_dirs()
    outcome = reference.ensure_ready(settings, background=False)
    ready_s = time.perf_counter() - start

    t = time.perf_counter()
    from medsight.chat import ChatEngine, KnowledgeBase  # the Chat page has imported these before a question

    import_s = time.perf_counter() - t
    if WARM:  # as app.py does at start; signing in takes longer than this
        t = time.perf_counter()
        reference.warm_up(settings).join()
        warm_s = time.perf_counter() - t
    t0 = time.perf_counter()
    reply = ChatEngine(KnowledgeBase(settings=settings)).answer(QUESTION)
    chat_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    from medsight.retrieval import CaseBase
    from medsight.verify import verify_report

    cases = CaseBase(settings=settings).query(text=REPORT, k=5)
    result = verify_report(REPORT, {}, cases)
    verify_s = time.perf_counter() - t1
    return {"outcome": outcome, "ready_s": round(ready_s, 2), "chat_import_s": round(import_s, 2),
            "warm_up_s": round(warm_s, 2) if WARM else None,
            "first_chat_answer_s": round(chat_s, 2),
            "chat_citations": len(reply.citations), "first_verification_s": round(verify_s, 2),
            "similar_cases_used": len(result.similar_cases), "counts": reference.counts(settings)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.first_use", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure()))
        return 0
    import subprocess

    from medsight import reference

    if not reference.is_built():
        print("error: no setup build; run `python -m medsight.reference build` first", file=sys.stderr)
        return 2
    runs = {}
    for label, warm in (("app start (embedder warmed while signing in)", "1"), ("no warm-up", "0")):
        with tempfile.TemporaryDirectory() as home:
            env = dict(os.environ, MEDSIGHT_HOME=home, MEDSIGHT_REFERENCE="auto", MEDSIGHT_BENCH_WARM=warm)
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "benchmarks.first_use", "--child"], env=env,
                                  capture_output=True, text=True, check=False)
            wall = time.perf_counter() - start
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        runs[label] = dict(json.loads(done.stdout.strip().splitlines()[-1]), process_wall_s=round(wall, 1))
    figures = {"runs": runs}
    setup = json.loads((reference.reference_dir() / reference.STAMP).read_text())
    figures.update({
        "what": "fresh MEDSIGHT_HOME in a new process: copy of the setup build, first chat answer timed from the "
                "question (with the app's start-up warm-up of the text embedder, and without it), first "
                "verification with similar cases (NLP load included)",
        "setup_build": setup,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} cores, python {platform.python_version()}",
    })
    text = json.dumps(figures, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
