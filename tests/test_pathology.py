"""Pathology classifier: registry sources, demo weights on fresh phantoms, Grad-CAM, thresholds, determinism."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from medsight import registry
from medsight.config import SHIPPED_MODELS_DIR, Settings
from medsight.models import pathology
from medsight.models.pathology import (
    DEMO_LABELS,
    PHANTOM_FINDING_TO_LABEL,
    SLOT_NAME,
    XRV_LABELS,
    PathologyResult,
    canonical_label,
    load_demo_checkpoint,
)
from medsight.models.pathology.torch_model import XRayPreprocess, op_norm
from medsight.synthetic import FINDINGS, generate_dataset, generate_phantom

DEMO_WEIGHTS = SHIPPED_MODELS_DIR / "pathology_demo.pt"
DEMO_CARD = SHIPPED_MODELS_DIR / "pathology_demo.card.json"
TEST_DATASET_SEED = 424242  # never used by training/train_pathology.py


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No user weights and no torchxrayvision cache from the machine running the tests."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MEDSIGHT_HOME", str(tmp_path / "medsight"))
    registry.clear_cache()
    yield
    registry.clear_cache()  # never leave a structure-only model in the process cache


@pytest.fixture(scope="module")
def demo():
    if not DEMO_WEIGHTS.is_file():
        pytest.fail("models/pathology_demo.pt is missing; rebuild it with python -m training.train_pathology")
    return load_demo_checkpoint(DEMO_WEIGHTS)


def _settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "medsight")


# -- labels --------------------------------------------------------------------------------------------------

def test_label_vocabulary_is_torchxrayvisions():
    import torchxrayvision as xrv

    assert tuple(xrv.models.model_urls["densenet121-res224-all"]["labels"]) == XRV_LABELS
    assert set(DEMO_LABELS) <= set(XRV_LABELS)
    assert [PHANTOM_FINDING_TO_LABEL[f] for f in FINDINGS] == list(DEMO_LABELS)
    assert canonical_label("pleural effusion") == "Effusion"
    assert canonical_label("  Enlarged heart ") == "Cardiomegaly"
    assert canonical_label("pleural_thickening") == "Pleural_Thickening"
    with pytest.raises(ValueError, match="Unknown pathology label"):
        canonical_label("broken toe")


# -- demo tier -----------------------------------------------------------------------------------------------

def test_demo_weights_load_through_registry(tmp_path):
    loaded = registry.load(SLOT_NAME, _settings(tmp_path), device="cpu", reload=True)
    prov = loaded.provenance
    assert prov.tier == "demo" and prov.source == "builtin"
    assert Path(prov.path) == DEMO_WEIGHTS
    assert any("downloads not allowed" in t for t in prov.tried)
    card = json.loads(DEMO_CARD.read_text())
    assert prov.sha256 == card["weights_sha256"]
    classifier = loaded.model
    assert classifier.labels == list(DEMO_LABELS) and classifier.tier == "demo"
    result = classifier.predict(generate_phantom(5, size=256).image)
    assert result.tier == "demo" and result.provenance["tier"] == "demo" and result.provenance["sha256"] == card["weights_sha256"]
    assert set(result.probabilities) == set(DEMO_LABELS)


def test_demo_checkpoint_is_a_reduced_densenet_with_its_card():
    ckpt = torch.load(DEMO_WEIGHTS, map_location="cpu", weights_only=True)
    card = json.loads(DEMO_CARD.read_text())
    assert "NOT DenseNet-121" in card["architecture"]["description"]
    assert card["architecture"]["growth_rate"] == ckpt["arch"]["growth_rate"]
    assert DEMO_WEIGHTS.stat().st_size < 10 * 2**20
    for label in DEMO_LABELS:  # every trained label clearly beats chance on the held-out test split
        assert card["metrics"]["test_auroc"][label] > 0.75


@pytest.mark.slow
def test_demo_beats_chance_on_fresh_phantoms(demo):
    from sklearn.metrics import roc_auc_score

    phantoms = generate_dataset(100, seed=TEST_DATASET_SEED, size=256)
    training_seeds = {int(np.random.SeedSequence([s, i]).generate_state(1)[0])
                      for s, n in ((1101, 1800), (2202, 300)) for i in range(n)}
    assert not training_seeds & {p.seed for p in phantoms}
    probs = demo.raw_probabilities([p.image for p in phantoms])
    for finding, label in PHANTOM_FINDING_TO_LABEL.items():
        y = np.array([finding in p.labels for p in phantoms])
        assert y.sum() >= 8
        auc = roc_auc_score(y, probs[:, demo.labels.index(label)])
        assert auc > 0.7, f"{label}: AUROC {auc:.3f}"


@pytest.mark.slow
def test_gradcam_points_into_the_lesion_more_often_than_chance(demo):
    hits, chance = [], []
    for i in range(20):
        finding = FINDINGS[i % len(FINDINGS)]
        phantom = generate_phantom(TEST_DATASET_SEED + i, size=256, findings=(finding,))
        heat, _ = demo.gradcam_heat(phantom.image, PHANTOM_FINDING_TO_LABEL[finding])
        mask = phantom.masks[finding]
        peak = np.unravel_index(int(np.argmax(heat)), heat.shape)
        hits.append(bool(mask[peak]) and heat.max() > 0)
        chance.append(mask.mean())
    assert np.mean(hits) > 2 * np.mean(chance), (np.mean(hits), np.mean(chance))


def test_gradcam_map_shape_range_and_no_parameter_grads(demo):
    phantom = generate_phantom(TEST_DATASET_SEED + 99, size=256, findings=("effusion",))
    image = phantom.image[:, 16:-16]  # non-square: centre crop must map back to full size
    result = demo.gradcam(image, "pleural effusion")
    assert result.kind == "pathology_gradcam" and result.label == "Effusion"
    assert result.heat.shape == image.shape
    assert np.isfinite(result.heat).all() and result.heat.min() >= 0.0 and result.heat.max() <= 1.0
    assert result.heat.max() > 0.5
    assert result.panels.ndim == 3 and result.panels.shape[2] == 3
    assert all(p.grad is None for p in demo.net.parameters())
    assert not demo.net.training
    json.dumps(result.to_dict())
    # The explained logit is the one predict() reports.
    assert math.isclose(result.score, demo.predict(image).probabilities["Effusion"], abs_tol=1e-4)
    with pytest.raises(ValueError, match="does not predict"):
        demo.gradcam(image, "Hernia")


def test_thresholds_round_trip(demo, tmp_path):
    ckpt = torch.load(DEMO_WEIGHTS, map_location="cpu", weights_only=True)
    card = json.loads(DEMO_CARD.read_text())
    np.testing.assert_allclose(demo.operating_thresholds, ckpt["thresholds"])
    for label, value in card["thresholds"]["values"].items():
        assert math.isclose(value, ckpt["thresholds"][ckpt["labels"].index(label)], abs_tol=1e-5)
    # Calibration puts each operating threshold exactly on 0.5 and keeps the order of probabilities.
    np.testing.assert_allclose(demo.calibrate(demo.operating_thresholds), 0.5, atol=1e-6)
    result = demo.predict(generate_phantom(11, size=256, findings=("cardiomegaly", "nodule")).image)
    for label in demo.labels:
        raw_positive = result.raw_probabilities[label] >= result.operating_thresholds[label]
        assert (label in result.positives) == raw_positive == (result.probabilities[label] >= result.thresholds[label])
    data = json.loads(json.dumps(result.to_dict()))
    assert PathologyResult(**{k: v for k, v in data.items() if k != "probability_scale"}).to_dict() == data
    assert "Cardiomegaly" in result.positives


def test_predictions_are_deterministic(demo):
    image = generate_phantom(TEST_DATASET_SEED + 7, size=256).image
    first, second = demo.predict(image), demo.predict(image)
    assert first.probabilities == second.probabilities
    again = load_demo_checkpoint(DEMO_WEIGHTS).predict(image)
    assert again.raw_probabilities == first.raw_probabilities


@pytest.mark.parametrize("bad, message", [
    (np.zeros((64, 64, 3)), "2-D greyscale"),
    (np.full((64, 64), np.nan), "NaN"),
    (np.full((64, 64), 300.0), r"\[0, 1\]"),
    (np.zeros((8, 8)), "too small"),
])
def test_bad_images_get_clear_messages(demo, bad, message):
    with pytest.raises(ValueError, match=message):
        demo.predict(bad)


def test_op_norm_matches_torchxrayvision():
    import torchxrayvision as xrv

    thresholds = np.array([0.07, 0.5, 0.9, np.nan], dtype=np.float32)
    raw = np.random.default_rng(0).random((6, 4)).astype(np.float32)
    ours = op_norm(raw, thresholds)
    theirs = xrv.models.op_norm(torch.from_numpy(raw), torch.from_numpy(thresholds)).numpy()
    np.testing.assert_allclose(ours[:, :3], theirs[:, :3], atol=1e-6)
    np.testing.assert_allclose(ours[:, 3], raw[:, 3])  # no threshold: raw probability kept


def test_preprocessing_is_torchxrayvisions():
    import torchxrayvision as xrv

    image = generate_phantom(3, size=96).image[:, 8:-8]
    ours = XRayPreprocess(64).array(image)
    ref = xrv.datasets.XRayResizer(64)(xrv.datasets.XRayCenterCrop()(xrv.datasets.normalize(image * 255, 255)[None]))
    np.testing.assert_allclose(ours, ref, atol=1e-3)
    assert ours.min() >= -1024 and ours.max() <= 1024
    assert XRayPreprocess.crop_box(image.shape).size == min(image.shape)


# -- real tier: loader and provenance logic only -----------------------------------------------------------

def _structure_only_xrv_file(path: Path) -> Path:
    """Save a randomly initialised torchxrayvision DenseNet the way torchxrayvision's files are saved.

    STRUCTURE-ONLY: it exercises where the loader looks and how it loads; its outputs are meaningless and
    are never shown or asserted as results.
    """
    import torchxrayvision as xrv

    torch.manual_seed(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(xrv.models.DenseNet(weights=None), path)  # torchxrayvision's release files are pickled modules
    return path


def test_real_tier_loader_finds_torchxrayvision_cache(tmp_path):
    """Structure-only model: checks the CACHE path and provenance, not predictions."""
    cache_file = pathology.xrv_cache_dir() / pathology.xrv_weights_filename()
    assert str(cache_file).startswith(str(tmp_path / "home" / ".torchxrayvision" / "models_data"))
    _structure_only_xrv_file(cache_file)
    loaded = registry.load(SLOT_NAME, _settings(tmp_path), device="cpu", reload=True)
    # random weights under the release name are not the published file: USER, never REAL
    assert loaded.provenance.tier == "user" and loaded.provenance.source == "cache"
    assert loaded.provenance.hash_status == "unknown" and loaded.provenance.domain == "unknown"
    assert Path(loaded.provenance.path) == cache_file
    classifier = loaded.model
    assert classifier.labels == list(XRV_LABELS) and classifier.input_size == 224
    import torchxrayvision as xrv

    np.testing.assert_allclose(classifier.operating_thresholds, xrv.models.model_urls["densenet121-res224-all"]["op_threshs"])
    result = classifier.predict(generate_phantom(1, size=128).image)  # shapes and threshold logic only
    assert len(result.probabilities) == 18 and all(v == 0.5 for v in result.thresholds.values())
    assert result.tier == "user"
    heat = classifier.gradcam_heat(np.random.default_rng(0).random((100, 120), dtype=np.float32), "Effusion")[0]
    assert heat.shape == (100, 120) and not heat[:, :10].any()  # cropped-away margins carry no heat


def test_real_tier_file_in_models_folder_wins_and_broken_files_fall_through(tmp_path):
    """Structure-only model for the FILE source; a corrupt cache file falls through to the next source."""
    settings = _settings(tmp_path)
    user_file = _structure_only_xrv_file(settings.models_dir / "densenet121-res224-all.pt")
    loaded = registry.load(SLOT_NAME, settings, device="cpu", reload=True)
    assert loaded.provenance.tier == "user" and loaded.provenance.source == "file"
    assert Path(loaded.provenance.path) == user_file

    user_file.write_bytes(b"not a checkpoint")
    cache_file = pathology.xrv_cache_dir() / pathology.xrv_weights_filename()
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    cache_file.write_bytes(b"truncated")
    registry.clear_cache()
    loaded = registry.load(SLOT_NAME, settings, device="cpu", reload=True)
    assert loaded.provenance.tier == "demo"
    assert sum("failed" in t for t in loaded.provenance.tried) == 2


def test_maps_from_the_classifiers_own_pass_equal_gradcam(demo):
    """The layer feeds an average pool and a linear head: Grad-CAM is CAM, so no backward pass is needed."""
    image = generate_phantom(TEST_DATASET_SEED + 98, size=300, findings=("effusion",)).image[:, 20:-20]
    predicted, activations = demo.predict_with_activations(image)
    assert predicted.probabilities == demo.predict(image).probabilities
    for label in ("Effusion", "Nodule"):
        reference, details = demo.gradcam_heat(image, label)
        heat, fast = demo.gradcam_heat(image, label, activations=activations)
        assert heat.shape == image.shape
        np.testing.assert_allclose(heat, reference, atol=1e-4)
        assert fast["logit"] == pytest.approx(details["logit"], abs=1e-4)
        assert fast["probability"] == pytest.approx(details["probability"], abs=1e-5)
    result = demo.gradcam(image, "Effusion", render=False, activations=activations)
    assert result.kind == "pathology_gradcam" and result.panels is None


@pytest.mark.parametrize("shape, size", [((300, 260), 64), ((700, 900), 224), ((90, 100), 160), ((64, 64), 64)])
def test_fast_resize_matches_torchxrayvisions(shape, size):
    import torchxrayvision as xrv

    from medsight.models.pathology.torch_model import resize_like_xrv

    image = generate_phantom(5, size=max(shape)).image[:shape[0], :shape[1]]
    scaled = xrv.datasets.normalize(image * 255, 255)[None]
    np.testing.assert_allclose(resize_like_xrv(scaled, size), xrv.datasets.XRayResizer(size)(scaled), atol=2e-3)
