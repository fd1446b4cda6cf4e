"""Batch scoring: images/s of `medsight.batch.score_folder` over a folder of generated studies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from benchmarks.context import Context

NAME = "batch"


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


def run(context: Context) -> dict:
    """Batch scoring of the run's generated studies (needs the anomaly detector)."""
    detector = context.models()[0]
    if detector is None:
        return {"error": "anomaly detector unavailable"}
    return run_batch(context.studies(), detector)
