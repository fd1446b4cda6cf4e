"""Archive scoring on Ray (`python -m medsight.batch FOLDER --engine ray`) against the local engine.

One private Ray cluster for the module (2 CPUs, loopback only, 200 MB object store, no dashboard, no usage
stats: `start_local_cluster`); the engine joins it instead of starting its own. Studies: 20 generated (19 phantoms as PNG,
DICOM and JPEG, one noise picture the input gate refuses), the shipped samples, a real film the domain rule
withholds and a truncated file.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pydicom.data
import pytest

from medsight import batch
from medsight.batch.ray_engine import RayEngine, start_local_cluster
from medsight.config import SHIPPED_MODELS_DIR
from medsight.synthetic import generate_phantom, write_jpeg, write_png
from medsight.synthetic.dicom import write_dicom

ROOT = Path(__file__).resolve().parent.parent
SCORE_TOLERANCE = 1e-5 + 1e-9  # scores are rounded to 5 decimals: at most one step apart
PROBABILITY_TOLERANCE = 1e-4 + 1e-9  # probabilities are rounded to 4 decimals
RSS_GROWTH_LIMIT_MB = 40.0


@pytest.fixture(scope="module")
def ray_cluster():
    if importlib.util.find_spec("ray") is None:  # not importorskip: ray must first be imported by the engine
        pytest.skip("ray is not installed (requirements-dev.txt)")
    ray = start_local_cluster(num_cpus=2)  # the engine joins it instead of starting its own
    yield ray
    ray.shutdown()


def write_studies(folder: Path, n_phantoms: int = 19, size: int = 256) -> Path:
    """Generated phantoms in three formats, one noise picture (not a chest film), and the edge cases."""
    folder.mkdir(parents=True)
    writers = (lambda p, f: write_png(p, f.with_suffix(".png"), bits=16), lambda p, f: write_dicom(p, f.with_suffix(".dcm")),
               lambda p, f: write_jpeg(p, f.with_suffix(".jpg")))
    for i in range(n_phantoms):
        writers[i % 3](generate_phantom(500 + i, size=size), folder / f"phantom_{i:02d}")
    write_png(np.random.default_rng(0).random((300, 400)), folder / "not_a_chest.png")
    for sample in sorted((SHIPPED_MODELS_DIR / "samples").iterdir()):
        if sample.suffix != ".json":
            shutil.copy(sample, folder / f"sample_{sample.name}")
    shutil.copy(pydicom.data.get_testdata_file("RG1_UNCI.dcm"), folder / "real_film.dcm")
    (folder / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return folder


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> Path:
    return write_studies(tmp_path_factory.mktemp("archive") / "studies")


@pytest.fixture(scope="module")
def local_result(studies, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local")
    assert batch.main([str(studies), "--out", str(out)]) == 0
    return out


def read_outputs(out: Path) -> tuple[dict, list[dict], dict]:
    """CSV rows by file name, JSON rows and the JSON summary."""
    with open(out / "results.csv", newline="", encoding="utf-8") as handle:
        table = {Path(r["file"]).name: r for r in csv.DictReader(handle)}
    data = json.loads((out / "results.json").read_text(encoding="utf-8"))
    return table, data["rows"], data["summary"]


def assert_same_rows(out: Path, reference: Path) -> None:
    """Same files, statuses, gate and withheld cells; scores within one rounding step; empty cells stay empty."""
    table, rows, _ = read_outputs(out)
    ref_table, ref_rows, _ = read_outputs(reference)
    assert list(table) == list(ref_table) and [r["file"] for r in rows] == [r["file"] for r in ref_rows]
    for name, ref in ref_table.items():
        row = table[name]
        assert row.keys() == ref.keys(), name
        for column, expected in ref.items():
            got = row[column]
            if expected == "" or got == "":
                assert got == expected, (name, column)  # a withheld or refused output is never a number
            elif column in ("anomaly_score", "threshold") or column.startswith("p_"):
                tolerance = SCORE_TOLERANCE if not column.startswith("p_") else PROBABILITY_TOLERANCE
                assert abs(float(got) - float(expected)) <= tolerance, (name, column, got, expected)
            else:
                assert got == expected, (name, column)


def test_ray_engine_gives_the_local_engines_rows(ray_cluster, studies, local_result, tmp_path):
    out = tmp_path / "ray"
    assert batch.main([str(studies), "--out", str(out), "--engine", "ray", "--workers", "2"]) == 0
    assert_same_rows(out, local_result)
    table, _, summary = read_outputs(out)
    assert summary["engine"] == "ray" and summary["workers"] == 2 and summary["files"] == len(table) == 28
    assert table["not_a_chest.png"]["status"] == "refused" and table["not_a_chest.png"]["anomaly_score"] == ""
    film = table["real_film.dcm"]
    assert film["status"] == "withheld" and film["anomaly_score"] == film["threshold"] == film["anomalous"] == ""
    assert all(v == "" for k, v in film.items() if k.startswith("p_"))
    assert table["truncated.png"]["status"] == "unreadable"
    assert summary["refused"] == 1 and summary["withheld"] == 1 and summary["unreadable"] == 1


@pytest.fixture(scope="module")
def ray_workers(ray_cluster):
    """Two Ray actors kept across the runs of one test (model loading is the slow part of a short run)."""
    engine = RayEngine(workers=2, keep_workers=True)
    yield engine
    engine.release()


def test_an_interrupted_ray_run_is_continued_by_the_rerun(ray_workers, studies, local_result, tmp_path):
    out = tmp_path / "ray"

    def run(limit=None):
        return batch.score_archive(batch.find_studies(studies), out, ray_workers, limit=limit, progress=False)[0]

    assert run(limit=9)["remaining"] == 19
    journal = out / "results.jsonl"
    assert len(journal.read_text().splitlines()) == 1 + 9
    with open(journal, "a", encoding="utf-8") as handle:
        handle.write('{"key": ["torn by a kill mid-wr')  # a run killed while writing a row

    summary = run()
    assert summary == read_outputs(out)[2]
    assert summary["reused"] == 9 and summary["processed_now"] == 28 - 9 and summary["remaining"] == 0
    assert_same_rows(out, local_result)
    lines = journal.read_text().splitlines()
    assert len(lines) == 1 + 28 and all(json.loads(line) for line in lines)

    assert run()["processed_now"] == 0  # nothing left to score
    assert_same_rows(out, local_result)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("address", ["ray://127.0.0.1:{port}", "127.0.0.1:{port}"])
def test_an_unreachable_cluster_is_a_clear_error(studies, tmp_path, address):
    address = address.format(port=_closed_port())
    done = subprocess.run([sys.executable, "-m", "medsight.batch", str(studies), "--out", str(tmp_path / "out"),
                           "--engine", "ray", "--address", address], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, env=os.environ | {"TQDM_DISABLE": "1"})
    assert done.returncode == 3, done.stderr
    assert f"Cannot score on Ray: cannot reach the Ray cluster at {address}" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert not (tmp_path / "out").exists()


def test_without_ray_installed_the_message_says_how_to_get_it(studies, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    assert batch.main([str(studies), "--out", str(tmp_path / "out"), "--engine", "ray"]) == 3
    err = capsys.readouterr().err
    assert "needs the ray package" in err and "requirements-dev.txt" in err and "local engine" in err


def test_the_cluster_listens_on_loopback_only(ray_cluster):
    """Every listening socket of the cluster (this driver, GCS, raylet, agents, workers) is on 127.0.0.1."""
    assert [node["NodeManagerAddress"] for node in ray_cluster.nodes()] == ["127.0.0.1"]
    me = psutil.Process()
    listening = {c.laddr.ip for p in [me] + me.children(recursive=True) for c in _listening(p)}
    assert listening and listening <= {"127.0.0.1", "::1", "::ffff:127.0.0.1"}, listening


def _listening(process: psutil.Process) -> list:
    try:
        return [c for c in process.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


class MeasuredEngine:
    """An engine that records the driver's RSS each time a chunk of rows comes back."""

    def __init__(self, engine):
        self.engine, self.rss_mb = engine, []
        self.name = engine.name

    @property
    def workers(self) -> int:
        return self.engine.workers

    def start(self) -> dict:
        return self.engine.start()

    def stop(self) -> None:
        self.engine.stop()

    def score(self, work):
        process = psutil.Process()
        for chunk, rows in self.engine.score(work):
            self.rss_mb.append(process.memory_info().rss / 2**20)
            yield chunk, rows


@pytest.mark.slow
@pytest.mark.parametrize("engine_name", ["ray", "local"])
def test_driver_memory_stays_flat_over_200_studies(request, tmp_path, engine_name):
    """200 studies of 512 px (20 phantoms, each copied 10 times): RSS after each chunk of 8 rows, from the first
    fifth of the run to its end, may grow by at most RSS_GROWTH_LIMIT_MB (allocator noise); holding the images
    would add about 1 MB per study."""
    if engine_name == "ray":
        request.getfixturevalue("ray_cluster")
    source = tmp_path / "src"
    source.mkdir()
    originals = [write_png(generate_phantom(900 + i, size=512), source / f"p{i:02d}.png", bits=16) for i in range(20)]
    folder = tmp_path / "studies"
    for copy in range(10):
        (folder / f"batch{copy}").mkdir(parents=True)
        for original in originals:
            shutil.copy(original, folder / f"batch{copy}" / original.name)
    files = batch.find_studies(folder)
    engine = MeasuredEngine(batch.make_engine(engine_name, workers=2, batch_size=8))
    summary, _, _ = batch.score_archive(files, tmp_path / "out", engine, batch_size=8, progress=False)
    assert summary["scored"] == 200 and summary["processed_now"] == 200
    samples = engine.rss_mb
    baseline = samples[len(samples) // 5]
    growth = max(samples[len(samples) // 5:]) - baseline
    print(f"{engine_name}: driver RSS {baseline:.0f} MB after {len(samples) // 5} chunks, max growth {growth:.1f} MB "
          f"over {len(samples)} chunks")
    assert growth <= RSS_GROWTH_LIMIT_MB, samples

