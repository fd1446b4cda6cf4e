"""MedSight benchmark: one command prints a table and writes JSON.

    python -m benchmarks.run                 # full run (about 10 minutes on 2 cores; builds a 100k case base)
    python -m benchmarks.run --quick         # CI-sized run (about 1-2 minutes; case base of 1k only)
    python -m benchmarks.run --studies 20 --out benchmarks/results/latest.json

What one run measures (see benchmarks/README.md for the method):
  cold start        fresh process: interpreter → imports → models loaded → first full result on a sample study
  warm stages       median / p95 over N generated studies: ingest, the pipeline's own records of its anomaly,
                    pathology, maps, NLP and fusion stages, drawing the maps, PDF, and the whole warm
                    analysis (ingest + `run_analysis(maps="key")`)
  memory            peak RSS with the analysis models, and with every locally available model loaded
  efficiency        each CNN's achieved FLOP/s (2 × MACs / latency of its forward pass) ÷ the machine's own
                    dense fp32 matmul FLOP/s, measured in the same run with the same thread count
  retrieval         similar-case top-10 latency p50 / p95 and recall@10 with 1k / 10k / 100k vectors in ChromaDB:
                    the case base's exact in-memory search (default) beside Chroma's HNSW index
  batch             images/s of `medsight.batch.score_folder` over a folder of generated studies
Every target row says target / measured / met. The load average is recorded: the machine may be shared.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.common import ROOT
from benchmarks.context import Options
from benchmarks.harness import DEFAULT_OUT, run
from benchmarks.report import format_table, load_average_line
from benchmarks.sections import SECTIONS


def main(argv: list[str] | None = None) -> int:
    """The command line: parse the options, run, print the table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CI-sized run: 3 studies, case base of 1k only")
    parser.add_argument("--studies", type=int, default=None, help="studies for the warm stages (default 20; quick 3)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT.relative_to(ROOT)})")
    parser.add_argument("--casebase-sizes", type=int, nargs="+", default=None,
                        help="case-base sizes (default 1000 10000 100000; quick 1000)")
    parser.add_argument("--no-all-models", action="store_true",
                        help="measure peak RSS with the analysis models only (skip loading every other slot)")
    parser.add_argument("--only", nargs="+", choices=[s for s in SECTIONS if s != "machine"], default=None,
                        help="measure only these sections again and merge them into the existing --out JSON")
    args = parser.parse_args(argv)
    if args.only and not args.out.is_file():
        parser.error(f"--only needs an existing results file ({args.out})")
    options = Options(quick=args.quick, studies=args.studies, casebase_sizes=args.casebase_sizes,
                      cold_all_models=not args.no_all_models)
    results = run(options, out=args.out, only=args.only)
    print()
    print(format_table(results))
    print(f"\n{load_average_line(results, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
