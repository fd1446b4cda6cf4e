"""Archive scoring on Ray: images/s with 1 and 2 workers on generated 512 px studies, and their ratio.

One private local cluster (loopback only) with 2 CPUs; each worker is a Ray actor with one CPU, one torch thread
and its own copy of the models. Each worker count scores the same folder (alternating 16-bit PNG and 12-bit
DICOM phantoms, gate, domain rule, anomaly and pathology models: what `python -m medsight.batch --engine ray`
does) after a warm-up chunk per worker; model loading is reported apart from the scoring rate. The local engine
(this process, all cores) on the same folder is given for comparison. The machine's load average is recorded:
other work sharing the cores lowers the 2-worker figure first.

    .venv/bin/python -m benchmarks.ray_scaling [--studies 48]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from benchmarks.common import load_average, log, make_studies

NAME = "ray_scaling"
BATCH_SIZE = 8


def _score(files: list[Path], out: Path, engine) -> dict:
    from medsight.batch import score_archive

    summary = score_archive(files, out, engine, batch_size=BATCH_SIZE, progress=False)[0]
    return {"images_per_second": summary["images_per_second"], "seconds": summary["seconds"],
            "scored": summary["scored"], "startup_seconds": summary["startup_seconds"]}


def run(n_studies: int = 48, worker_counts: tuple[int, ...] = (1, 2)) -> dict:
    """Images/s of the Ray engine per worker count, the ratio to one worker, and the local engine's rate."""
    from medsight.batch import LocalEngine, RayEngine
    from medsight.batch.ray_engine import RayUnavailable, start_local_cluster

    result: dict = {"studies": n_studies, "size_px": 512, "batch_size": BATCH_SIZE, "pathology": True,
                    "cpus": os.cpu_count(), "load_average_start": load_average()}
    with tempfile.TemporaryDirectory(prefix="medsight-ray-bench-") as tmp:
        tmp = Path(tmp)
        files = sorted(make_studies(tmp / "studies", n_studies))
        try:
            ray = start_local_cluster(num_cpus=max(worker_counts))
        except RayUnavailable as exc:
            return result | {"error": str(exc)}
        try:
            for workers in worker_counts:
                engine = RayEngine(workers=workers, batch_size=BATCH_SIZE, keep_workers=True)
                try:
                    warm = _score(files[:BATCH_SIZE * workers], tmp / f"warm{workers}", engine)
                    log(f"ray_scaling: {workers} worker(s) ready")
                    timed = _score(files, tmp / f"ray{workers}", engine)
                    result[f"workers_{workers}"] = timed | {"startup_seconds": warm["startup_seconds"],
                                                            "load_average": load_average()}
                finally:
                    engine.release()
        finally:
            ray.shutdown()
        local = LocalEngine(batch_size=BATCH_SIZE)
        _score(files[:BATCH_SIZE], tmp / "warm_local", local)
        result["local_engine"] = _score(files, tmp / "local", local) | {"load_average": load_average()}
    one, most = result.get("workers_1"), result.get(f"workers_{max(worker_counts)}")
    if one and most and one["images_per_second"]:
        result[f"ratio_{max(worker_counts)}_over_1"] = round(most["images_per_second"] / one["images_per_second"], 2)
    result["load_average_end"] = load_average()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ray_scaling", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=48)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.studies), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
