"""DICOM node figures: receive → analysed latency per study, worklist throughput, and raw C-STORE rate.

    python -m benchmarks.node [--studies 8]

Runs in a temporary data directory: a receiver with automatic analysis on loopback, warmed models (their
loading is not part of the latency), generated chest films sent in one association. Latency is the time
from the worklist row being written (the instance is durable and acknowledged) to its analysis being stored.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def _temporary_home():
    saved = {k: os.environ.get(k) for k in ("MEDSIGHT_HOME", "MEDSIGHT_REFERENCE")}
    with tempfile.TemporaryDirectory(prefix="medsight-node-bench-") as home:
        os.environ["MEDSIGHT_HOME"], os.environ["MEDSIGHT_REFERENCE"] = home, "off"
        try:
            yield Path(home)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def _films(folder: Path, n: int) -> list[Path]:
    from medsight.synthetic import generate_phantom
    from medsight.synthetic.dicom import write_dicom

    findings = [(), ("cardiomegaly",), ("effusion",), ("nodule",)]
    return [write_dicom(generate_phantom(seed, findings=findings[seed % len(findings)]), folder / f"film{seed}.dcm",
                        patient_id=f"BENCH-{seed}") for seed in range(n)]


def _small(n: int) -> list:
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    out = []
    for i in range(n):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", generate_uid()
        ds.StudyInstanceUID = ds.SeriesInstanceUID = generate_uid()
        ds.Modality, ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = "OT", 64, 64, 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = np.full((64, 64), i, dtype=np.uint16).tobytes()
        out.append(ds)
    return out


def run(studies: int = 8, timeout: float = 900.0) -> dict:
    """Measure the node on this machine; returns latencies (s), studies/min and C-STORE instances/s."""
    from medsight import registry
    from medsight.auth import UserStore
    from medsight.config import get_settings
    from medsight.node import DicomNode, NodeSettings, RemoteNode, send
    from medsight.storage import History

    with _temporary_home() as home:
        settings = get_settings().ensure_dirs()
        UserStore(settings.users_path).add("bench", "bench-password-for-node-42")
        history = History(settings.db_path)
        for slot in ("anomaly.detector", "pathology.classifier"):
            try:
                registry.load(slot, settings=settings)
            except registry.ModelUnavailable:
                pass
        films = _films(home / "films", studies)
        node = DicomNode(settings, history, NodeSettings.from_settings(settings, port=0, auto_analyse=True)).start()
        try:
            remote = RemoteNode("MEDSIGHT", "127.0.0.1", node.port)
            started = time.perf_counter()
            sent = send(films, remote)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                rows = history.worklist.received()
                if len(rows) == sent.sent and all(r["analysis"] in ("done", "failed") or
                                                  (r["state"] != "pending" and r["analysis"] == "") for r in rows):
                    break
                time.sleep(0.2)
            elapsed = time.perf_counter() - started
            latencies = [r["analysis_seconds"] for r in history.worklist.received() if r["analysis_seconds"]]
            small = _small(100)
            t0 = time.perf_counter()
            stored = send(small, remote)
            store_seconds = time.perf_counter() - t0
        finally:
            node.stop()
            history.close()
    return {
        "studies_sent": sent.sent,
        "studies_analysed": len(latencies),
        "receive_to_analysed_seconds": [round(x, 2) for x in latencies],
        "latency_median_seconds": round(statistics.median(latencies), 2) if latencies else None,
        "latency_max_seconds": round(max(latencies), 2) if latencies else None,
        "worklist_studies_per_minute": round(len(latencies) / elapsed * 60, 2) if latencies else None,
        "c_store_instances_per_second": round(stored.sent / store_seconds, 1) if store_seconds else None,
        "note": "loopback, one sender association, automatic analysis (maps 'key'), models loaded beforehand",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.node", description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=8)
    print(json.dumps(run(parser.parse_args(argv).studies), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
