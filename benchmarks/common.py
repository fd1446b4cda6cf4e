"""What the benchmark sections share: paths, the progress log, latency statistics and generated studies."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.flops import percentile

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_STUDY = ROOT / "models" / "samples" / "effusion_left_pa.dcm"

SYMPTOMS = (
    "Productive cough and fever for {d} days, right-sided pleuritic chest pain.",
    "Sudden shortness of breath {d} hours after a long flight, no fever or cough.",
    "Smoker with weight loss and blood-streaked sputum for {d} weeks.",
    "Routine chest film {d} days before surgery, no respiratory symptoms.",
    "Breathless on exertion for {d} days with ankle swelling and orthopnoea, known heart failure.",
)


def log(message: str) -> None:
    """One timestamped progress line on stdout."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def load_average() -> list[float]:
    """The machine's 1, 5 and 15 minute load averages (the cores may be shared)."""
    return [round(x, 2) for x in os.getloadavg()]


def summarise(samples_s: list[float]) -> dict:
    """Latency statistics in milliseconds from samples in seconds."""
    ms = [s * 1000.0 for s in samples_s]
    if not ms:
        return {"n": 0}
    return {"n": len(ms), "median_ms": round(statistics.median(ms), 2), "p95_ms": round(percentile(ms, 95), 2),
            "min_ms": round(min(ms), 2), "max_ms": round(max(ms), 2)}


def lookup(data: Any, *keys: str) -> Any:
    """`data[k1][k2]...`, or None where a level is missing (a section may have failed or not run)."""
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def symptom_text(index: int) -> str:
    """A short symptom text whose every sentence differs from one index to the next.

    The condition classifier caches sentence embeddings, so a repeated sentence would time a cache hit;
    a new patient's text is never in the cache.
    """
    return f"Patient aged {18 + index % 80}. " + SYMPTOMS[index % len(SYMPTOMS)].format(d=2 + index)


def make_studies(folder: Path, n: int, seed: int = 1000) -> list[Path]:
    """Write `n` generated phantoms, alternating 16-bit PNG and 12-bit DICOM, so ingest reads real files."""
    from medsight.synthetic import generate_phantom, write_png
    from medsight.synthetic.dicom import write_dicom

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        phantom = generate_phantom(seed + i)
        if i % 2 == 0:
            path = write_png(phantom, folder / f"study_{i:03d}.png", bits=16)
        else:
            path = write_dicom(phantom, folder / f"study_{i:03d}.dcm", patient_id=f"BENCH-{i:03d}")
        paths.append(Path(path))
    return paths
