"""MedSight benchmark: one command prints a table and writes JSON.

    python -m benchmarks.run                 # full run (about 10 minutes on 2 cores; builds a 100k case base)
    python -m benchmarks.run --quick         # CI-sized run (about 1-2 minutes; case base of 1k only)
    python -m benchmarks.run --studies 20 --out benchmarks/results/latest.json

What one run measures (see benchmarks/README.md for the method):
  cold start        fresh process: interpreter → imports → models loaded → first full result on a sample study
  warm stages       median / p95 over N generated studies: ingest, anomaly, pathology, maps, NLP, fusion, PDF,
                    and the whole warm analysis (ingest + `run_analysis(maps="key")`)
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
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from benchmarks.flops import matmul_flops_per_second, network_efficiency, percentile

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "latest.json"
SAMPLE_STUDY = ROOT / "models" / "samples" / "effusion_left_pa.dcm"
SCHEMA_VERSION = 1

SECTIONS = ("machine", "matmul", "efficiency", "cold_start", "warm", "memory", "retrieval", "batch")

#: Targets on a 2-core CPU. (key, title, comparison, target value, unit)
TARGETS = {
    "warm_full_analysis": ("Warm full analysis of one study (median)", "<=", 1.0, "s"),
    "vgg16_efficiency": ("VGG16 features stage, fraction of matmul FLOP/s", ">=", 0.9, "×"),
    "densenet121_efficiency": ("DenseNet-121 stage, fraction of matmul FLOP/s", ">=", 0.5, "×"),
    "cold_start": ("Cold start → first full result", "<=", 15.0, "s"),
    "peak_rss": ("Peak RSS, all local models loaded", "<=", 2.0, "GB"),
    "similar_case_p95": ("Similar-case top-10 at 100k vectors, p95", "<=", 20.0, "ms"),
    "batch_throughput": ("Batch anomaly scoring of a folder", ">=", 6.0, "images/s"),
}

SYMPTOMS = (
    "Productive cough and fever for {d} days, right-sided pleuritic chest pain.",
    "Sudden shortness of breath {d} hours after a long flight, no fever or cough.",
    "Smoker with weight loss and blood-streaked sputum for {d} weeks.",
    "Routine chest film {d} days before surgery, no respiratory symptoms.",
    "Breathless on exertion for {d} days with ankle swelling and orthopnoea, known heart failure.",
)


def symptom_text(index: int) -> str:
    """A short symptom text whose every sentence differs from one index to the next.

    The condition classifier caches sentence embeddings, so a repeated sentence would time a cache hit;
    a new patient's text is never in the cache.
    """
    return f"Patient aged {18 + index % 80}. " + SYMPTOMS[index % len(SYMPTOMS)].format(d=2 + index)


#: HNSW settings compared with Chroma's defaults (M 16, ef_construction 100, ef_search 100) in a full run.
HNSW_VARIANTS = [{"ef_search": 400}, {"max_neighbors": 32, "ef_construction": 200, "ef_search": 200}]

IMAGE_EMBEDDING_DIM = 512  # pooled VGG16 features of the anomaly detector (medsight.retrieval.detector_embedder)


# ----------------------------------------------------------------------------------------------- helpers

def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def summarise(samples_s: list[float]) -> dict:
    """Latency statistics in milliseconds from samples in seconds."""
    ms = [s * 1000.0 for s in samples_s]
    if not ms:
        return {"n": 0}
    return {"n": len(ms), "median_ms": round(statistics.median(ms), 2), "p95_ms": round(percentile(ms, 95), 2),
            "min_ms": round(min(ms), 2), "max_ms": round(max(ms), 2)}


def section(name: str, results: dict, fn: Callable[[], Any]) -> Any:
    """Run one section; an error is recorded in the JSON instead of ending the run."""
    log(f"{name} …  (load average {load_average()})")
    start = time.perf_counter()
    try:
        value = fn()
    except Exception as exc:  # noqa: BLE001 - one broken section must not lose the others
        value = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=5)}
        log(f"{name} failed: {type(exc).__name__}: {exc}")
    if isinstance(value, dict):
        value.setdefault("section_seconds", round(time.perf_counter() - start, 2))
        value.setdefault("load_average", load_average())
    results[name] = value
    return value


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001
        return ""


def machine_info() -> dict:
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil

        total_gb = round(psutil.virtual_memory().total / 1e9, 1)
    except ImportError:
        total_gb = None
    return {
        "cpu": cpu, "logical_cpus": os.cpu_count(), "memory_gb": total_gb, "python": platform.python_version(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
        "git_commit": git_commit(), "load_average_start": load_average(),
    }


# ------------------------------------------------------------------------------------------ study folder

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


# --------------------------------------------------------------------------------------------- sections

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


def load_models() -> tuple[Any, Any, dict]:
    from medsight import registry

    tiers: dict[str, str] = {}
    models = []
    for slot in ("anomaly.detector", "pathology.classifier"):
        try:
            loaded = registry.load(slot)
            models.append(loaded.model)
            tiers[slot] = loaded.provenance.tier
        except registry.ModelUnavailable as exc:
            models.append(None)
            tiers[slot] = "unavailable: " + str(exc).splitlines()[0]
    return models[0], models[1], tiers


class _Logits(torch.nn.Module):
    """A classifier network's logits as a module (what `PathologyClassifier.predict` runs)."""

    def __init__(self, net: Any):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.logits(x)


def timing_only_classifier() -> Any:
    """torchxrayvision's DenseNet-121 with random weights inside the product's `PathologyClassifier`.

    Used only to time the real tier's network and Grad-CAM (the real weights are not on this machine);
    its outputs are never looked at.
    """
    import torchxrayvision as xrv

    from medsight.models.pathology import XRV_WEIGHTS, PathologyClassifier
    from medsight.models.pathology.torch_model import wrap_xrv_densenet

    spec = xrv.models.model_urls[XRV_WEIGHTS]
    torch.manual_seed(0)  # the same random weights every run
    return PathologyClassifier(wrap_xrv_densenet(xrv.models.DenseNet(weights=None).eval()), list(spec["labels"]),
                               spec["op_threshs"], tier="timing-only", input_size=int(spec["input_resolution"]),
                               name="DenseNet-121 architecture, random weights (timing only)")


def _alternative(name: str, fn: Callable[[], Any], reference: Any, flops_count: float, matmul_gflops: float,
                 runs: int) -> dict:
    """Latency and output difference of another way to run the same network (for the record, not the product)."""
    import torch

    from benchmarks.flops import time_calls

    with torch.inference_mode():
        out = fn()
        timing = time_calls(lambda: fn(), runs=runs, warmup=1)
    out = torch.as_tensor(out[0] if isinstance(out, (list, tuple)) else out).float()
    achieved = flops_count / (timing.min_ms / 1000.0) / 1e9
    return {"name": name, "latency": timing.to_dict(), "achieved_gflops_per_s": round(achieved, 1),
            "efficiency": round(achieved / matmul_gflops, 3) if matmul_gflops else None,
            "max_abs_diff_vs_eager": float((out - reference.float()).abs().max())}


def alternatives(key: str, module: Any, x: Any, matmul_gflops: float, runs: int) -> list[dict]:
    """The same network in NCHW and channels-last layouts, bf16 autocast and ONNX Runtime: what each achieves here."""
    import copy

    import torch

    from benchmarks.flops import count_flops

    flops_count = count_flops(module, x)
    with torch.inference_mode():
        reference = module(x)
    rows = []
    run_nchw = copy.deepcopy(module).to(memory_format=torch.contiguous_format)
    rows.append(_alternative(f"{key}: NCHW fp32 (torch default layout)", lambda: run_nchw(x), reference, flops_count,
                             matmul_gflops, runs))
    run_cl = copy.deepcopy(module).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    rows.append(_alternative(f"{key}: channels_last fp32", lambda: run_cl(x_cl), reference, flops_count,
                             matmul_gflops, runs))

    def bf16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return run_cl(x_cl)

    rows.append(_alternative(f"{key}: bf16 autocast, channels_last", bf16, reference, flops_count, matmul_gflops, runs))
    try:
        import io

        import onnxruntime as ort

        buffer = io.BytesIO()
        torch.onnx.export(copy.deepcopy(module).eval(), (x,), buffer, input_names=["x"], output_names=["y"],
                          opset_version=17, dynamo=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
        feed = {"x": x.numpy()}
        rows.append(_alternative(f"{key}: ONNX Runtime {ort.__version__} fp32", lambda: session.run(None, feed),
                                 reference, flops_count, matmul_gflops, runs))
    except Exception as exc:  # noqa: BLE001 - onnx (the exporter's dependency) may be absent
        rows.append({"name": f"{key}: ONNX Runtime", "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
    return rows


def run_efficiency(matmul_gflops: float, detector: Any, classifier: Any, runs: int, compare: bool) -> dict:
    """Each CNN's forward pass alone, batch 1: FLOPs, latency and fraction of the matmul rate.

    The networks run exactly as the product holds them (the detector's extractor, the classifier's
    network inside a `PathologyClassifier`), so any inference setting the product applies is measured.
    With `compare`, also channels-last, bf16 and ONNX Runtime variants of the two reference networks.
    """
    import torch

    from medsight.models.anomaly.torch_model import build_demo_extractor

    out: dict[str, Any] = {}
    extractor = detector.extractor if detector is not None else build_demo_extractor()
    vgg_input = torch.randn(1, 3, 224, 224)
    out["vgg16_features"] = network_efficiency(
        "VGG16 features (anomaly detector trunk + global pool)", extractor, vgg_input,
        matmul_gflops, runs=runs, target=TARGETS["vgg16_efficiency"][2],
        note=f"the detector's own extractor ({extractor.kind} weights)")
    timing_clf = timing_only_classifier()
    dense_input = torch.randn(1, 1, 224, 224)
    out["densenet121"] = network_efficiency(
        "DenseNet-121 (torchxrayvision architecture, 1 channel)", _Logits(timing_clf.net), dense_input,
        matmul_gflops, runs=runs, target=TARGETS["densenet121_efficiency"][2],
        note="real-tier architecture with random weights (weights=None), used for timing only")
    if classifier is not None:
        size = int(classifier.input_size)
        out["pathology_demo"] = network_efficiency(
            f"Pathology demo network (reduced DenseNet, {size} px)", _Logits(classifier.net),
            torch.randn(1, 1, size, size), matmul_gflops, runs=runs,
            note="the demo-tier model the app runs when the real weights are absent")
    # What one label's Grad-CAM costs with the real tier's network (forward + backward), on a 512² image.
    from medsight.synthetic import generate_phantom

    from benchmarks.flops import time_calls

    image = generate_phantom(3, findings=("effusion",)).image
    label = timing_clf.labels[0]
    try:
        out["densenet121_gradcam_per_label"] = time_calls(lambda: timing_clf.gradcam_heat(image, label),
                                                          runs=max(3, runs // 3), warmup=1).to_dict()
    except (OverflowError, ValueError) as exc:  # random weights can give logits beyond exp()'s range
        out["densenet121_gradcam_per_label"] = {"error": f"{type(exc).__name__}: {exc}"}
    if compare:
        out["alternatives"] = (alternatives("VGG16 features", extractor, vgg_input, matmul_gflops, runs=max(3, runs // 2))
                               + alternatives("DenseNet-121", _Logits(timing_clf.net), dense_input, matmul_gflops,
                                              runs=max(3, runs // 2)))
    return out


def run_warm(paths: list[Path], detector: Any, classifier: Any) -> dict:
    """Per-stage and whole-analysis latency over the studies (first study run once untimed as warm-up)."""
    from medsight.explain.render import to_png_bytes  # noqa: F401 - imported by the PDF path
    from medsight.ingest import load_study
    from medsight.nlp import analyze_text
    from medsight.pipeline import AnalysisResult, compute_maps, run_analysis
    from medsight.report import build_pdf

    try:
        from medsight.fusion import fuse
    except ImportError:
        fuse = None

    stages: dict[str, list[float]] = {k: [] for k in ("ingest", "anomaly", "pathology", "maps", "nlp", "fusion",
                                                      "map_display", "pdf", "full_analysis")}
    pipeline_stages: dict[str, list[float]] = {}
    maps_per_study: list[int] = []
    sizes: set[str] = set()
    statuses: dict[str, int] = {}

    def timed(key: str, fn: Callable[[], Any], record: bool) -> Any:
        start = time.perf_counter()
        value = fn()
        if record:
            stages[key].append(time.perf_counter() - start)
        return value

    for index, path in enumerate([paths[0]] + list(paths)):
        record = index > 0  # index 0 is the warm-up pass
        symptoms = symptom_text(2 * index)
        study = timed("ingest", lambda: load_study(path), record)
        image = study.image
        sizes.add(f"{image.shape[1]}x{image.shape[0]}")
        anomaly = timed("anomaly", lambda: detector.score(image), record) if detector else None
        pathology = timed("pathology", lambda: classifier.predict(image), record) if classifier else None
        stub = AnalysisResult(analysis_id="bench", created="", status="", study={},
                              pathology=pathology.to_dict() if pathology else None)
        stub.objects.update({k: v for k, v in (("detector", detector), ("classifier", classifier)) if v is not None})
        computed = timed("maps", lambda: compute_maps(stub, image, which="key"), record)
        nlp = timed("nlp", lambda: analyze_text(symptoms), record)
        if fuse is not None:
            timed("fusion", lambda: fuse(anomaly.to_dict() if anomaly else None,
                                         pathology.to_dict() if pathology else None, nlp.to_dict()), record)

        def full():
            s = load_study(path)
            return run_analysis(s, symptom_text(2 * index + 1), detector=detector, classifier=classifier, maps="key")

        result = timed("full_analysis", full, record)

        # Maps are drawn (three panels, PNG) when a reader first opens them or exports the PDF.
        pngs = []
        for key, heatmap in result.objects.get("heatmaps", {}).items():
            pngs.append((heatmap.caption or key, timed("map_display", heatmap.png, record)))

        def pdf():
            images = [("Radiograph as analysed", study.thumbnail_png(512))] + pngs
            return build_pdf(result.to_dict(), images=images, user="benchmark")

        timed("pdf", pdf, record)
        if record:
            maps_per_study.append(len(computed))
            statuses[result.status] = statuses.get(result.status, 0) + 1
            for stage in result.stages:
                pipeline_stages.setdefault(stage.name, []).append(stage.seconds)
    return {
        "n_studies": len(paths),
        "image_sizes": sorted(sizes),
        "stages": {k: summarise(v) for k, v in stages.items()},
        "pipeline_stage_medians_ms": {k: round(statistics.median(v) * 1000, 2) for k, v in pipeline_stages.items()},
        "maps_per_study": {"mean": round(float(np.mean(maps_per_study)), 2) if maps_per_study else 0,
                           "max": max(maps_per_study, default=0)},
        "statuses": statuses,
        "fusion_available": fuse is not None,
    }


class _VectorEmbedder:
    """Stands in for the image embedder: the benchmark's "images" already are unit vectors."""

    space = f"benchmark-random-{IMAGE_EMBEDDING_DIM}"
    tier = "benchmark"

    def embed(self, vectors):
        return np.asarray(vectors, dtype=np.float32)


def _unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _clustered_vectors(rng: np.random.Generator, n: int, dim: int, centres: np.ndarray) -> np.ndarray:
    """Unit vectors around random centres (cosine ≈ 0.7 to their centre, ≈ 0.5 within a cluster), closer to
    how learned embeddings group by content than isotropic random vectors."""
    picked = centres[rng.integers(0, len(centres), n)]
    return _unit_rows(picked + rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim))


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def _fill(base: Any, vectors: np.ndarray, offset: int, batch: int) -> float:
    """Insert vectors as image-only cases (ids bench-<offset+i>) through `CaseBase.add_cases`; seconds taken."""
    from medsight.retrieval.casebase import Case

    start = time.perf_counter()
    for s in range(0, len(vectors), batch):
        chunk = vectors[s:s + batch]
        cases = [Case(f"bench-{offset + s + i}", labels=("effusion",) if (offset + s + i) % 7 == 0 else (),
                      source="benchmark", view="PA") for i in range(len(chunk))]
        base.add_cases(cases, list(chunk), skip_existing=False)
    return time.perf_counter() - start


def run_retrieval(sizes: list[int], n_queries: int, hnsw_variants: list[dict], sweep_size: int = 10_000) -> dict:
    """Similar-case top-10 through `CaseBase.query_image` on a temporary ChromaDB, growing 1k → 10k → 100k.

    At each size the same store is queried two ways: the case base's default exact search (vectors held in
    memory, see `medsight.retrieval.casebase.ExactIndex`) and Chroma's HNSW index (`CaseBase(exact=False)`),
    each with recall@10 against a brute-force search. The exact search's first query in a fresh `CaseBase`
    also reads every vector from Chroma; that one-off cost is reported as `first_query_ms`.

    Vectors are random unit vectors of the image-embedding dimension: the hardest case for HNSW (no
    low-dimensional structure); exact search does the same work whatever the vectors. The HNSW settings
    in `hnsw_variants` are each built from scratch at `sweep_size` vectors (Chroma reads them when it builds
    the index), on random vectors and, with Chroma's defaults as well, on clustered vectors.
    """
    from medsight.retrieval.casebase import IMAGES, CaseBase

    rng = np.random.default_rng(7)
    queries = _unit_vectors(rng, n_queries, IMAGE_EMBEDDING_DIM)
    rows = []
    with tempfile.TemporaryDirectory(prefix="medsight-bench-chroma-") as tmp:
        base = CaseBase(path=tmp, image_embedder=_VectorEmbedder())
        hnsw = CaseBase(client=base.client, image_embedder=_VectorEmbedder(), exact=False)
        batch = min(5000, int(base.client.get_max_batch_size()))
        stored = np.zeros((0, IMAGE_EMBEDDING_DIM), np.float32)
        build_total = 0.0
        for size in sorted(sizes):
            new = _unit_vectors(rng, size - len(stored), IMAGE_EMBEDDING_DIM)
            build = _fill(base, new, len(stored), batch)
            build_total += build
            stored = np.concatenate([stored, new])
            truth = _exact_top(stored, queries)
            fresh = CaseBase(client=base.client, image_embedder=_VectorEmbedder())
            start = time.perf_counter()
            fresh.query_image(queries[0], k=10)
            first_ms = (time.perf_counter() - start) * 1000
            del fresh
            rows.append({"n": size, "search": "exact", "build_seconds_increment": round(build, 2),
                         "build_seconds_total": round(build_total, 2), **_query_stats(base, queries, truth),
                         "first_query_ms": round(first_ms, 1), "hnsw": _query_stats(hnsw, queries, truth)})
            log(f"  case base {size}: exact p95 {rows[-1]['p95_ms']} ms, recall@10 {rows[-1]['recall_at_10']} "
                f"(first query {rows[-1]['first_query_ms']} ms); HNSW p95 {rows[-1]['hnsw']['p95_ms']} ms, "
                f"recall@10 {rows[-1]['hnsw']['recall_at_10']}")
        collection = base._collection(IMAGES, None, create=False)
        config = dict((collection.configuration or {}).get("hnsw") or {})
    centres = _unit_vectors(rng, 100, IMAGE_EMBEDDING_DIM)
    samples = {
        "random": stored[:sweep_size] if len(stored) >= sweep_size else _unit_vectors(rng, sweep_size,
                                                                                      IMAGE_EMBEDDING_DIM),
        "clustered": _clustered_vectors(rng, sweep_size, IMAGE_EMBEDDING_DIM, centres),
    }
    sample_queries = {"random": queries, "clustered": _clustered_vectors(rng, n_queries, IMAGE_EMBEDDING_DIM, centres)}
    # Random vectors at Chroma's defaults are already in `sizes`; clustered ones are measured at the defaults too.
    plans = [("random", v) for v in hnsw_variants] + [("clustered", v) for v in [{}] + hnsw_variants]
    sweeps: dict[str, list] = {"random": [], "clustered": []}
    truths = {kind: _exact_top(samples[kind], sample_queries[kind]) for kind in samples} if hnsw_variants else {}
    for kind, variant in plans if hnsw_variants else ():
        with tempfile.TemporaryDirectory(prefix="medsight-bench-chroma-") as tmp:
            base = CaseBase(path=tmp, image_embedder=_VectorEmbedder(), exact=False)
            base.client.create_collection(IMAGES, embedding_function=None,
                                          metadata={"embedding_space": _VectorEmbedder.space},
                                          configuration={"hnsw": {"space": "cosine", **variant}})
            build = _fill(base, samples[kind], 0, batch)
            applied = dict((base._collection(IMAGES, None, create=False).configuration or {}).get("hnsw") or {})
            sweeps[kind].append({"n": sweep_size, "vectors": kind, "hnsw": applied, "build_seconds": round(build, 2),
                                 **_query_stats(base, sample_queries[kind], truths[kind])})
            log(f"  HNSW {variant or 'defaults'} at {sweep_size} {kind}: p95 {sweeps[kind][-1]['p95_ms']} ms, "
                f"recall@10 {sweeps[kind][-1]['recall_at_10']}")
    return {"dim": IMAGE_EMBEDDING_DIM, "k": 10, "queries": n_queries, "search": "exact (in-memory float32 matrix)",
            "hnsw_default": config, "sizes": rows, "hnsw_variants": sweeps["random"],
            "hnsw_variants_clustered": sweeps["clustered"],
            "vectors": "random unit vectors (worst case for HNSW recall; real embeddings cluster)",
            "clustered_vectors": "100 random centres; each vector = centre + N(0, 1/dim) noise, normalised"}


def _exact_top(stored: np.ndarray, queries: np.ndarray, k: int = 10) -> list[set[int]]:
    """Brute-force top-k row indices per query, computed before the timed loop so that the reference
    search's BLAS threads are not busy while a query is timed."""
    scores = queries @ stored.T
    return [set(row.tolist()) for row in np.argpartition(-scores, k - 1, axis=1)[:, :k]]


def _query_stats(base: Any, queries: np.ndarray, truth: list[set[int]], k: int = 10) -> dict:
    """Latency of `CaseBase.query_image(k=10)` (vector → ids, metadata, documents) and recall@10 vs exact."""
    base.query_image(queries[0], k=k)  # open the index / read the vectors outside the timed loop
    latencies, recalls = [], []
    for q, exact in zip(queries, truth):
        start = time.perf_counter()
        found = base.query_image(q, k=k)
        latencies.append(time.perf_counter() - start)
        recalls.append(len(exact & {int(c.case_id.rsplit("-", 1)[1]) for c in found}) / k)
    stats = summarise(latencies)
    return {"p50_ms": stats["median_ms"], "p95_ms": stats["p95_ms"], "max_ms": stats["max_ms"],
            "recall_at_10": round(float(np.mean(recalls)), 3)}


def run_batch(paths: list[Path], detector: Any) -> dict:
    """Images/s of `medsight.batch.score_folder` (ingest + batched anomaly scoring, then with pathology),
    and what a bf16 VGG16 pass would give: its speed and how far its scores move from fp32."""
    from medsight.batch import score_folder

    out: dict[str, Any] = {"files": len(paths), "batch_size": 16}
    for label, pathology in (("anomaly_only", False), ("anomaly_and_pathology", True)):
        rows, summary = score_folder(paths, batch_size=16, pathology=pathology, progress=False)
        out[label] = {"images_per_second": summary["images_per_second"], "seconds": summary["seconds"],
                      "scored": summary["scored"], "unreadable": summary["unreadable"]}
    out["bf16_extractor"] = bf16_scoring_check(detector, paths[:16])
    return out


def bf16_scoring_check(detector: Any, paths: list[Path]) -> dict:
    """Fused scores with the VGG16 pass in bf16 (autocast, channels-last) against fp32, same images.

    Only the convolutional trunk runs in bf16; the VAE, ViT and calibration stay fp32.
    """
    from benchmarks.flops import time_calls
    from medsight.ingest import load_study

    x = torch.cat([detector.preprocess(load_study(p).image) for p in paths])
    x_cl = x.contiguous(memory_format=torch.channels_last)

    def fp32():
        return detector.features(x)

    def bf16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return detector.features(x_cl).float()

    with torch.inference_mode():
        fused32 = detector.components_from_features(fp32())["fused"]
        fused16 = detector.components_from_features(bf16())["fused"]
        t32 = time_calls(fp32, runs=2, warmup=0)
        t16 = time_calls(bf16, runs=2, warmup=1)
    diff = float((fused32 - fused16).abs().max())
    n = len(paths)
    return {"images": n, "network_images_per_second_fp32": round(n / (t32.min_ms / 1000), 2),
            "network_images_per_second_bf16": round(n / (t16.min_ms / 1000), 2),
            "max_abs_score_diff": round(diff, 5), "within_0_01": diff <= 0.01,
            "note": "VGG16 pass only (no ingest); the product scores in fp32"}


# ----------------------------------------------------------------------------------------------- targets

def _get(data: dict, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def target_rows(results: dict) -> list[dict]:
    """One row per target: title, target, measured, met (None when not measured in this run)."""
    retrieval_100k = next((r for r in _get(results, "retrieval", "sizes") or [] if r.get("n") == 100_000), None)
    full_ms = _get(results, "warm", "stages", "full_analysis", "median_ms")
    rss_mb = _get(results, "memory", "peak_rss_mb_all")
    measured = {
        "warm_full_analysis": full_ms / 1000 if full_ms is not None else None,
        "vgg16_efficiency": _get(results, "efficiency", "vgg16_features", "efficiency"),
        "densenet121_efficiency": _get(results, "efficiency", "densenet121", "efficiency"),
        "cold_start": _get(results, "cold_start", "total_s"),
        "peak_rss": rss_mb * 2**20 / 1e9 if rss_mb is not None else None,
        "similar_case_p95": retrieval_100k["p95_ms"] if retrieval_100k else None,
        "batch_throughput": _get(results, "batch", "anomaly_only", "images_per_second"),
    }
    rows = []
    for key, (title, op, target, unit) in TARGETS.items():
        value = measured[key]
        met = None if value is None else (value <= target if op == "<=" else value >= target)
        rows.append({"key": key, "title": title, "target": f"{'≤' if op == '<=' else '≥'} {target:g} {unit}",
                     "target_value": target,
                     "comparison": op, "unit": unit, "measured": None if value is None else round(float(value), 3),
                     "met": met})
    return rows


def format_table(results: dict) -> str:
    lines = [f"{'Target':<52} {'target':>16} {'measured':>12}  met", "-" * 88]
    for row in results["targets"]:
        measured = "—" if row["measured"] is None else f"{row['measured']:g} {row['unit']}"
        met = {True: "yes", False: "NO", None: "n/a"}[row["met"]]
        lines.append(f"{row['title']:<52} {row['target']:>16} {measured:>12}  {met}")
    stages = _get(results, "warm", "stages") or {}
    if stages:
        lines += ["", f"{'Warm stage':<20} {'median ms':>10} {'p95 ms':>10} {'n':>4}", "-" * 48]
        for name, s in stages.items():
            if s.get("n"):
                lines.append(f"{name:<20} {s['median_ms']:>10.1f} {s['p95_ms']:>10.1f} {s['n']:>4}")
    eff = results.get("efficiency") or {}
    if isinstance(eff, dict) and "error" not in eff:
        matmul = _get(results, "matmul", "best_gflops")
        lines += ["", f"Matmul fp32: {matmul} GFLOP/s (best), {_get(results, 'matmul', 'threads')} threads",
                  f"{'Network':<56} {'GFLOP':>7} {'best ms':>8} {'GFLOP/s':>8} {'ratio':>6}", "-" * 90]
        for item in eff.values():
            if isinstance(item, dict) and "gflops" in item:
                lines.append(f"{item['name']:<56} {item['gflops']:>7.2f} {item['latency']['min_ms']:>8.1f} "
                             f"{item['achieved_gflops_per_s']:>8.1f} {item['efficiency']:>6.2f}")
    for item in (eff.get("alternatives") or []) if isinstance(eff, dict) else []:
        if "latency" in item:
            lines.append(f"  {item['name']:<54} {'':>7} {item['latency']['min_ms']:>8.1f} "
                         f"{item['achieved_gflops_per_s']:>8.1f} {item['efficiency']:>6.2f}  "
                         f"(max |Δ| {item['max_abs_diff_vs_eager']:.1e})")
    cold = results.get("cold_start") or {}
    if "parts" in cold:
        parts = ", ".join(f"{k.removesuffix('_s').replace('_', ' ')} {v:.2f} s" for k, v in cold["parts"].items())
        lines += ["", f"Cold start {cold['total_s']:.2f} s: {parts}"]
    for row in _get(results, "retrieval", "sizes") or []:
        lines.append(f"Similar cases n={row['n']:>6}: p50 {row['p50_ms']:.1f} ms, p95 {row['p95_ms']:.1f} ms, "
                     f"recall@10 {row['recall_at_10']:.2f}"
                     + (f" (exact; first query {row['first_query_ms']:.0f} ms)" if "first_query_ms" in row else ""))
        if isinstance(row.get("hnsw"), dict):
            hnsw = row["hnsw"]
            lines.append(f"  Chroma HNSW n={row['n']:>6}: p50 {hnsw['p50_ms']:.1f} ms, p95 {hnsw['p95_ms']:.1f} ms, "
                         f"recall@10 {hnsw['recall_at_10']:.2f}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- main

def run(quick: bool = False, studies: int | None = None, out: Path = DEFAULT_OUT, cold_all_models: bool = True,
        casebase_sizes: list[int] | None = None, only: list[str] | None = None) -> dict:
    """Run the sections and write the JSON; returns the results dict.

    With `only`, the named sections are measured again and merged into the existing JSON at `out`
    (e.g. after another process disturbed them); the rest of that file is kept as it was.
    """
    n_studies = studies or (3 if quick else 20)
    n_batch = max(n_studies, 8 if quick else 48)
    sizes = casebase_sizes or ([1000] if quick else [1000, 10_000, 100_000])
    out = Path(out)
    wanted = set(only or SECTIONS)
    if only:
        results: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
        results.setdefault("rerun", []).append({
            "sections": sorted(wanted), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "load_average_start": load_average()})
    else:
        results = {
            "schema": SCHEMA_VERSION, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "mode": "quick" if quick else "full", "command": " ".join(["python -m benchmarks.run"] + sys.argv[1:]),
        }
        section("machine", results, machine_info)
    if "cold_start" in wanted or "memory" in wanted:
        section("cold_start", results, lambda: run_cold_start(SAMPLE_STUDY, all_models=cold_all_models))
        cold = results["cold_start"]
        results["memory"] = {
            "peak_rss_mb_analysis": cold.get("peak_rss_mb_analysis"), "peak_rss_mb_all": cold.get("peak_rss_mb_all"),
            "rss_mb_all": cold.get("rss_mb_all"), "models": {**cold.get("models", {}), **cold.get("other_models", {})},
            "measured_in": "the cold-start process: analysis models + first analysis, then every other locally "
                           "available model slot",
        } if "error" not in cold else {"error": "cold-start process failed; see cold_start"}
    if "matmul" in wanted or "efficiency" in wanted:
        section("matmul", results, lambda: matmul_flops_per_second(2048, repeats=4 if quick else 8))
    detector, classifier, tiers = load_models()
    results["model_tiers"] = tiers
    matmul_gflops = _get(results, "matmul", "best_gflops") or 0.0
    if "efficiency" in wanted:
        section("efficiency", results, lambda: run_efficiency(matmul_gflops, detector, classifier,
                                                              runs=5 if quick else 15, compare=not quick))
    if wanted & {"warm", "batch"}:
        with tempfile.TemporaryDirectory(prefix="medsight-bench-studies-") as tmp:
            paths = make_studies(Path(tmp), n_batch)
            if "warm" in wanted:
                if detector is None and classifier is None:
                    results["warm"] = {"error": "no image model available: " + json.dumps(tiers)}
                else:
                    section("warm", results, lambda: run_warm(paths[:n_studies], detector, classifier))
            if "batch" in wanted:
                section("batch", results, lambda: run_batch(paths, detector) if detector is not None
                        else {"error": "anomaly detector unavailable"})
    if "retrieval" in wanted:
        section("retrieval", results, lambda: run_retrieval(sizes, n_queries=50 if quick else 200,
                                                            hnsw_variants=[] if quick else HNSW_VARIANTS))
    results["machine"]["load_average_end"] = load_average()
    results["machine"]["torch_threads_end"] = torch.get_num_threads()
    results["targets"] = target_rows(results)
    for name in SECTIONS:
        results.setdefault(name, {"error": "not run"})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")
    return results


def main(argv: list[str] | None = None) -> int:
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
    results = run(quick=args.quick, studies=args.studies, out=args.out, cold_all_models=not args.no_all_models,
                  casebase_sizes=args.casebase_sizes, only=args.only)
    print()
    print(format_table(results))
    print(f"\nLoad average start {results['machine'].get('load_average_start')} → end "
          f"{results['machine'].get('load_average_end')}. JSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
