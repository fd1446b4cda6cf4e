"""Orchestrator: stage isolation, overall status, serialisation.

The stage logic is exercised with small stand-in models whose outputs are the structured dicts the real
models return; end-to-end runs with the shipped demo models live in tests/test_pipeline_models.py.
"""

import json
from dataclasses import dataclass

import numpy as np
import pytest

from medsight import pipeline, registry


@dataclass
class _Study:
    image: np.ndarray

    def to_dict(self):
        return {"study_id": "s1", "modality": "CR"}


class _Dict:
    def __init__(self, data):
        self.data = data

    def to_dict(self):
        return self.data


class _Detector:
    def score(self, image):
        return _Dict({"fused_score": 0.5, "threshold": 0.348, "is_anomalous": True, "tier": "demo"})


class _Classifier:
    def predict(self, image):
        return _Dict({"probabilities": {"effusion": 0.8}, "thresholds": {"effusion": 0.5}, "positives": ["effusion"], "tier": "demo"})


class _Broken:
    def predict(self, image):
        raise RuntimeError("weights corrupted")


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    return rng.random((128, 128), dtype=np.float32)


def _statuses(result):
    return {s.name: s.status for s in result.stages}


def test_failed_stage_is_recorded_and_rest_runs(image):
    result = pipeline.run_analysis(_Study(image), detector=_Detector(), classifier=_Broken(), maps="none")
    statuses = _statuses(result)
    assert statuses["vision: anomaly detector"] == "ok"
    assert statuses["vision: pathology classifier"] == "failed"
    assert "weights corrupted" in result.stage("vision: pathology classifier").message
    assert statuses["report assembly"] == "ok"
    assert result.status == pipeline.STATUS_PARTIAL
    assert result.anomaly["fused_score"] == 0.5 and result.pathology is None


def test_invalid_image_fails_validation_and_analysis(image):
    result = pipeline.run_analysis(_Study(np.zeros((128, 128), np.float32)), detector=_Detector(), classifier=_Classifier())
    assert result.stage("validate input").status == "failed"
    assert "blank" in result.stage("validate input").message
    assert result.status == pipeline.STATUS_FAILED


def test_unavailable_model_is_skipped_not_failed(image, monkeypatch):
    def unavailable(name, *a, **k):
        raise registry.ModelUnavailable(f"{name}: no source could provide a model.")

    monkeypatch.setattr(pipeline.registry, "load", unavailable)
    result = pipeline.run_analysis(_Study(image), classifier=_Classifier(), maps="none")
    assert result.stage("vision: anomaly detector").status == "skipped"
    assert result.status == pipeline.STATUS_PARTIAL
    assert result.pathology["positives"] == ["effusion"]


def test_progress_called_for_every_stage_and_result_serialises(image):
    seen = []
    result = pipeline.run_analysis(
        _Study(image), detector=_Detector(), classifier=_Classifier(), maps="none",
        progress=lambda name, i, n: seen.append((name, i, n)),
    )
    assert [s[1] for s in seen] == list(range(1, len(result.stages) + 1))
    assert {s[2] for s in seen} == {len(result.stages)}, "the progress total must match the stage count"
    assert all(s.seconds >= 0 for s in result.stages)
    data = json.loads(json.dumps(result.to_dict()))
    assert "objects" not in data and data["study"]["study_id"] == "s1"
    assert any("Anomaly score 0.500" in h for h in data["summary"]["headline"])


def test_no_text_skips_nlp(image):
    result = pipeline.run_analysis(_Study(image), detector=_Detector(), classifier=_Classifier(), maps="none")
    assert result.stage("clinical NLP").status == "skipped"
    assert "no clinical text" in result.stage("clinical NLP").message


# ----------------------------------------------------------------- one VGG16 pass for score and spatial map

class _MapFails(_Detector):
    """Offers parts-based results, but has no network the spatial map could run."""

    def result_from_parts(self, *args, **kwargs):
        raise AssertionError("must not be called when the map failed")


def test_failed_spatial_map_falls_back_to_plain_score(image):
    result = pipeline.run_analysis(_Study(image), detector=_MapFails(), classifier=_Classifier(), maps="key")
    assert result.stage("vision: anomaly detector").status == "ok"
    assert result.anomaly["fused_score"] == 0.5
    assert result.stage("vision: heatmaps").status == "failed", "the map failure is reported by the maps stage"
    assert "spatial_anomaly" not in result.maps


@pytest.fixture(scope="module")
def demo_models(tmp_path_factory):
    from medsight.config import Settings
    from medsight.models.anomaly import load_detector
    from medsight.models.pathology import load_classifier

    settings = Settings(home=tmp_path_factory.mktemp("home"))
    return load_detector(settings, device="cpu"), load_classifier(settings, device="cpu")


def _count_vgg16_forwards(detector):
    """Counts VGG16 passes at the layer the maps explain, which every path (pooled or with activations) runs."""
    calls = []
    handle = detector.target_layer.register_forward_hook(lambda *args: calls.append(1))
    return calls, handle


def _analyse_counting_vgg16(detector, classifier, sample):
    """(study, complete key-maps analysis of a shipped sample, VGG16 passes counted during it)."""
    from medsight.config import PROJECT_ROOT
    from medsight.ingest import load_study

    study = load_study(PROJECT_ROOT / "models" / "samples" / sample)
    calls, handle = _count_vgg16_forwards(detector)
    try:
        result = pipeline.run_analysis(study, detector=detector, classifier=classifier, maps="key")
    finally:
        handle.remove()
    assert result.status == pipeline.STATUS_COMPLETE, [(s.name, s.message) for s in result.stages]
    return study, result, calls


@pytest.mark.parametrize("sample", ["effusion_left_pa.dcm", "normal_pa.png"])
def test_anomaly_score_and_deviation_map_share_one_vgg16_pass(demo_models, sample):
    detector, classifier = demo_models
    if detector.patch_model is None:
        pytest.skip("the shipped detector has no model of normal features")
    study, result, calls = _analyse_counting_vgg16(detector, classifier, sample)
    assert len(calls) == 1, "score and deviation map must come from a single VGG16 forward pass"
    reference = detector.score(study.image)
    anomaly = result.anomaly
    for key in ("fused_score", "recon_error", "kl_divergence", "vit_score", "peak_deviation"):
        assert anomaly[key] == pytest.approx(getattr(reference, key), abs=1e-5), key
    assert anomaly["deviation_unusual"] == reference.deviation_unusual
    assert anomaly["deviation_threshold"] == pytest.approx(detector.patch_model.scale.peak_threshold, abs=1e-3)
    heatmap = result.objects["heatmaps"]["patch_deviation"]
    assert heatmap.heat.shape == study.image.shape and heatmap.score == anomaly["fused_score"]
    assert heatmap.details["peak_deviation"] == pytest.approx(anomaly["peak_deviation"], abs=1e-3)
    assert "spatial_anomaly" not in result.maps, "Grad-CAM is computed on demand, not among the key maps"
    assert "one VGG16 pass" in result.stage("vision: anomaly detector").message
    assert "anomaly stage" in result.stage("vision: heatmaps").message
    headline = [h for h in result.summary["headline"] if h.startswith("Peak deviation from normal")]
    assert len(headline) == 1 and ("above" if anomaly["deviation_unusual"] else "within") in headline[0]
    if sample.startswith("effusion"):
        assert anomaly["deviation_unusual"] and any("Peak deviation" in r for r in result.fusion["risk"]["reasons"])


def test_pathology_maps_come_from_the_classifiers_own_pass(demo_models, monkeypatch):
    from medsight.config import PROJECT_ROOT
    from medsight.explain import gradcam
    from medsight.ingest import load_study

    detector, classifier = demo_models

    def no_backward_pass(*args, **kwargs):
        raise AssertionError("a key pathology map ran its own forward and backward pass")

    monkeypatch.setattr(gradcam, "grad_cam", no_backward_pass)
    study = load_study(PROJECT_ROOT / "models" / "samples" / "effusion_left_pa.dcm")
    result = pipeline.run_analysis(study, detector=detector, classifier=classifier, maps="key")
    keys = [k for k in result.maps if k.startswith("pathology:")]
    assert keys and result.status == pipeline.STATUS_COMPLETE
    assert "classifier's pass" in result.stage("vision: heatmaps").message
    heatmap = result.objects["heatmaps"][keys[0]]
    assert heatmap.heat.shape == study.image.shape
    assert heatmap.score == pytest.approx(result.pathology["probabilities"][heatmap.label], abs=1e-4)


@pytest.mark.parametrize("sample", ["effusion_left_pa.dcm", "normal_pa.png"])
def test_anomaly_score_and_spatial_map_share_one_vgg16_pass(demo_models, sample, monkeypatch):
    """Without a model of normal features the key anomaly map is the Grad-CAM map, from the score's own pass."""
    detector, classifier = demo_models
    monkeypatch.setattr(detector, "patch_model", None)
    study, result, calls = _analyse_counting_vgg16(detector, classifier, sample)
    assert len(calls) == 1, "score and spatial anomaly map must come from a single VGG16 forward pass"

    reference = detector.score(study.image)
    anomaly = result.anomaly
    for key in ("fused_score", "recon_error", "kl_divergence", "vit_score"):
        assert anomaly[key] == pytest.approx(getattr(reference, key), abs=1e-6), key
    for key in ("recon", "kl", "vit"):
        assert anomaly["components"][key] == pytest.approx(reference.components[key], abs=1e-6), key
    assert anomaly["is_anomalous"] == reference.is_anomalous and anomaly["threshold"] == reference.threshold
    assert anomaly["margin"] == pytest.approx(reference.margin, abs=1e-6)
    assert (anomaly["tier"], anomaly["extractor"], anomaly["calibration_source"]) == (
        reference.tier, reference.extractor, reference.calibration_source)
    assert anomaly["provenance"] == reference.provenance
    assert anomaly["timings"]["total"] > 0

    heatmap = result.objects["heatmaps"]["spatial_anomaly"]
    assert heatmap.heat.shape == study.image.shape and heatmap.score == anomaly["fused_score"]
    assert result.maps["spatial_anomaly"]["score"] == anomaly["fused_score"]
    assert "one VGG16 pass" in result.stage("vision: anomaly detector").message
    assert "anomaly stage" in result.stage("vision: heatmaps").message
    assert result.fusion is not None


def test_without_maps_the_plain_score_is_used(demo_models):
    from medsight.config import PROJECT_ROOT
    from medsight.ingest import load_study

    detector, classifier = demo_models
    study = load_study(PROJECT_ROOT / "models" / "samples" / "normal_pa.png")
    calls, handle = _count_vgg16_forwards(detector)
    try:
        result = pipeline.run_analysis(study, detector=detector, classifier=classifier, maps="none")
    finally:
        handle.remove()
    assert len(calls) == 1 and not result.maps and "heatmaps" not in result.objects
    assert result.anomaly["fused_score"] == pytest.approx(detector.score(study.image).fused_score, abs=1e-6)
    assert set(result.anomaly["timings"]) >= {"extractor", "vae", "vit", "total"}
    assert result.stage("vision: anomaly detector").message == ""


def test_record_leaves_out_the_live_objects_and_copies_the_rest(demo_models):
    import dataclasses

    detector, classifier = demo_models
    _, result, _ = _analyse_counting_vgg16(detector, classifier, "normal_pa.png")
    assert result.objects["heatmaps"]  # live maps exist, and must not reach the record
    data = result.to_dict()
    expected = {f.name: dataclasses.asdict(result)[f.name] for f in dataclasses.fields(result) if f.name != "objects"}
    assert data == expected and "objects" not in data
    data["anomaly"]["fused_score"] = -1.0  # the record is a copy: editing it leaves the result alone
    assert result.anomaly["fused_score"] != -1.0
    json.dumps(data)
