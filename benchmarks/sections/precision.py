"""Reduced precision and compiled runtimes: speed and score agreement with fp32 on the same images.

For each image network the product runs (the anomaly detector's VGG16 trunk, the pathology classifier's
network) this compares the fp32 eager pass with bf16 autocast and with ONNX Runtime (the model exported
with `torch.onnx.export` into a temporary folder, never into the repository): batch-1 latency (min and
median, alternating the paths call by call so load changes reach them alike) and the largest difference
of the scores a reader sees (the fused anomaly score; the calibrated pathology probabilities) over the
bundled sample studies, generated phantoms and pydicom's real CR chest film RG1.

A path may become the default only where every score stays within `TOLERANCE` of fp32 on these images;
`decision` says which path qualifies (the fastest one within tolerance), what the product runs and what the
loaded model ran in this benchmark (`runs_here`).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from benchmarks.common import ROOT
from benchmarks.context import Context

NAME = "precision"
#: Largest score difference from fp32 a faster path may introduce to become the default.
TOLERANCE = 0.005
#: What the product runs for each network, by `medsight.device.uses_onnx_runtime` (recorded beside each decision).
ONNX_PATH = ("onnxruntime_fp32 on the CPU (exported once per weights, checked against PyTorch at load); fp32 eager "
             "PyTorch for Grad-CAM, on CUDA/MPS, until the export is ready and with MEDSIGHT_RUNTIME=torch")
TORCH_PATH = ("fp32 eager PyTorch (channels-last): ONNX Runtime gained too little in a whole analysis for the memory "
              "it adds (see medsight.device.ONNX_BY_DEFAULT); MEDSIGHT_RUNTIME=onnx runs it")
SLOTS = {"anomaly_detector": "anomaly.detector", "pathology_classifier": "pathology.classifier"}


def product_path(key: str) -> str:
    """What the product runs for the network `key` ("anomaly_detector" or "pathology_classifier") here."""
    from medsight.device import uses_onnx_runtime

    return ONNX_PATH if uses_onnx_runtime(SLOTS[key]) else TORCH_PATH


def images() -> dict[str, np.ndarray]:
    """The comparison images: bundled samples, phantoms with and without findings, the real film RG1."""
    from medsight.ingest import load_study
    from medsight.synthetic import generate_phantom

    out = {f"sample:{p.name}": load_study(p).image for p in sorted((ROOT / "models" / "samples").iterdir())
           if p.suffix in (".png", ".jpg", ".dcm")}
    for seed, findings in ((11, ()), (12, ("effusion",)), (13, ("nodule",)), (14, ("pneumothorax",))):
        out[f"phantom:{seed}:{'+'.join(findings) or 'normal'}"] = generate_phantom(seed, findings=findings).image
    try:
        from pydicom.data import get_testdata_file

        out["real:RG1_UNCR.dcm"] = load_study(get_testdata_file("RG1_UNCR.dcm")).image
    except Exception:  # noqa: BLE001 - pydicom's test data may be absent; the others still compare
        pass
    return out


def _onnx_session(module: torch.nn.Module, example: torch.Tensor, folder: Path, name: str) -> Any:
    import onnxruntime as ort

    path = folder / f"{name}.onnx"
    torch.onnx.export(module.eval(), (example,), str(path), input_names=["x"], opset_version=17, dynamo=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _interleaved_ms(paths: dict[str, Callable[[], Any]], runs: int) -> dict[str, dict]:
    """Batch-1 latency of each path, called in turn (A B C A B C ...) after one untimed call each."""
    samples: dict[str, list[float]] = {name: [] for name in paths}
    for fn in paths.values():
        fn()
    for _ in range(runs):
        for name, fn in paths.items():
            start = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - start) * 1000)
    return {name: {"min_ms": round(min(v), 3), "median_ms": round(float(np.median(v)), 3)}
            for name, v in samples.items()}


class _Trunk(torch.nn.Module):
    """The VGG16 trunk's 512-vector (what the fused score is computed from)."""

    def __init__(self, extractor: torch.nn.Module):
        super().__init__()
        self.extractor = extractor

    def forward(self, x):
        return self.extractor(x)


def _paths(module: torch.nn.Module, example: torch.Tensor, folder: Path, name: str) -> dict[str, Callable]:
    """The same network run three ways: fp32 eager, bf16 autocast (channels-last), ONNX Runtime fp32."""
    session = _onnx_session(module, example, folder, name)

    def bf16(x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return module(x.contiguous(memory_format=torch.channels_last)).float()

    return {"fp32": module, "bf16_autocast": bf16,
            "onnxruntime_fp32": lambda x: torch.from_numpy(session.run(None, {"x": x.numpy()})[0])}


def compare_detector(detector: Any, pictures: dict[str, np.ndarray], folder: Path, runs: int) -> dict:
    """Fused anomaly scores and VGG16 latency: fp32, bf16 autocast, ONNX Runtime fp32."""
    inputs = {k: detector.preprocess(v) for k, v in pictures.items()}

    def fused(features: torch.Tensor) -> float:
        return float(detector.components_from_features(features)["fused"][0])

    paths = _paths(_Trunk(detector.extractor), next(iter(inputs.values())), folder, "vgg16_trunk")
    return _compare(paths, inputs, fused, runs)


def compare_classifier(classifier: Any, pictures: dict[str, np.ndarray], folder: Path, runs: int) -> dict:
    """Calibrated pathology probabilities and network latency: fp32, bf16 autocast, ONNX Runtime fp32."""
    from benchmarks.sections.efficiency import _Logits

    inputs = {k: classifier.preprocess(v) for k, v in pictures.items()}

    def calibrated(out: torch.Tensor) -> np.ndarray:
        return classifier.calibrate(torch.sigmoid(out.float()).numpy()[0])

    paths = _paths(_Logits(classifier.net), next(iter(inputs.values())), folder, "pathology")
    return _compare(paths, inputs, calibrated, runs)


def _compare(paths: dict[str, Callable], inputs: dict[str, torch.Tensor], score: Callable, runs: int) -> dict:
    with torch.inference_mode():
        scores = {name: {k: np.atleast_1d(score(fn(x))) for k, x in inputs.items()} for name, fn in paths.items()}
        example = next(iter(inputs.values()))
        latency = _interleaved_ms({name: (lambda fn=fn: fn(example)) for name, fn in paths.items()}, runs)
    out: dict[str, Any] = {"images": len(inputs), "paths": {}}
    reference = scores["fp32"]
    for name in paths:
        diffs = {k: float(np.max(np.abs(scores[name][k] - reference[k]))) for k in inputs}
        worst = max(diffs, key=diffs.get)
        out["paths"][name] = {
            **latency[name],
            "speedup_vs_fp32_median": round(latency["fp32"]["median_ms"] / max(latency[name]["median_ms"], 1e-3), 2),
            "max_score_diff": round(diffs[worst], 5), "worst_image": worst,
            "within_tolerance": diffs[worst] <= TOLERANCE,
        }
    faster = [n for n, row in out["paths"].items()
              if n != "fp32" and row["within_tolerance"] and row["speedup_vs_fp32_median"] > 1.0]
    out["qualifies"] = max(faster, key=lambda n: out["paths"][n]["speedup_vs_fp32_median"]) if faster else None
    return out


def run(context: Context) -> dict:
    """Both networks on the comparison images (needs the loaded models)."""
    detector, classifier, _ = context.models()
    pictures = images()
    runs = 5 if context.options.quick else 15
    out: dict[str, Any] = {"tolerance": TOLERANCE, "images": sorted(pictures),
                           "cpu_bf16": _cpu_flags()}
    with tempfile.TemporaryDirectory(prefix="medsight-onnx-") as folder:
        if detector is not None:
            out["anomaly_detector"] = compare_detector(detector, pictures, Path(folder), runs)
        if classifier is not None:
            out["pathology_classifier"] = compare_classifier(classifier, pictures, Path(folder), runs)
    from medsight.models.onnx_runtime import runtime_of

    loaded = {"anomaly_detector": detector, "pathology_classifier": classifier}
    out["decision"] = {key: {"qualifies": out[key]["qualifies"], "product_runs": product_path(key),
                             "runs_here": runtime_of(loaded[key])}
                       for key in ("anomaly_detector", "pathology_classifier") if key in out}
    return out


def _cpu_flags() -> dict:
    """Whether this CPU has native bf16 matrix units (AVX-512 BF16, AMX)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return {}
    return {flag: flag in flags.split() for flag in ("avx512_bf16", "amx_bf16", "amx_tile")}
