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
