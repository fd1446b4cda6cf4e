"""Compute efficiency: each CNN's achieved FLOP/s over the machine's matmul FLOP/s, measured in the same run."""

from __future__ import annotations

from typing import Any, Callable

import torch

from benchmarks.common import lookup
from benchmarks.context import Context
from benchmarks.flops import network_efficiency
from benchmarks.targets import TARGETS

NAME = "efficiency"
NEEDS = ("matmul",)


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


def product_runtime_efficiency(torch_entry: dict, slot: str, module: Any, x: Any, matmul_gflops: float,
                               runs: int) -> dict:
    """The stage's figure on the runtime the product runs `slot`'s network with on the CPU (ONNX Runtime or
    PyTorch, `medsight.device.uses_onnx_runtime`), with the PyTorch eager figure kept beside it."""
    from medsight.device import uses_onnx_runtime

    if not uses_onnx_runtime(slot):
        return torch_entry
    try:
        entry = network_efficiency(torch_entry["name"], module, x, matmul_gflops, runs=runs,
                                   target=torch_entry["target"], note=torch_entry["note"], runtime="onnx")
    except Exception as exc:  # noqa: BLE001 - the product falls back to PyTorch too
        return {**torch_entry, "onnx_error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    entry["pytorch"] = {key: torch_entry[key] for key in ("latency", "achieved_gflops_per_s", "efficiency")}
    return entry


def run_efficiency(matmul_gflops: float, detector: Any, classifier: Any, runs: int, compare: bool) -> dict:
    """Each CNN's forward pass alone, batch 1: FLOPs, latency and fraction of the matmul rate.

    The networks run exactly as the product holds them (the detector's extractor, the classifier's
    network inside a `PathologyClassifier`), on the runtime the product runs them with (ONNX Runtime on the
    CPU, PyTorch's figure beside it), so any inference setting the product applies is measured.
    With `compare`, also channels-last, bf16 and ONNX Runtime variants of the two reference networks.
    """
    import torch

    from medsight.models.anomaly.torch_model import build_demo_extractor

    out: dict[str, Any] = {}
    extractor = detector.extractor if detector is not None else build_demo_extractor()
    vgg_input = torch.randn(1, 3, 224, 224)
    out["vgg16_features"] = product_runtime_efficiency(network_efficiency(
        "VGG16 features (anomaly detector trunk + global pool)", extractor, vgg_input,
        matmul_gflops, runs=runs, target=TARGETS["vgg16_efficiency"][2],
        note=f"the detector's own extractor ({extractor.kind} weights)"), "anomaly.detector", extractor, vgg_input,
        matmul_gflops, runs)
    timing_clf = timing_only_classifier()
    dense_input = torch.randn(1, 1, 224, 224)
    out["densenet121"] = product_runtime_efficiency(network_efficiency(
        "DenseNet-121 (torchxrayvision architecture, 1 channel)", _Logits(timing_clf.net), dense_input,
        matmul_gflops, runs=runs, target=TARGETS["densenet121_efficiency"][2],
        note="real-tier architecture with random weights (weights=None), used for timing only"),
        "pathology.classifier", _Logits(timing_clf.net), dense_input, matmul_gflops, runs)
    if classifier is not None:
        size = int(classifier.input_size)
        demo_input = torch.randn(1, 1, size, size)
        out["pathology_demo"] = product_runtime_efficiency(network_efficiency(
            f"Pathology demo network (reduced DenseNet, {size} px)", _Logits(classifier.net), demo_input,
            matmul_gflops, runs=runs, note="the demo-tier model the app runs when the real weights are absent"),
            "pathology.classifier", _Logits(classifier.net), demo_input, matmul_gflops, runs)
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


def run(context: Context) -> dict:
    """Efficiency of the loaded networks; the layout / bf16 / ONNX comparison in full runs only."""
    detector, classifier, _ = context.models()
    quick = context.options.quick
    return run_efficiency(lookup(context.results, "matmul", "best_gflops") or 0.0, detector, classifier,
                          runs=5 if quick else 15, compare=not quick)
