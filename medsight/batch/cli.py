"""Score a whole folder of studies (PNG/JPEG/DICOM) and write CSV + JSON results.

The path a site with many studies would use:

    python -m medsight.batch /path/to/studies --out results/ [--no-pathology] [--batch-size 16]
    python -m medsight.batch /path/to/studies --engine ray [--address ray://HEAD:10001 | auto] [--workers N]

Every study passes the input gate first: a study that is not a frontal chest radiograph is listed as refused
with the gate's reason and is not scored. The domain rule then decides per study which loaded image models can
speak about it; the scores of the others are left empty (never zero) and named in the `withheld` column, with
the reason in `withheld_reason`. Files that cannot be read are listed with their reason and do not stop the
run.

Rows are written to OUT/results.jsonl as studies finish; a rerun into the same folder skips the studies already
there (same path, size and modification time) and scores only the rest, so an interrupted run is continued by
running the same command again (--fresh starts over). results.csv and results.json are written at the end.

The local engine (default) scores in this process. The Ray engine (`--engine ray`, needs the ray package from
requirements-dev.txt) scores on a pool of Ray actors, one copy of the models each: on a private local cluster,
or on an existing cluster given by --address.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm import tqdm

from medsight import registry
from medsight.batch.local import LocalEngine
from medsight.batch.ray_engine import RayEngine, RayUnavailable
from medsight.batch.results import ResultsJournal, scoring_settings, study_key
from medsight.batch.scoring import chunks, find_studies

EXIT_NO_FILES, EXIT_NO_MODELS, EXIT_NO_RAY, EXIT_INTERRUPTED = 1, 2, 3, 130


def make_engine(name: str, *, address: str | None = None, workers: int | None = None, batch_size: int = 16,
                pathology: bool = True):
    """The local engine, or the Ray engine (which imports ray only when it starts)."""
    if name == "local":
        return LocalEngine(batch_size=batch_size, pathology=pathology)
    return RayEngine(address=address, workers=workers, batch_size=batch_size, pathology=pathology)


def score_archive(files: list[Path], out_dir: Path, engine, *, pathology: bool = True, batch_size: int = 16,
                  fresh: bool = False, limit: int | None = None, progress: bool = True) -> tuple[dict, Path, Path]:
    """Score the files not yet in `out_dir` with `engine`, streaming rows to the journal, then write the tables.

    Returns the summary (counts over every listed file; this run's engine, workers, scoring time and images/s,
    model loading not included) and the CSV and JSON paths. `limit` stops after that many newly scored studies (a trial run; rerun to finish).
    """
    keys = [study_key(p) for p in files]
    journal = ResultsJournal(out_dir)
    loading = time.perf_counter()
    models = engine.start()
    start = time.perf_counter()
    try:
        done, note = journal.open(scoring_settings(models, pathology), fresh=fresh)
        if note:
            print(f"Note: {note}", file=sys.stderr)
        todo = [key for key in keys if key not in done]
        reused = len(keys) - len(todo)
        todo = todo[:limit] if limit is not None else todo
        # A short list is spread over all workers; a long one goes in chunks of batch_size.
        chunk_size = max(1, min(batch_size, -(-len(todo) // engine.workers)))
        scored_now = 0
        with tqdm(total=len(todo), unit="study", disable=not progress,
                  desc=f"Scoring ({engine.name}, {engine.workers} worker{'s' * (engine.workers != 1)})") as bar:
            for chunk, rows in engine.score(chunks(todo, chunk_size)):
                journal.append(zip(chunk, rows))
                scored_now += sum(row["status"] == "ok" for row in rows)
                bar.update(len(chunk))
        workers = engine.workers
    finally:
        journal.close()
        engine.stop()
    elapsed = time.perf_counter() - start
    run = {"seconds": round(elapsed, 2), "startup_seconds": round(start - loading, 2), "images_per_second": round(scored_now / elapsed, 2) if elapsed else 0.0,
           "models": models, "engine": engine.name, "workers": workers, "reused": reused,
           "processed_now": len(todo)}
    return journal.finalise(keys, run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medsight.batch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="folder of PNG/JPEG/DICOM studies (searched recursively)")
    parser.add_argument("--out", type=Path, default=Path("batch_results"), help="output folder (default: batch_results)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--no-pathology", action="store_true", help="anomaly scores only (faster)")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="local: this process (default); ray: a pool of Ray actors")
    parser.add_argument("--address", help="Ray cluster to use: ray://HEAD:10001, HEAD:6379 or auto "
                                          "(default: start a private local cluster)")
    parser.add_argument("--workers", type=int, help="Ray actors, one model copy each (default: one per CPU)")
    parser.add_argument("--fresh", action="store_true", help="ignore earlier results in --out and score everything")
    parser.add_argument("--limit", type=int, help="score at most this many new studies, then stop (rerun to go on)")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        parser.error(f"not a folder: {args.folder}")
    if args.address and args.engine != "ray":
        parser.error("--address needs --engine ray")
    files = find_studies(args.folder)
    if not files:
        print(f"No PNG, JPEG or DICOM files found in {args.folder}", file=sys.stderr)
        return EXIT_NO_FILES
    engine = make_engine(args.engine, address=args.address, workers=args.workers, batch_size=args.batch_size,
                         pathology=not args.no_pathology)
    try:
        summary, csv_path, json_path = score_archive(files, args.out, engine, pathology=not args.no_pathology,
                                                     batch_size=args.batch_size, fresh=args.fresh, limit=args.limit)
    except registry.ModelUnavailable as exc:
        print(f"Cannot score: {exc}", file=sys.stderr)
        return EXIT_NO_MODELS
    except KeyboardInterrupt:
        print(f"\nInterrupted. The studies scored so far are kept in {args.out}; run the same command again "
              "to score the rest.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except RayUnavailable as exc:
        print(f"Cannot score on Ray: {exc}", file=sys.stderr)
        return EXIT_NO_RAY
    _print_summary(summary, csv_path, json_path)
    return 0


def _print_summary(summary: dict, csv_path: Path, json_path: Path) -> None:
    tiers = ", ".join(f"{k}: {v['tier']}" for k, v in summary["models"].items())
    print(f"Scored {summary['scored']}/{summary['files']} studies ({summary['anomalous']} above threshold); this run "
          f"processed {summary['processed_now']} in {summary['seconds']} s = {summary['images_per_second']} images/s "
          f"on the {summary['engine']} engine ({summary['workers']} worker{'s' * (summary['workers'] != 1)}) "
          f"[{tiers}]")
    if summary["reused"]:
        print(f"Kept {summary['reused']} rows from an earlier run into the same folder (--fresh to score them again)")
    if summary["remaining"]:
        print(f"{summary['remaining']} studies not scored yet: run the same command again to score them")
    if summary["refused"] or summary["withheld"]:
        print(f"Refused by the input gate: {summary['refused']}; outputs withheld by the domain rule for "
              f"{summary['withheld']} (see the gate, withheld and withheld_reason columns)")
    print(f"Results: {csv_path} and {json_path}")
