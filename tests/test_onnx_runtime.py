"""ONNX Runtime forward passes of the image models: same scores and maps as PyTorch, fallback, cache, labels."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from medsight.models import onnx_runtime
from medsight.models.onnx_runtime import ONNX_RUNTIME, TORCH_RUNTIME, OnnxForward

SCORE_TOL = 1e-5
MAP_TOL = 1e-4


@contextlib.contextmanager
def _on_torch(*models):
    """Run the given models on their PyTorch path for the duration (the reference)."""
    saved = [m.onnx for m in models]
    for m in models:
        m.onnx = None
    try:
        yield
    finally:
        for m, forward in zip(models, saved):
            m.onnx = forward


@pytest.fixture(autouse=True)
def onnx_allowed(monkeypatch):
    """This module tests the ONNX Runtime path of both image models, which tests/conftest.py turns off for the
    others (by default only the pathology classifier takes it: see the test of the defaults below)."""
    monkeypatch.setenv("MEDSIGHT_RUNTIME", "onnx")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def models(cache, tmp_path_factory):
    """The demo detector and classifier, each with a ready ONNX Runtime session (exported once for the module)."""
    from medsight import registry
    from medsight.config import Settings

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDSIGHT_RUNTIME", "torch")  # the registry leaves them on PyTorch; started here in the foreground
        settings = Settings(home=tmp_path_factory.mktemp("home"))
        detector = registry.load("anomaly.detector", settings, "cpu").model
        classifier = registry.load("pathology.classifier", settings, "cpu").model
        mp.setenv("MEDSIGHT_RUNTIME", "onnx")
        for model in (detector, classifier):
            forward = model.start_onnx_runtime(cache, background=False)
            assert forward.ready, forward.reason
    yield detector, classifier
    detector.onnx = classifier.onnx = None


def _images() -> dict[str, np.ndarray]:
    from medsight.config import PROJECT_ROOT
    from medsight.ingest import load_study
    from medsight.synthetic import generate_phantom

    out = {f"phantom {seed} {'+'.join(f) or 'normal'}": generate_phantom(seed, findings=f).image
           for seed, f in ((11, ()), (12, ("effusion",)), (13, ("nodule",)), (14, ("pneumothorax",)))}
    out["sample normal_pa"] = load_study(PROJECT_ROOT / "models" / "samples" / "normal_pa.png").image
    from pydicom.data import get_testdata_file

    out["real film RG1"] = load_study(get_testdata_file("RG1_UNCR.dcm")).image
    return out


IMAGES = _images()


@pytest.mark.parametrize("name", list(IMAGES))
def test_anomaly_scores_and_deviation_map_equal_pytorch(models, name):
    from medsight.explain.anomaly_map import patch_deviation_map

    detector, _ = models
    image = IMAGES[name]
    fast, fast_acts = detector.score_with_activations(image)
    fast_map = patch_deviation_map(detector, image, render=False, precomputed=(fast, fast_acts))
    with _on_torch(detector):
        slow, slow_acts = detector.score_with_activations(image)
        slow_map = patch_deviation_map(detector, image, render=False, precomputed=(slow, slow_acts))
    assert (fast.runtime, slow.runtime) == (ONNX_RUNTIME, TORCH_RUNTIME)
    for key in ("fused_score", "recon_error", "kl_divergence", "vit_score"):
        assert getattr(fast, key) == pytest.approx(getattr(slow, key), abs=SCORE_TOL, rel=SCORE_TOL), key
    for key in ("recon", "kl", "vit"):
        assert fast.components[key] == pytest.approx(slow.components[key], abs=SCORE_TOL), key
    assert fast.is_anomalous == slow.is_anomalous
    grid_fast, grid_slow = (detector.patch_model.distances(a)[0] for a in (fast_acts, slow_acts))
    assert float((grid_fast - grid_slow).abs().max()) <= MAP_TOL * max(1.0, float(grid_slow.max()))
    assert float(np.abs(fast_map.heat - slow_map.heat).max()) <= MAP_TOL


@pytest.mark.parametrize("name", list(IMAGES))
def test_pathology_probabilities_and_maps_equal_pytorch(models, name):
    _, classifier = models
    image = IMAGES[name]
    fast, fast_acts = classifier.predict_with_activations(image)
    with _on_torch(classifier):
        slow, slow_acts = classifier.predict_with_activations(image)
    assert (fast.runtime, slow.runtime) == (ONNX_RUNTIME, TORCH_RUNTIME)
    for label in classifier.labels:  # both rounded to 5 decimals: one step of rounding at most
        assert fast.probabilities[label] == pytest.approx(slow.probabilities[label], abs=SCORE_TOL * 1.001)
    assert fast.positives == slow.positives
    for label in classifier.labels:
        heat_fast, details_fast = classifier.gradcam_heat(image, label, activations=fast_acts)
        heat_slow, details_slow = classifier.gradcam_heat(image, label, activations=slow_acts)
        assert float(np.abs(heat_fast - heat_slow).max()) <= MAP_TOL, label
        assert details_fast["probability"] == pytest.approx(details_slow["probability"], abs=SCORE_TOL * 1.001)


def test_batches_equal_pytorch_and_grad_cam_still_runs_in_pytorch(models):
    """The batch engine's `score_batch` (batches, no activations kept) and on-demand Grad-CAM."""
    detector, classifier = models
    images = list(IMAGES.values())[:4]
    fast = detector.score_batch(images, batch_size=3)
    with _on_torch(detector):
        slow = detector.score_batch(images, batch_size=3)
    assert [r.runtime for r in fast] == [ONNX_RUNTIME] * 4
    assert [r.fused_score for r in fast] == pytest.approx([r.fused_score for r in slow], abs=SCORE_TOL)
    assert [r.peak_deviation for r in fast] == pytest.approx([r.peak_deviation for r in slow], abs=2e-4)
    heatmap = classifier.gradcam(images[1], classifier.labels[0], render=False)  # backward pass, PyTorch
    assert heatmap.heat.shape == images[1].shape


def test_pipeline_records_the_runtime_and_gives_the_pytorch_result(models):
    from medsight.config import PROJECT_ROOT
    from medsight.ingest import load_study
    from medsight.pipeline import run_analysis

    detector, classifier = models
    study = load_study(PROJECT_ROOT / "models" / "samples" / "normal_pa.png")
    fast = run_analysis(study, detector=detector, classifier=classifier, maps="key")
    with _on_torch(detector, classifier):
        slow = run_analysis(study, detector=detector, classifier=classifier, maps="key")
    for result, runtime in ((fast, ONNX_RUNTIME), (slow, TORCH_RUNTIME)):
        assert result.stage("vision: anomaly detector").runtime == runtime
        assert result.stage("vision: pathology classifier").runtime == runtime
        assert result.to_dict()["stages"][2]["runtime"] == runtime  # what History stores
    assert fast.anomaly["fused_score"] == pytest.approx(slow.anomaly["fused_score"], abs=SCORE_TOL)
    assert set(fast.maps) == set(slow.maps)
    for key, heat in fast.objects["heatmaps"].items():
        assert float(np.abs(heat.heat - slow.objects["heatmaps"][key].heat).max()) <= MAP_TOL, key
    from medsight.analysis_summary import stage_rows

    assert stage_rows(fast.to_dict())[2]["Runtime"] == ONNX_RUNTIME


def test_second_load_reuses_the_cached_graph(models, cache, monkeypatch):
    detector, classifier = models
    files = sorted(cache.glob("*.onnx"))
    assert [f.name.split("-")[0] for f in files] == ["anomaly", "pathology"]
    assert not list(cache.glob("*.part"))
    stamps = {f: f.stat().st_mtime_ns for f in files}

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx_runtime, "export_onnx", no_export)
    again = OnnxForward.start(classifier._graph_spec(), cache, "cpu", background=False)
    assert again.ready and not again.exported and "cached graph reused" in again.reason
    assert {f: f.stat().st_mtime_ns for f in files} == stamps


def test_other_weights_get_their_own_file_and_the_old_one_goes(models, tmp_path):
    detector, classifier = models
    spec = classifier._graph_spec()
    first = OnnxForward.start(spec, tmp_path, "cpu", background=False)
    other_model = OnnxForward.start(detector._graph_spec(), tmp_path, "cpu", background=False)
    changed = type(spec)(**{**spec.__dict__, "constants": spec.constants + "|other calibration"})
    second = OnnxForward.start(changed, tmp_path, "cpu", background=False)
    assert first.ready and second.ready and first.path != second.path and second.exported
    assert not first.path.exists(), "the graph of the replaced weights is deleted"
    assert first.run(spec.example()) is not None  # a session already open keeps working
    assert other_model.path.exists(), "another model's graph is kept"


def test_export_failure_keeps_pytorch_and_says_why(models, tmp_path, monkeypatch):
    _, classifier = models

    def broken(*args, **kwargs):
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(onnx_runtime, "export_onnx", broken)
    forward = OnnxForward.start(classifier._graph_spec(), tmp_path, "cpu", background=False)
    assert forward.state == "torch" and forward.runtime == TORCH_RUNTIME
    assert "exporter exploded" in forward.reason and forward.run(torch.zeros(1, 1, 8, 8)) is None
    assert not list(tmp_path.glob("*")), "no partial file left behind"


def test_without_the_onnx_package_the_model_stays_on_pytorch(models, tmp_path, monkeypatch):
    _, classifier = models
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` fails, as when it is not installed
    forward = OnnxForward.start(classifier._graph_spec(), tmp_path, "cpu", background=False)
    assert forward.state == "torch" and "onnx" in forward.reason.lower()


def test_a_graph_that_disagrees_is_not_used_nor_kept(models, tmp_path, monkeypatch):
    _, classifier = models
    real_export = onnx_runtime.export_onnx

    class Shifted(torch.nn.Module):
        def __init__(self, graph):
            super().__init__()
            self.graph = graph

        def forward(self, x):
            logits, activations = self.graph(x)
            return logits + 0.01, activations

    monkeypatch.setattr(onnx_runtime, "export_onnx",
                        lambda graph, example, path, names: real_export(Shifted(graph), example, path, names))
    forward = OnnxForward.start(classifier._graph_spec(), tmp_path, "cpu", background=False)
    assert forward.state == "torch" and "differ from PyTorch" in forward.reason and "probabilities" in forward.reason
    assert not list(tmp_path.glob("*.onnx"))


def test_forced_pytorch_and_accelerators_never_export(models, tmp_path, monkeypatch):
    from medsight import device

    _, classifier = models
    monkeypatch.setattr(onnx_runtime, "export_onnx", lambda *a, **k: pytest.fail("exported"))
    monkeypatch.setenv("MEDSIGHT_RUNTIME", "torch")
    forced = OnnxForward.start(classifier._graph_spec(), tmp_path, "cpu")
    assert forced.state == "torch" and "MEDSIGHT_RUNTIME=torch" in forced.reason
    cpu = device.Platform("Linux, CPU only")
    assert device.placements(["pathology.classifier"], cpu)[0].framework == "PyTorch"
    monkeypatch.setenv("MEDSIGHT_RUNTIME", "auto")
    on_gpu = OnnxForward.start(classifier._graph_spec(), tmp_path, "cuda")
    assert on_gpu.state == "torch" and "CPU only" in on_gpu.reason
    assert device.placements(["pathology.classifier"], cpu)[0].framework.startswith("ONNX Runtime")
    assert device.placements(["pathology.classifier"], device.APPLE_SILICON_MAC)[0].framework == "PyTorch"
    assert not list(tmp_path.glob("*"))


def test_registry_prepares_in_the_background_into_the_user_cache(monkeypatch, medsight_home):
    """Loading returns at once on PyTorch; the session is prepared in the user's model cache, then used."""
    from medsight import registry, system_report
    from medsight.config import get_settings

    loaded = registry.load("pathology.classifier", device="cpu")
    forward = loaded.model.onnx
    assert forward is not None and forward.wait(120) and forward.ready, forward.reason
    assert forward.path.parent == onnx_runtime.cache_dir(get_settings()) == medsight_home / "models" / "cache" / "onnx"
    line = system_report.runtime_facts(loaded)
    assert line and line[0].startswith(f"Runtime: {ONNX_RUNTIME}")
    assert loaded.model.runtime == ONNX_RUNTIME


def test_runtime_lines_while_preparing_and_after_a_fallback():
    class Model:
        onnx = None

    model = Model()
    assert onnx_runtime.runtime_note(model) == f"Runtime: {TORCH_RUNTIME}"
    spec = onnx_runtime.GraphSpec("x", lambda: None, lambda: None, ("y",), lambda o: o, {})
    model.onnx = OnnxForward(spec, Path("."))
    assert "being prepared" in onnx_runtime.runtime_note(model)
    model.onnx.fall_back("export failed")
    assert onnx_runtime.runtime_note(model) == f"Runtime: {TORCH_RUNTIME} (ONNX Runtime not used: export failed)"


def test_archive_scoring_starts_on_the_runtime_it_ends_on(medsight_home):
    """The batch scorer waits for the sessions, so the whole archive is scored by ONNX Runtime."""
    from medsight import registry
    from medsight.batch.scoring import Scorer

    registry.clear_cache()
    try:
        scorer = Scorer(batch_size=4)
        assert [loaded.model.runtime for loaded in scorer.models.values()] == [ONNX_RUNTIME, ONNX_RUNTIME]
    finally:
        registry.clear_cache()


def test_by_default_only_the_pathology_network_runs_in_onnx_runtime(models, tmp_path, monkeypatch):
    """The defaults `make bench` decided: DenseNet-121 2.4x faster for ~30 MB; the detector barely faster for
    ~250 MB, so it stays in PyTorch unless MEDSIGHT_RUNTIME=onnx."""
    from medsight import device

    detector, classifier = models
    monkeypatch.delenv("MEDSIGHT_RUNTIME")
    assert device.runtime_preference() == "auto"
    assert device.uses_onnx_runtime("pathology.classifier") and not device.uses_onnx_runtime("anomaly.detector")
    monkeypatch.setattr(onnx_runtime, "export_onnx", lambda *a, **k: pytest.fail("exported"))
    kept = OnnxForward.start(detector._graph_spec(), tmp_path, "cpu")
    assert kept.state == "torch" and "MEDSIGHT_RUNTIME=onnx" in kept.reason and not list(tmp_path.glob("*"))
    cpu = device.Platform("Linux, CPU only")
    frameworks = {p.slot: p.framework for p in device.placements(["anomaly.detector", "pathology.classifier"], cpu)}
    assert frameworks == {"anomaly.detector": "PyTorch", "pathology.classifier": "ONNX Runtime (PyTorch for Grad-CAM)"}
    monkeypatch.setenv("MEDSIGHT_RUNTIME", "onnx")
    assert device.uses_onnx_runtime("anomaly.detector")
    assert device.placements(["anomaly.detector"], cpu)[0].framework.startswith("ONNX Runtime")
