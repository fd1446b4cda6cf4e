"""Benchmark harness: FLOP counting, README generation, and the quick benchmark run end to end."""

from __future__ import annotations

from types import SimpleNamespace

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import flops, readme
from benchmarks.sections import SECTIONS
from benchmarks.targets import TARGETS, target_rows

ROOT = Path(__file__).resolve().parent.parent


def test_flop_counter_counts_two_flops_per_multiply_accumulate():
    counted, expected = flops.linear_flops_check(in_features=64, out_features=32, batch=4)
    assert counted == expected == 2 * 4 * 64 * 32
    conv = torch.nn.Conv2d(3, 8, kernel_size=3, padding=1, bias=False)
    # 8 output channels × 16×16 positions × (3·3·3) MACs each, ×2.
    assert flops.count_flops(conv, torch.zeros(1, 3, 16, 16)) == 2 * 8 * 16 * 16 * 27


def test_vgg16_features_flops_match_the_literature():
    from medsight.models.anomaly.torch_model import VGG16Features

    # torchvision lists VGG16 at 15.47 GMAC, 0.12 of them in the classifier: the trunk is 15.35 GMAC.
    gflops = flops.count_flops(VGG16Features(), torch.zeros(1, 3, 224, 224)) / 1e9
    assert gflops == pytest.approx(2 * 15.35, rel=0.005)


def test_densenet121_flops_match_the_literature():
    import torchvision
    import torchxrayvision as xrv

    # torchvision lists DenseNet-121 at 2.83 GMAC (3-channel stem).
    gflops = flops.count_flops(torchvision.models.densenet121(weights=None), torch.zeros(1, 3, 224, 224)) / 1e9
    assert gflops == pytest.approx(5.7, rel=0.01)
    # torchxrayvision's single-channel stem drops 2/3 of conv0 (112·112·64·49 MACs per input channel).
    one_channel = flops.count_flops(xrv.models.DenseNet(weights=None).features, torch.zeros(1, 1, 224, 224)) / 1e9
    assert gflops - one_channel == pytest.approx(2 * 2 * 112 * 112 * 64 * 49 / 1e9, rel=0.02)


def test_matmul_rate_and_percentiles():
    rate = flops.matmul_flops_per_second(n=256, repeats=2)
    assert rate["best_gflops"] >= rate["median_gflops"] > 0
    assert rate["threads"] == torch.get_num_threads()
    assert flops.percentile([1, 2, 3, 4, 5], 50) == 3
    assert flops.percentile([1, 2, 3, 4, 5], 95) == pytest.approx(4.8)


def test_target_rows_compare_in_the_right_direction():
    results = {
        "warm": {"stages": {"full_analysis": {"median_ms": 1200.0}}},
        "efficiency": {"vgg16_features": {"efficiency": 0.95}, "densenet121": {"efficiency": 0.4}},
        "cold_start": {"total_s": 9.0},
        "memory": {"peak_rss_mb_all": 1500.0},
        "retrieval": {"sizes": [{"n": 1000, "p95_ms": 2.0}]},
        "batch": {"anomaly_only": {"images_per_second": 6.5}},
    }
    rows = {row["key"]: row for row in target_rows(results)}
    assert set(rows) == set(TARGETS)
    assert rows["warm_full_analysis"]["measured"] == 1.2 and rows["warm_full_analysis"]["met"] is False
    assert rows["vgg16_efficiency"]["met"] is True and rows["densenet121_efficiency"]["met"] is False
    assert rows["cold_start"]["met"] is True and rows["batch_throughput"]["met"] is True
    assert rows["peak_rss"]["measured"] == pytest.approx(1500 * 2**20 / 1e9, abs=1e-3)
    assert rows["similar_case_p95"]["measured"] is None and rows["similar_case_p95"]["met"] is None  # no 100k run


def test_retrieval_benchmark_measures_exact_search_beside_hnsw():
    from benchmarks.report import format_table
    from benchmarks.sections.retrieval import run_retrieval

    out = run_retrieval([500, 1500], n_queries=20, hnsw_variants=[{"ef_search": 50}], sweep_size=800)
    assert [row["n"] for row in out["sizes"]] == [500, 1500]
    for row in out["sizes"]:
        # The case base's default search is exact: recall against brute force is 1 at every size.
        assert row["search"] == "exact" and row["recall_at_10"] == 1.0
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["max_ms"] and row["first_query_ms"] > 0
        assert 0 < row["hnsw"]["recall_at_10"] <= 1 and row["hnsw"]["p95_ms"] > 0
    assert [(v["vectors"], v["n"], v["hnsw"]["ef_search"]) for v in out["hnsw_variants"]] == [("random", 800, 50)]
    clustered = out["hnsw_variants_clustered"]
    assert [(v["vectors"], v["hnsw"]["ef_search"]) for v in clustered] == [("clustered", 100), ("clustered", 50)]
    assert all(0 < v["recall_at_10"] <= 1 for v in out["hnsw_variants"] + clustered)
    table = format_table({"targets": [], "retrieval": out})
    assert "Similar cases n=  1500" in table and "Chroma HNSW n=  1500" in table


def test_section_plan_measures_what_a_section_reads_first():
    from benchmarks.sections import plan

    assert [s.name for s in plan(SECTIONS)] == list(SECTIONS)
    assert [s.name for s in plan(["efficiency"])] == ["matmul", "efficiency"]
    # Memory is read from the cold-start process: either selection measures both.
    assert [s.name for s in plan(["memory"])] == [s.name for s in plan(["cold_start"])] == ["cold_start", "memory"]
    assert [s.name for s in plan(["retrieval"])] == ["retrieval"]


def test_a_standalone_section_is_imported_and_run_without_options(tmp_path, monkeypatch):
    from benchmarks.sections import standalone

    (tmp_path / "bench_standalone_probe.py").write_text("def run():\n    return {'pages': 3}\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    section = standalone("viewer", "bench_standalone_probe")
    assert section.name == "viewer" and section.timed
    full, quick = (SimpleNamespace(options=SimpleNamespace(quick=q)) for q in (False, True))
    assert section.run(full) == {"pages": 3}
    assert "skipped" in section.run(quick)  # browsers, PACS and clusters are measured by the full run only


def test_warm_stages_name_stage_records_the_pipeline_writes():
    from types import SimpleNamespace

    from benchmarks.sections.warm import PIPELINE_STAGES
    from medsight.pipeline import run_analysis

    # An unreadable image still leaves a record for every stage, without loading a model.
    recorded = {stage.name for stage in run_analysis(SimpleNamespace(image=None), "").stages}
    assert set(PIPELINE_STAGES.values()) <= recorded


def _results() -> dict:
    return {
        "mode": "quick", "created": "2026-01-01T00:00:00+00:00",
        "machine": {"git_commit": "abc1234", "logical_cpus": 2, "cpu": "test", "torch": "2", "torch_threads": 2,
                    "load_average_start": [0.5, 0.5, 0.5]},
        "targets": target_rows({"cold_start": {"total_s": 9.0}}),
        "warm": {"n_studies": 3, "image_sizes": ["512x512"], "stages": {"ingest": {"n": 3, "median_ms": 12.0, "p95_ms": 15.0}}},
    }


def test_readme_generator_adds_markers_once_and_is_idempotent(tmp_path):
    path = tmp_path / "README.md"
    path.write_text("# Project\n\nIntro text.\n", encoding="utf-8")
    args = ["--results", str(tmp_path / "r.json"), "--readme", str(path)]
    (tmp_path / "r.json").write_text(json.dumps(_results()), encoding="utf-8")
    assert readme.main(args) == 0
    first = path.read_text(encoding="utf-8")
    assert first.startswith("# Project\n\nIntro text.\n")
    assert first.count(readme.START) == first.count(readme.END) == 1
    assert "Cold start → first full result | ≤ 15 s | 9 s | yes" in first
    assert readme.main(args) == 0 and path.read_text(encoding="utf-8") == first
    assert readme.main(args + ["--check"]) == 0


def test_readme_generator_replaces_only_the_marked_section(tmp_path):
    before = f"# Project\n\n{readme.START}\nold figures\n{readme.END}\n\n## Licence\n\nMIT\n"
    updated = readme.update_readme(before, readme.render_section(_results()))
    assert "old figures" not in updated
    assert updated.startswith("# Project\n\n" + readme.START + "\n## Performance")
    assert updated.endswith(readme.END + "\n\n## Licence\n\nMIT\n")
    assert readme.update_readme(updated, readme.render_section(_results())) == updated
    path = tmp_path / "README.md"
    path.write_text(before, encoding="utf-8")
    (tmp_path / "r.json").write_text(json.dumps(_results()), encoding="utf-8")
    assert readme.main(["--results", str(tmp_path / "r.json"), "--readme", str(path), "--check"]) == 1


@pytest.mark.slow
def test_quick_benchmark_writes_every_section(tmp_path):
    out = tmp_path / "latest.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--studies", "2", "--no-all-models", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=1500, env=dict(os.environ),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text(encoding="utf-8"))
    assert results["mode"] == "quick"
    for name in SECTIONS:
        assert name in results, name
    for name in ("machine", "matmul", "efficiency", "cold_start", "memory", "retrieval"):
        assert "error" not in results[name], (name, results[name].get("error"))
    assert results["matmul"]["best_gflops"] > 0
    assert results["efficiency"]["vgg16_features"]["gflops"] == pytest.approx(30.69, rel=0.01)
    assert results["cold_start"]["total_s"] == pytest.approx(sum(results["cold_start"]["parts"].values()), rel=0.01)
    assert results["memory"]["peak_rss_mb_analysis"] > 100
    assert [row["n"] for row in results["retrieval"]["sizes"]] == [1000]
    assert results["retrieval"]["sizes"][0]["recall_at_10"] == 1.0, "exact search"
    assert 0 < results["retrieval"]["sizes"][0]["hnsw"]["recall_at_10"] <= 1
    tiers = results["model_tiers"]
    if not str(tiers["anomaly.detector"]).startswith("unavailable"):
        assert "error" not in results["warm"] and "error" not in results["batch"]
        assert results["warm"]["stages"]["full_analysis"]["n"] == 2
        assert results["batch"]["anomaly_only"]["scored"] == results["batch"]["files"]
    assert {row["key"] for row in results["targets"]} == set(TARGETS)
    assert "Target" in proc.stdout and "measured" in proc.stdout


def test_full_size_targets_read_the_dicom_film_row():
    film = {"full_analysis": {"median_ms": 350.0, "p95_ms": 720.0}}
    rows = {row["key"]: row for row in target_rows({"fullsize": {"inputs": {"dicom_2000x2500": film}}})}
    assert rows["fullsize_warm_median"]["measured"] == 0.35 and rows["fullsize_warm_median"]["met"] is True
    assert rows["fullsize_warm_p95"]["measured"] == 0.72 and rows["fullsize_warm_p95"]["met"] is False
    assert "fullsize" in SECTIONS and "precision" in SECTIONS


def test_precision_comparison_keeps_fp32_unless_scores_stay_within_tolerance():
    from benchmarks.sections import precision

    inputs = {"a": torch.ones(1, 2), "b": torch.zeros(1, 2)}
    paths = {"fp32": lambda x: x, "close": lambda x: x + precision.TOLERANCE / 2, "far": lambda x: x + 0.05}
    out = precision._compare(paths, inputs, lambda y: y.numpy()[0], runs=2)
    assert out["paths"]["fp32"]["max_score_diff"] == 0
    assert out["paths"]["close"]["within_tolerance"] and not out["paths"]["far"]["within_tolerance"]
    assert out["qualifies"] in (None, "close")  # only a path within tolerance may qualify, and only if faster


def test_efficiency_is_measured_on_the_runtime_the_product_runs(monkeypatch):
    import torch

    from benchmarks.flops import network_efficiency
    from benchmarks.sections.efficiency import product_runtime_efficiency

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1)).eval()
    x = torch.randn(1, 1, 64, 64)
    eager = network_efficiency("toy", net, x, 100.0, runs=3, target=0.5)
    assert eager["runtime"] == "pytorch"
    monkeypatch.setenv("MEDSIGHT_RUNTIME", "torch")
    assert product_runtime_efficiency(eager, "pathology.classifier", net, x, 100.0, runs=3) is eager
    monkeypatch.setenv("MEDSIGHT_RUNTIME", "auto")  # by default only the pathology network runs in ONNX Runtime
    assert product_runtime_efficiency(eager, "anomaly.detector", net, x, 100.0, runs=3) is eager
    onnx = product_runtime_efficiency(eager, "pathology.classifier", net, x, 100.0, runs=3)
    assert onnx["runtime"] == "onnx" and onnx["gflops"] == eager["gflops"] and onnx["target"] == 0.5
    assert onnx["pytorch"]["efficiency"] == eager["efficiency"] and onnx["efficiency"] > 0
