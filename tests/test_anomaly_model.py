"""Anomaly detector networks, scoring, calibration, checkpoints and registry slot."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from medsight import registry
from medsight.config import PROJECT_ROOT, Settings
from medsight.models import anomaly
from medsight.models.anomaly import (
    AnomalyDetector,
    Calibration,
    CheckpointError,
    ExtractorMismatchError,
    build_demo_extractor,
    build_detector,
    build_imagenet_extractor,
    fuse_scores,
    load_checkpoint,
    save_checkpoint,
    xray_to_vgg_input,
)
from medsight.models.anomaly.checkpoint import build_networks
from medsight.models.anomaly.torch_model import count_parameters
from medsight.synthetic import generate_phantom


@pytest.fixture(scope="module")
def extractor():
    return build_demo_extractor()


@pytest.fixture(scope="module")
def networks():
    torch.manual_seed(0)
    return build_networks()


@pytest.fixture(scope="module")
def detector(extractor, networks):
    vae, vit = networks
    calibration = Calibration(recon_mean=0.05, recon_std=0.02, kl_mean=0.1, kl_std=0.05, source="test", n_images=3)
    return AnomalyDetector(extractor, vae, vit, calibration, threshold=0.5)


@pytest.fixture(scope="module")
def phantom_images():
    return [generate_phantom(seed, size=256, findings=f).image for seed, f in
            ((11, ()), (12, ("effusion",)), (13, ("nodule",)))]


def test_parameter_counts_match_published_architecture(networks, extractor):
    vae, vit = networks
    assert count_parameters(vae) == 1_318_656
    assert count_parameters(vae.encoder.net) == 560_512
    assert count_parameters(vae.encoder.fc_mu) + count_parameters(vae.encoder.fc_var) == 131_584
    assert count_parameters(vae.decoder) == 626_560
    assert count_parameters(vit) == 1_209_729
    assert count_parameters(vit.blocks[0]) == 197_888  # bias-free qkv, as published
    assert count_parameters(vit.head) == 16_641
    assert count_parameters(vae, trainable_only=True) + count_parameters(vit, trainable_only=True) == 2_528_385
    assert count_parameters(extractor, trainable_only=True) == 0  # frozen VGG16
    assert count_parameters(extractor) == 14_714_688  # torchvision vgg16().features


def test_extractor_is_torchvision_vgg16_features(extractor):
    from torchvision.models import vgg16

    reference = vgg16(weights=None).features
    assert [type(m) for m in extractor.features] == [type(m) for m in reference]
    assert list(extractor.features.state_dict()) == list(reference.state_dict())
    assert not extractor.training
    extractor.train()
    assert not extractor.training  # cannot be switched to training mode


def test_preprocess_named_transform_shape_and_normalisation():
    x = xray_to_vgg_input(np.full((300, 200), 0.5, dtype=np.float32))
    assert x.shape == (1, 3, 224, 224) and x.dtype == torch.float32
    expected = [(0.5 - m) / s for m, s in zip(anomaly.IMAGENET_MEAN, anomaly.IMAGENET_STD)]
    assert torch.allclose(x[0, :, 100, 100], torch.tensor(expected), atol=1e-5)
    # Lanczos, not nearest/bilinear: a step edge rings slightly before clipping, so values near it are
    # between the two levels and the output stays within the normalised [0, 1] range.
    step = np.zeros((448, 448), np.float32)
    step[:, 224:] = 1.0
    grey = xray_to_vgg_input(step)[0, 0] * anomaly.IMAGENET_STD[0] + anomaly.IMAGENET_MEAN[0]
    assert grey.min() >= -1e-6 and grey.max() <= 1 + 1e-6
    assert 0.0 < float(grey[0, 111]) < 1.0


@pytest.mark.parametrize("bad, message", [
    (np.zeros((0, 5), np.float32), "small"),
    (np.full((10, 10), np.nan, np.float32), "missing or infinite"),
    (np.full((10, 10), 255.0, np.float32), "[0, 1]"),
    (np.zeros((2, 3, 4, 5), np.float32), "2-D"),
])
def test_preprocess_rejects_bad_images_with_clear_message(bad, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        xray_to_vgg_input(bad)


def test_scores_are_deterministic(detector, phantom_images):
    first = detector.score(phantom_images[1])
    second = detector.score(phantom_images[1])
    assert first.fused_score == second.fused_score
    assert first.recon_error == second.recon_error and first.kl_divergence == second.kl_divergence
    batch = detector.score_batch(phantom_images)
    assert batch[1].fused_score == pytest.approx(first.fused_score, abs=1e-6)
    assert len({round(r.fused_score, 6) for r in batch}) == 3  # different images, different scores


def test_fused_formula_on_hand_computed_values():
    calibration = Calibration(recon_mean=0.01, recon_std=0.002, kl_mean=0.5, kl_std=0.1)
    recon = torch.tensor([0.01, 0.014, 0.004])
    kl = torch.tensor([0.5, 0.7, 0.4])
    vit = torch.tensor([0.0, 0.9, 0.25])
    fused, parts = fuse_scores(recon, kl, vit, calibration)
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    expected = [
        0.4 * 0.5 + 0.2 * 0.5 + 0.0,                      # everything at the normal mean
        0.4 * sig(2.0) + 0.2 * sig(2.0) + 0.4 * 0.9,      # two standard deviations above
        0.4 * sig(-3.0) + 0.2 * sig(-1.0) + 0.4 * 0.25,
    ]
    assert fused.tolist() == pytest.approx(expected, abs=1e-6)
    assert (parts["recon"] + parts["kl"] + parts["vit"]).tolist() == pytest.approx(expected, abs=1e-6)
    assert parts["vit"].tolist() == pytest.approx([0.0, 0.36, 0.1], abs=1e-6)


def test_result_fields_follow_the_formula(detector, phantom_images):
    result = detector.score(phantom_images[2])
    cal = detector.calibration
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    expected = (0.4 * sig((result.recon_error - cal.recon_mean) / cal.recon_std)
                + 0.2 * sig((result.kl_divergence - cal.kl_mean) / cal.kl_std) + 0.4 * result.vit_score)
    assert result.fused_score == pytest.approx(expected, abs=1e-5)
    assert sum(result.components.values()) == pytest.approx(result.fused_score, abs=1e-6)
    assert result.margin == pytest.approx(result.fused_score - 0.5)
    assert result.is_anomalous == (result.fused_score >= 0.5)
    data = result.to_dict()
    for key in ("fused_score", "recon_error", "kl_divergence", "vit_score", "components", "threshold",
                "is_anomalous", "margin", "timings", "tier", "extractor", "provenance"):
        assert key in data
    assert data["tier"] == "demo" and data["extractor"] == "demo-seeded"
    assert set(data["timings"]) == {"preprocess", "extractor", "vae", "vit", "total"}
    assert data["provenance"]["extractor_sha256"] == detector.extractor.sha256


def test_published_defaults_used_without_calibration(extractor, networks):
    vae, vit = networks
    plain = AnomalyDetector(extractor, vae, vit)
    assert plain.threshold == pytest.approx(0.348)
    assert (plain.calibration.recon_mean, plain.calibration.recon_std) == (0.01386, 0.00390)
    assert (plain.calibration.kl_mean, plain.calibration.kl_std) == (0.6930, 0.0804)
    assert plain.calibration.source == "published"


def test_differentiable_end_to_end(detector, phantom_images):
    x = detector.preprocess(phantom_images[1]).requires_grad_(True)
    score = detector.fused_from_tensor(x)
    assert score.shape == (1,)
    score.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in detector.vae.parameters())  # weights stay frozen
    # Grad-CAM path: gradient with respect to the last conv block, input without grad.
    score, activations = detector.fused_from_tensor(detector.preprocess(phantom_images[1]), return_activations=True)
    assert activations.shape == (1, 512, 14, 14)
    (grad,) = torch.autograd.grad(score.sum(), activations)
    assert grad.abs().sum() > 0
    assert score.item() == pytest.approx(detector.score(phantom_images[1]).fused_score, abs=1e-5)


def test_cls_attention_and_latent(detector, phantom_images):
    z = torch.from_numpy(detector.latent(phantom_images[0]))[None]
    assert z.shape == (1, 256)
    attention = detector.vit.cls_attention(z)
    assert attention.shape == (1, 8)
    assert (attention >= 0).all() and float(attention.sum()) <= 1.0 + 1e-6
    assert detector.cls_attention(phantom_images[0]).shape == (8,)


def test_seeded_extractor_is_bit_identical_across_processes(extractor):
    code = "from medsight.models.anomaly.torch_model import build_demo_extractor; print(build_demo_extractor().sha256)"
    hashes = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       cwd=PROJECT_ROOT).stdout.strip()
        for _ in range(2)
    }
    assert hashes == {extractor.sha256}
    assert build_demo_extractor(seed=2).sha256 != extractor.sha256


def test_checkpoint_round_trip_keeps_weights_and_calibration(tmp_path, detector, phantom_images):
    path = save_checkpoint(tmp_path / "ck.pt", detector.vae, detector.vit, detector.calibration, 0.5,
                           detector.extractor, meta={"trained_on": "unit test"})
    data = load_checkpoint(path)
    assert data.calibration == detector.calibration
    assert data.threshold == 0.5 and data.extractor_sha256 == detector.extractor.sha256
    assert data.meta["trained_on"] == "unit test" and "created" in data.meta
    restored = build_detector(data, detector.extractor)
    assert restored.score(phantom_images[0]).fused_score == detector.score(phantom_images[0]).fused_score
    for a, b in zip(restored.vit.state_dict().values(), detector.vit.state_dict().values()):
        assert torch.equal(a, b)


def test_checkpoint_keeps_feature_standardisation(tmp_path, extractor, networks, phantom_images):
    from medsight.models.anomaly import FeatureStandardizer

    vae, vit = networks
    norm = FeatureStandardizer(torch.full((512,), 0.09), torch.full((512,), 0.006))
    detector = AnomalyDetector(extractor, vae, vit, Calibration.published(), 0.4, feature_norm=norm)
    path = save_checkpoint(tmp_path / "n.pt", vae, vit, Calibration.published(), 0.4, extractor, feature_norm=norm)
    restored = build_detector(load_checkpoint(path), extractor)
    assert torch.equal(restored.feature_norm.mean, norm.mean) and torch.equal(restored.feature_norm.std, norm.std)
    assert restored.score(phantom_images[0]).fused_score == detector.score(phantom_images[0]).fused_score
    plain = AnomalyDetector(extractor, vae, vit, Calibration.published(), 0.4)
    assert plain.score(phantom_images[0]).recon_error != detector.score(phantom_images[0]).recon_error
    assert sum(p.numel() for p in norm.parameters()) == 0  # buffers only: parameter counts unchanged


def test_extractor_mismatch_is_refused(tmp_path, detector):
    path = save_checkpoint(tmp_path / "ck.pt", detector.vae, detector.vit, detector.calibration, 0.5, detector.extractor)
    other = build_demo_extractor(seed=5)
    with pytest.raises(ExtractorMismatchError, match="different VGG16 extractor"):
        build_detector(load_checkpoint(path), other)
    imagenet_like = build_imagenet_extractor({f"features.{k}": v for k, v in other.features.state_dict().items()})
    with pytest.raises(ExtractorMismatchError, match="meaningless"):
        build_detector(load_checkpoint(path), imagenet_like)


def _published_format_file(path: Path, vae, vit, with_stats: bool = True) -> Path:
    """A checkpoint laid out as the published reference code saves it."""
    raw = {
        "vae_state": vae.state_dict(),
        "vit_state": vit.state_dict(),
        "config": {"img_size": 224, "vgg_feat_dim": 512, "latent_dim": 256, "vae_hidden": [512, 384, 256],
                   "kl_weight": 1e-3, "vit_patch_dim": 32, "vit_depth": 6, "vit_heads": 8, "vit_mlp_dim": 512,
                   "vit_dropout": 0.1, "normal_class": "Normal"},
    }
    if with_stats:
        raw.update(threshold=0.41, recon_mean=torch.tensor(0.02), recon_std=torch.tensor(0.004),
                   kl_mean=torch.tensor(0.7), kl_std=torch.tensor(0.09))
    torch.save(raw, path)
    return path


def test_published_checkpoint_importer(tmp_path, networks, extractor, phantom_images):
    vae, vit = networks
    path = _published_format_file(tmp_path / "pulmonary_anomaly_detector.pth", vae, vit)
    data = load_checkpoint(path)
    assert data.format == "published" and data.extractor_kind == "imagenet"
    assert data.threshold == pytest.approx(0.41)
    assert data.calibration.recon_mean == pytest.approx(0.02) and data.calibration.kl_std == pytest.approx(0.09)
    # It is refused with the demo extractor, accepted with an ImageNet-kind one.
    with pytest.raises(ExtractorMismatchError):
        build_detector(data, extractor)
    imagenet_like = build_imagenet_extractor({f"features.{k}": v for k, v in extractor.features.state_dict().items()})
    imported = build_detector(data, imagenet_like)
    reference = AnomalyDetector(extractor, vae, vit, data.calibration, 0.41)
    assert imported.score(phantom_images[1]).fused_score == pytest.approx(reference.score(phantom_images[1]).fused_score)
    # Without stored statistics the published defaults apply.
    bare = load_checkpoint(_published_format_file(tmp_path / "bare.pth", vae, vit, with_stats=False))
    assert bare.calibration == Calibration.published() and bare.threshold == pytest.approx(0.348)


def test_importer_rejects_wrong_weights(tmp_path, networks):
    vae, vit = networks
    state = dict(vit.state_dict())
    state["head.0.weight"] = torch.zeros(3, 3)
    torch.save({"vae_state": vae.state_dict(), "vit_state": state, "config": {}}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "bad.pth")
    torch.save({"weights": 1}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="missing vae_state"):
        load_checkpoint(tmp_path / "other.pth")


def test_registry_slot_sources_in_order():
    slot = registry.get_slot("anomaly.detector")
    assert [s.kind.value for s in slot.sources] == ["file", "cache", "download", "builtin"]
    assert [s.tier.value for s in slot.sources] == ["real", "real", "real", "demo"]
    assert "BOTH" in slot.how_to_get_real


def test_registry_real_tier_from_file(tmp_path, networks, extractor, phantom_images, monkeypatch):
    """A checkpoint with ImageNet-kind VGG16 weights loads as USER unless both files are pinned published files."""
    vae, vit = networks
    models = tmp_path / "models"
    models.mkdir()
    # Stand-in weights (not ImageNet) in torchvision's file layout, to exercise the loading path.
    stand_in = {f"features.{k}": v for k, v in build_demo_extractor(seed=9).features.state_dict().items()}
    torch.save(stand_in, models / "vgg16-397923af.pth")
    vgg = build_imagenet_extractor(stand_in)
    save_checkpoint(models / "medsight_anomaly.pt", vae, vit, Calibration.published(), 0.4, vgg)
    loaded = registry.load("anomaly.detector", settings=Settings(home=tmp_path), device="cpu", reload=True)
    assert loaded.provenance.tier == "user" and loaded.provenance.source == "file"
    assert loaded.model.tier == "user" and loaded.model.extractor.kind == "imagenet"
    assert loaded.provenance.domain == "unknown" and loaded.model.score(phantom_images[0]).tier == "user"

    from medsight import weights

    pinned = [weights.PublishedFile("anomaly.detector", name, (), registry.sha256_of(models / name),
                                    (models / name).stat().st_size, "test fixture")
              for name in ("vgg16-397923af.pth", "medsight_anomaly.pt")]
    monkeypatch.setattr(weights, "PUBLISHED", tuple(pinned[:1]))  # VGG16 alone is not enough
    assert registry.reload_slot("anomaly.detector", Settings(home=tmp_path), "cpu").provenance.tier == "user"
    monkeypatch.setattr(weights, "PUBLISHED", tuple(pinned))
    loaded = registry.reload_slot("anomaly.detector", Settings(home=tmp_path), "cpu")
    assert loaded.provenance.tier == "real" and loaded.provenance.hash_status == "published"
    assert loaded.model.tier == "real" and loaded.model.score(phantom_images[0]).tier == "real"


def test_checkpoint_without_imagenet_weights_falls_back_and_says_why(tmp_path, networks, extractor):
    if not (PROJECT_ROOT / "models" / "anomaly_demo.pt").is_file():
        pytest.skip("demo weights not built")
    vae, vit = networks
    (tmp_path / "models").mkdir()
    vgg = build_imagenet_extractor({f"features.{k}": v for k, v in extractor.features.state_dict().items()})
    save_checkpoint(tmp_path / "models" / "medsight_anomaly.pt", vae, vit, Calibration.published(), 0.4, vgg)
    loaded = registry.load("anomaly.detector", settings=Settings(home=tmp_path), device="cpu", reload=True)
    if anomaly.hub_cache_vgg16_path().is_file():
        pytest.skip("ImageNet VGG16 weights present in the torch hub cache")
    assert loaded.provenance.tier == "demo"
    assert any("vgg16-397923af.pth" in line for line in loaded.provenance.tried)


def test_shipped_demo_weights_load_via_registry(tmp_path, phantom_images):
    """The shipped demo weights load through the registry as tier "demo", with a card that matches them."""
    import json

    checkpoint = PROJECT_ROOT / "models" / "anomaly_demo.pt"
    if not checkpoint.is_file():
        pytest.fail("models/anomaly_demo.pt is missing; build it with `python -m training.train_anomaly --demo`")
    detector = anomaly.load_detector(Settings(home=tmp_path), device="cpu")
    assert detector.tier == "demo" and detector.extractor.kind == "demo-phantom"
    assert "fine-tuned on synthetic phantoms, not ImageNet" in detector.provenance["extractor_label"]
    assert detector.provenance["registry"]["tier"] == "demo"
    assert "not ImageNet" in detector.provenance["registry"]["notes"]
    assert detector.feature_norm is not None and detector.calibration.source.endswith("normal training images")
    card = json.loads((PROJECT_ROOT / "models" / "anomaly_demo.card.json").read_text())
    assert card["checkpoint_sha256"] == registry.sha256_of(checkpoint)
    assert card["extractor"]["sha256"] == detector.extractor.sha256
    assert card["threshold"]["value"] == pytest.approx(detector.threshold)
    assert "not for clinical use" in card["disclaimer"]
    result = detector.score(phantom_images[1])
    assert result.tier == "demo" and result.threshold == detector.threshold


def test_shipped_phantom_extractor_matches_the_demo_checkpoint(tmp_path):
    """The shipped extractor file loads with the hash the demo checkpoint records; block 5 alone differs
    from the seeded VGG16, its fp32 weights are exactly the stored fp16 values, and a tampered file or the
    seeded extractor is refused."""
    models = PROJECT_ROOT / "models"
    data = load_checkpoint(models / "anomaly_demo.pt")
    assert data.extractor_kind == anomaly.EXTRACTOR_PHANTOM
    extractor = anomaly.load_phantom_extractor(models / anomaly.PHANTOM_EXTRACTOR_FILE)
    assert extractor.sha256 == data.extractor_sha256
    assert build_detector(data, extractor).tier == "demo"
    seeded = build_demo_extractor()
    trained = anomaly.torch_model.PHANTOM_TRAINABLE_FROM
    ours, base = extractor.features.state_dict(), seeded.features.state_dict()
    frozen = [k for k in ours if int(k.split(".")[0]) < trained]
    assert frozen and all(torch.equal(ours[k], base[k]) for k in frozen)
    tuned = [k for k in ours if int(k.split(".")[0]) >= trained]
    assert tuned and all(not torch.equal(ours[k], base[k]) for k in tuned)
    assert all(torch.equal(ours[k].half().float(), ours[k]) for k in tuned)  # fp16 file == fp32 model
    with pytest.raises(ExtractorMismatchError):
        build_detector(data, seeded)
    raw = torch.load(models / anomaly.PHANTOM_EXTRACTOR_FILE, map_location="cpu", weights_only=True)
    key = sorted(raw["block5_state_fp16"])[0]
    raw["block5_state_fp16"][key] = raw["block5_state_fp16"][key] + 1
    torch.save(raw, tmp_path / "tampered.pt")
    with pytest.raises(ValueError, match="hash"):
        anomaly.load_phantom_extractor(tmp_path / "tampered.pt")


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="the published fused score of the demo weights reaches AUROC 0.69 on these 20 "
                   "fresh single-finding phantoms (0.657 on 100; held-out test split with multi-finding phantoms "
                   "0.796, 95% CI 0.731-0.852). The peak deviation from normal of the same pass reaches 0.91 on "
                   "the 100 (tests/test_anomaly_patch.py); see models/anomaly_demo.card.json")
def test_shipped_demo_weights_separate_fresh_phantoms(tmp_path):
    """Target: the shipped demo separates unseen phantoms with AUROC > 0.7 (not met; strict xfail)."""
    from sklearn.metrics import roc_auc_score

    from medsight.synthetic import FINDINGS
    from training.datasets import phantom_plan

    detector = anomaly.load_detector(Settings(home=tmp_path), device="cpu")
    seeds = [900_000 + i for i in range(20)]
    used = {seed for k in (1, 2, 3) for seed, _ in phantom_plan(1000, seed=k)}  # the demo's train/val/test
    used |= {seed for k in (1000, 1001) for seed, _ in phantom_plan(500, seed=k)}  # the extractor's phantoms
    assert not used.intersection(seeds)
    phantoms = [generate_phantom(seed, size=512, findings=() if i % 2 == 0 else (FINDINGS[(i // 2) % 5],))
                for i, seed in enumerate(seeds)]
    results = detector.score_batch([p.image for p in phantoms])
    labels = [0 if p.is_normal else 1 for p in phantoms]
    assert roc_auc_score(labels, [r.fused_score for r in results]) > 0.7
