"""Per-position model of normal features (deviation map): fitting on a known distribution, storage and
extractor check, the display scale, and the shipped demo model on generated phantoms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsight.models.anomaly.checkpoint import CheckpointError, ExtractorMismatchError
from medsight.models.anomaly.patch import NORMAL_RANGE_HEAT, PatchDeviationModel

GRID = (6, 5)
CHANNELS = 24


def _normal_maps(n: int, seed: int) -> torch.Tensor:
    """Activation maps whose every cell is a correlated Gaussian with a position-dependent mean."""
    gen = torch.Generator().manual_seed(seed)
    mixing = torch.randn(CHANNELS, CHANNELS, generator=torch.Generator().manual_seed(99)) / CHANNELS**0.5
    position_mean = torch.linspace(0, 3, GRID[0] * GRID[1]).reshape(1, 1, *GRID)
    noise = torch.randn(n, GRID[0], GRID[1], CHANNELS, generator=gen) @ mixing
    return noise.permute(0, 3, 1, 2) + position_mean


@pytest.fixture(scope="module")
def fitted() -> PatchDeviationModel:
    model = PatchDeviationModel.fit(_normal_maps(400, 0), extractor_sha256="a" * 64, n_components=8, eps=1e-3)
    return model.calibrate(_normal_maps(100, 1))


def test_fit_shapes_and_meta(fitted):
    assert fitted.basis.shape == (CHANNELS, 8)
    assert fitted.mean.shape == (GRID[0] * GRID[1], 8)
    assert fitted.precision.shape == (GRID[0] * GRID[1], 8, 8)
    assert fitted.meta["n_images"] == 400 and fitted.meta["n_components"] == 8
    scale = fitted.scale
    assert scale.n_images == 100
    assert 0 < scale.patch_median < scale.patch_high <= scale.image_high
    # squared Mahalanobis distances of in-distribution cells follow ~chi²(8): median distance ≈ √7.34 ≈ 2.7
    assert 2.0 < scale.patch_median < 3.4


def test_outlier_cell_is_the_peak(fitted):
    maps = _normal_maps(4, 2)
    maps[1, :, 4, 3] += 3.0  # one cell of image 1 leaves the normal range
    dist = fitted.distances(maps)
    assert dist.shape == (4, *GRID)
    assert tuple(np.unravel_index(int(dist[1].argmax()), GRID)) == (4, 3)
    assert float(dist[1, 4, 3]) > fitted.scale.peak_threshold
    # the position matters: a normal value of another position is abnormal here
    moved = _normal_maps(1, 3)
    moved[0, :, 0, 0] = moved[0, :, -1, -1]
    assert float(fitted.distances(moved)[0, 0, 0]) > fitted.scale.image_high


def test_heat_is_dark_for_normal_cells_and_never_saturates(fitted):
    normal = fitted.distances(_normal_maps(1, 4))[0]
    heat = fitted.heat(normal, (60, 50))
    assert heat.shape == (60, 50) and heat.dtype == np.float32
    assert heat.min() >= 0 and heat.max() < 1
    assert (heat <= NORMAL_RANGE_HEAT).mean() > 0.8  # within the normal range the map stays dark
    raised = normal.clone()
    raised[2, 2] = 50.0
    heat_raised = fitted.heat(raised, (60, 50))
    peak = np.unravel_index(int(heat_raised.argmax()), heat_raised.shape)
    assert abs(peak[0] - 25) <= 6 and abs(peak[1] - 25) <= 6
    assert 0.5 < heat_raised.max() < 1.0


def test_save_load_roundtrip_and_extractor_check(fitted, tmp_path):
    path = fitted.save(tmp_path / "patch.pt")
    loaded = PatchDeviationModel.load(path, extractor_sha256="a" * 64)
    rounded = fitted.rounded()
    assert torch.equal(loaded.precision, rounded.precision) and torch.equal(loaded.basis, rounded.basis)
    assert loaded.scale == fitted.scale and loaded.grid == GRID
    with pytest.raises(ExtractorMismatchError, match="another VGG16 extractor"):
        PatchDeviationModel.load(path, extractor_sha256="b" * 64)
    (tmp_path / "other.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="not a readable patch deviation file"):
        PatchDeviationModel.load(tmp_path / "other.pt")
    torch.save({"format": "something-else"}, tmp_path / "dict.pt")
    with pytest.raises(CheckpointError, match="not a patch deviation file"):
        PatchDeviationModel.load(tmp_path / "dict.pt")


def test_errors_are_clear(fitted):
    with pytest.raises(ValueError, match="cannot fit"):
        PatchDeviationModel.fit(_normal_maps(5, 0), extractor_sha256="x", n_components=8)
    with pytest.raises(ValueError, match="do not match"):
        fitted.distances(torch.zeros(1, CHANNELS, 7, 7))
    uncalibrated = PatchDeviationModel.fit(_normal_maps(50, 0), extractor_sha256="x", n_components=4)
    with pytest.raises(ValueError, match="calibrate"):
        uncalibrated.heat(torch.zeros(GRID), (10, 10))


# ---- the shipped demo model --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_detector():
    from medsight import registry
    from medsight.models.anomaly import load_detector

    try:
        detector = load_detector(device="cpu")
    except registry.ModelUnavailable as exc:
        pytest.skip(f"no anomaly detector weights in this build: {exc}")
    if detector.patch_model is None:
        pytest.skip("no patch model for this detector's extractor")
    return detector


def test_shipped_patch_model_matches_the_demo_extractor(demo_detector):
    model = demo_detector.patch_model
    assert model.extractor_sha256 == demo_detector.extractor.sha256
    assert model.grid == (14, 14) and model.scale is not None
    assert demo_detector.provenance["patch_model"]["file"].endswith("anomaly_patch_demo.pt")
    notes = demo_detector.provenance["registry"]["notes"]
    assert "deviation map: anomaly_patch_demo.pt, fitted on 300 normal images" in notes


def test_deviation_map_on_phantoms_reuses_the_score_and_brightens_findings(demo_detector):
    from medsight.explain.anomaly_map import patch_deviation_map
    from medsight.synthetic import generate_phantom

    normal = generate_phantom(424_242, size=256, findings=())
    abnormal = generate_phantom(424_243, size=256, findings=("pneumothorax",))
    n_map = patch_deviation_map(demo_detector, normal.image, render=False)
    a_map = patch_deviation_map(demo_detector, abnormal.image)
    assert a_map.heat.shape == (256, 256) and a_map.panels is not None
    assert a_map.kind == "patch_deviation" and len(a_map.details["distance_grid"]) == 14
    # the score of the map's forward pass is the detector's score
    assert abs(a_map.score - demo_detector.score(abnormal.image).fused_score) < 1e-5
    assert a_map.details["peak_deviation"] > n_map.details["peak_deviation"]
    assert a_map.heat.mean() > n_map.heat.mean()


def test_detector_without_patch_model_says_how_to_get_one(demo_detector, monkeypatch):
    from medsight.explain import compute_map

    monkeypatch.setattr(demo_detector, "patch_model", None)
    with pytest.raises(ValueError, match="fit_patch_model"):
        compute_map("patch_deviation", np.zeros((64, 64), np.float32), detector=demo_detector)


@pytest.mark.slow
def test_deviation_map_localises_findings_on_phantoms(demo_detector):
    """Pointing game over 20 abnormal phantoms: well above the mask-area chance level."""
    from training.evaluate_maps import abnormal_phantoms, anomaly_map_functions, evaluate

    phantoms = abnormal_phantoms(20, seed=7000, size=512,
                                 findings=("consolidation", "effusion", "pneumothorax", "cardiomegaly"))
    maps = {"patch_deviation": anomaly_map_functions(demo_detector)["patch_deviation"]}
    summary = evaluate(maps, phantoms)["summary"]["patch_deviation"]
    assert summary["pointing_hit_rate"] > 3 * summary["pointing_chance"]
    assert summary["pointing_hit_rate"] > summary["pointing_region_chance"]


@pytest.mark.slow
def test_peak_deviation_separates_fresh_phantoms(demo_detector):
    """Image level: the peak deviation ranks unseen abnormal phantoms above normal ones (AUROC > 0.75)."""
    from sklearn.metrics import roc_auc_score

    from medsight.explain.anomaly_map import patch_deviation_map
    from medsight.synthetic import FINDINGS, generate_phantom

    phantoms = [generate_phantom(910_000 + i, size=256, findings=() if i % 2 == 0 else (FINDINGS[(i // 2) % 5],))
                for i in range(40)]
    peaks = [patch_deviation_map(demo_detector, p.image, render=False).details["peak_deviation"] for p in phantoms]
    assert roc_auc_score([0 if p.is_normal else 1 for p in phantoms], peaks) > 0.75


def test_fit_and_evaluate_on_a_few_phantoms(tmp_path):
    """The fitting CLI's core on a handful of small phantoms with the seeded extractor."""
    from medsight.models.anomaly import build_demo_extractor
    from medsight.models.anomaly.detector import AnomalyDetector
    from medsight.models.anomaly.torch_model import VAE, ViTAnomalyScorer
    from training.datasets import phantom_samples
    from training.fit_patch_model import fit_and_evaluate, write_card

    torch.manual_seed(0)
    detector = AnomalyDetector(build_demo_extractor(), VAE(), ViTAnomalyScorer(), provenance={"tier": "demo"})
    train = phantom_samples(16, seed=31, size=128)
    val = phantom_samples(12, seed=32, size=128)
    test = phantom_samples(6, seed=33, size=128)
    model, evaluation = fit_and_evaluate(detector, train, val, test, n_components=4, progress=False,
                                         meta={"data": "phantoms"})
    assert evaluation["n_train_normal"] == sum(s.is_normal for s in train)
    assert model.extractor_sha256 == detector.extractor.sha256 and model.scale.n_images == evaluation["n_val_normal"]
    assert 0.0 <= evaluation["test"]["auroc_peak_deviation"] <= 1.0
    path = model.save(tmp_path / "anomaly_patch.pt")
    card = write_card(path, model, detector, "python -m training.fit_patch_model")
    assert PatchDeviationModel.load(path, detector.extractor.sha256).scale == model.scale
    assert '"labels_used": "normal images only' in card.read_text()


def test_patch_model_of_another_extractor_is_not_attached(medsight_home):
    """A checkpoint on the seeded extractor must not pick up the shipped model fitted on the phantom extractor."""
    from medsight import registry
    from medsight.models.anomaly import Calibration, build_demo_extractor, load_detector, save_checkpoint
    from medsight.models.anomaly.checkpoint import build_networks

    torch.manual_seed(0)
    vae, vit = build_networks()
    save_checkpoint(medsight_home / "models" / "anomaly_demo.pt", vae, vit, Calibration.published(), 0.348,
                    build_demo_extractor(), meta={"purpose": "extractor check"})
    registry.clear_cache()
    try:
        detector = load_detector()
    finally:
        registry.clear_cache()
    assert detector.patch_model is None and "patch_model" not in detector.provenance
    assert "deviation map unavailable" in detector.provenance["registry"]["notes"]


def test_batched_statistics_fit_the_same_model_as_one_batch(monkeypatch):
    """Fitting batch by batch (as the CLI does for large data sets) gives the in-memory fit."""
    from medsight.models.anomaly import patch
    from training import fit_patch_model

    maps = _normal_maps(120, 5)
    monkeypatch.setattr(fit_patch_model, "BASIS_IMAGES", 40)  # basis from the first 40, then streamed
    monkeypatch.setattr(patch, "BASIS_IMAGES", 40)
    streamed = PatchDeviationModel.from_statistics(
        fit_patch_model.fit_statistics((maps[i:i + 16] for i in range(0, 120, 16)), n_components=6),
        extractor_sha256="a")
    assert streamed.meta["n_images"] == 120
    reference = PatchDeviationModel.fit(maps, extractor_sha256="a", n_components=6)  # basis from the first 40
    assert torch.allclose(streamed.basis, reference.basis, atol=1e-6)
    assert torch.allclose(streamed.distances(maps[:4]), reference.distances(maps[:4]), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="no normal training images"):
        fit_patch_model.fit_statistics(iter([]))


def test_unreadable_patch_model_file_leaves_the_detector_working(medsight_home):
    """A broken user file is skipped with a note; the shipped model behind it is used instead."""
    from medsight import registry
    from medsight.models.anomaly import load_detector

    (medsight_home / "models").mkdir(parents=True, exist_ok=True)
    (medsight_home / "models" / "anomaly_patch.pt").write_bytes(b"truncated download")
    registry.clear_cache()
    try:
        detector = load_detector()
    except registry.ModelUnavailable as exc:
        pytest.skip(f"no anomaly detector weights in this build: {exc}")
    finally:
        registry.clear_cache()
    assert "anomaly_patch.pt is not a readable patch deviation file" in detector.provenance["patch_model_errors"][0]
    assert detector.patch_model is not None
    assert detector.provenance["patch_model"]["file"].endswith("anomaly_patch_demo.pt")


def test_heat_of_a_full_size_film_is_smoothed_at_working_size_and_upsampled(fitted):
    from medsight.models.anomaly.patch import HEAT_WORKING_SIDE

    raised = fitted.distances(_normal_maps(1, 5))[0].clone()
    raised[3, 1] = 50.0
    big = fitted.heat(raised, (2 * HEAT_WORKING_SIDE + 100, 2 * HEAT_WORKING_SIDE))
    assert big.shape == (2 * HEAT_WORKING_SIDE + 100, 2 * HEAT_WORKING_SIDE) and big.dtype == np.float32
    small = fitted.heat(raised, (HEAT_WORKING_SIDE + 50, HEAT_WORKING_SIDE))
    assert 0.5 < big.max() < 1.0 and abs(float(big.max()) - float(small.max())) < 0.01
    peak = np.array(np.unravel_index(int(big.argmax()), big.shape)) / np.array(big.shape)
    small_peak = np.array(np.unravel_index(int(small.argmax()), small.shape)) / np.array(small.shape)
    assert np.abs(peak - small_peak).max() < 0.01
