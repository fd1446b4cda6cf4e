"""Anomaly-detector training, dataset readers, evaluation and baseline on small phantom sets."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from medsight.models.anomaly import build_demo_extractor, build_detector, load_checkpoint, save_detector
from medsight.synthetic import generate_dataset, generate_phantom, write_png
from training import anomaly_features, datasets
from training.anomaly_features import extract_features
from training.baseline_autoencoder import run_baseline
from training.datasets import DatasetError, load_image, phantom_samples
from training.evaluate_anomaly import evaluate
from training.train_anomaly import TrainConfig, fit


@pytest.fixture(scope="module")
def extractor():
    return build_demo_extractor()


@pytest.fixture(scope="module")
def tiny_sets(extractor, tmp_path_factory):
    """24 small phantoms: 16 for training, 8 for validation (half normal each)."""
    cache = tmp_path_factory.mktemp("cache")
    train = extract_features(phantom_samples(16, seed=101, size=96), extractor, cache, progress=False)
    val = extract_features(phantom_samples(8, seed=102, size=96), extractor, cache, progress=False)
    return train, val, cache


def test_phantom_plan_matches_generate_dataset():
    samples = phantom_samples(6, seed=4, size=48)
    phantoms = generate_dataset(6, seed=4, size=48)
    assert [(s.phantom_seed, s.phantom_findings) for s in samples] == [(p.seed, p.labels) for p in phantoms]
    assert [s.is_normal for s in samples] == [p.is_normal for p in phantoms]
    assert np.array_equal(load_image(samples[0]), phantoms[0].image)


def _write_classes(root, classes, per_class=2, size=64):
    for k, cls in enumerate(classes):
        folder = root / cls
        for i in range(per_class):
            findings = () if "ormal" in cls else ("nodule",)
            write_png(generate_phantom(1000 * k + i, size=size, findings=findings), folder / f"img{i}.png")


def test_covid_radiography_layout(tmp_path):
    _write_classes(tmp_path, ["Normal/images", "COVID/images", "Lung_Opacity", "Viral Pneumonia"])
    samples = datasets.read_covid_radiography(tmp_path)
    assert len(samples) == 8
    assert {s.label for s in samples} == {"Normal", "COVID", "Lung_Opacity", "Viral Pneumonia"}
    assert sum(s.is_normal for s in samples) == 2 and all(s.is_normal == (s.label == "Normal") for s in samples)
    image = load_image(samples[0])
    assert image.shape == (64, 64) and image.dtype == np.float32 and 0 <= image.min() <= image.max() <= 1


def test_class_folders_and_csv_manifest(tmp_path):
    _write_classes(tmp_path, ["normal", "effusion"])
    samples = datasets.read_class_folders(tmp_path)
    assert sorted((s.label, s.is_normal) for s in samples) == [("effusion", False)] * 2 + [("normal", True)] * 2
    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerow(["normal/img0.png", "Normal"])
        writer.writerow(["effusion/img1.png", "effusion"])
    rows = datasets.read_csv_manifest(manifest)
    assert [(r.label, r.is_normal) for r in rows] == [("Normal", True), ("effusion", False)]
    assert load_image(rows[1]).shape == (64, 64)
    with open(manifest, "a", newline="") as handle:
        csv.writer(handle).writerow(["missing.png", "normal"])
    with pytest.raises(DatasetError, match="line 4: image not found"):
        datasets.read_csv_manifest(manifest)


def test_dicom_folder_reader(tmp_path):
    from medsight.synthetic.dicom import write_dicom

    write_dicom(generate_phantom(5, size=64, findings=()), tmp_path / "normal" / "a.dcm")
    write_dicom(generate_phantom(6, size=64, findings=("effusion",)), tmp_path / "abnormal" / "b")  # no suffix
    samples = datasets.read_dicom_folder(tmp_path)
    assert sorted((s.label, s.is_normal) for s in samples) == [("abnormal", False), ("normal", True)]
    image = load_image(samples[0])
    assert image.shape == (64, 64) and 0 <= image.min() <= image.max() <= 1


def test_readers_reject_bad_folders(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        datasets.read_class_folders(tmp_path / "nope")
    _write_classes(tmp_path, ["COVID"])
    with pytest.raises(DatasetError, match="No normal images"):
        datasets.read_covid_radiography(tmp_path)
    with pytest.raises(DatasetError, match="Unknown dataset spec"):
        datasets.read_dataset("zip:/x")


def test_feature_cache_is_reused(tiny_sets, extractor, monkeypatch):
    train, _, cache = tiny_sets
    assert train.features.shape == (16, 512) and train.thumbnails.shape == (16, 128, 128)

    def refuse(sample):
        raise AssertionError("cache miss: image re-rendered")

    monkeypatch.setattr(anomaly_features, "load_image", refuse)
    again = extract_features(phantom_samples(16, seed=101, size=96), extractor, cache, progress=False)
    assert np.array_equal(again.features, train.features)


def test_training_smoke_run_resume_and_evaluation(tiny_sets, extractor, tmp_path):
    train, val, _ = tiny_sets
    cfg = TrainConfig(vae_epochs=4, vit_epochs=3, batch_size=8, accum_steps=2, patience=10)
    detector, summary = fit(train, val, extractor, cfg, work_dir=tmp_path, progress=False)
    assert len(summary["vae_history"]) == 4 and len(summary["vit_history"]) == 3
    assert detector.calibration.n_images == int(train.is_normal.sum()) == 8
    assert detector.feature_norm is not None  # demo extractor: standardised features
    assert "normal training images" in detector.calibration.source
    assert 0.0 <= detector.threshold <= 1.0
    assert summary["threshold_method"] == "Youden J on validation"
    # Resuming a finished run restores the same weights without training again.
    resumed, _ = fit(train, val, extractor, cfg, work_dir=tmp_path, resume=True, progress=False)
    for a, b in zip(resumed.vae.state_dict().values(), detector.vae.state_dict().values()):
        assert torch.equal(a, b)
    # The saved checkpoint reproduces the detector's scores.
    path = save_detector(tmp_path / "smoke.pt", detector, meta={"trained_on": "smoke"})
    restored = build_detector(load_checkpoint(path), extractor)
    image = load_image(val.samples[0])
    assert restored.score(image).fused_score == pytest.approx(detector.score(image).fused_score, abs=1e-6)
    report = evaluate(restored, val, tmp_path / "eval", n_boot=50, projection="pca")
    saved = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert set(saved["ablation"]) == {"recon only", "KL only", "ViT only", "recon+KL", "full fusion"}
    assert all(0.0 <= v["ci95"][0] <= v["auroc"] <= v["ci95"][1] <= 1.0 for v in saved["ablation"].values())
    for name in ("roc_curve.png", "score_distribution.png", "confusion_matrix.png"):
        assert (tmp_path / "eval" / name).stat().st_size > 1000
    assert (tmp_path / "eval" / saved["plots"]["latent"]).is_file() and saved["plots"]["latent_method"] == "PCA"
    at = report["at_threshold"]
    assert at["tp"] + at["fn"] + at["tn"] + at["fp"] == len(val.samples)


def test_rca_drops_the_worst_reconstructed_normals(tiny_sets, extractor):
    train, val, _ = tiny_sets
    cfg = TrainConfig(vae_epochs=2, vit_epochs=1, batch_size=8, rca_percentile=75)
    detector, summary = fit(train, val, extractor, cfg, progress=False)
    assert summary["rca"]["kept"] == 6 and summary["rca"]["dropped"] == 2
    assert detector.calibration.n_images == 6


def test_baseline_autoencoder_reports_auroc_and_time(tiny_sets):
    train, val, _ = tiny_sets
    report = run_baseline(train.thumbnails, train.is_normal, val.thumbnails, val.is_normal, val.thumbnails,
                          val.targets.astype(int), timing_samples=val.samples[:2], epochs=2, n_boot=50,
                          progress=False)
    assert 0.0 <= report["auroc"] <= 1.0 and report["ci95"][0] <= report["auroc"] <= report["ci95"][1]
    assert report["inference_ms_per_image"] > 0


def test_phantom_extractor_training_smoke_and_primed_features(extractor, tmp_path):
    """Block-5 fine-tuning on cached trunk activations of a few phantoms: the saved fp16 extractor reloads
    with the same hash, only block 5 changes, and features computed from the cached activations equal a
    full pass of the reloaded extractor (what `prime-cache` relies on)."""
    from medsight.models.anomaly import EXTRACTOR_PHANTOM, load_phantom_extractor
    from medsight.models.anomaly.torch_model import PHANTOM_TRAINABLE_FROM, save_phantom_extractor
    from training import train_vgg_extractor as tve

    samples = phantom_samples(6, seed=103, size=96)
    trunk = tve.frozen_trunk(extractor)
    data = tve.cache_trunk(samples, tmp_path / "trunk", trunk, batch_size=3, progress=False)
    assert data["acts"].shape == (6, 512, 14, 14)
    assert data["targets"].sum() == sum(len(s.phantom_findings) for s in samples)
    assert np.array_equal(tve.cache_trunk(samples, tmp_path / "trunk", trunk, progress=False)["acts"], data["acts"])
    model, history = tve.train_block5(data, data, epochs=1, batch_size=3, lr=1e-3, weight_decay=0.0, seed=0,
                                      work_dir=tmp_path, resume=False, progress=False)
    assert len(history) == 1 and np.isfinite(history[0]["train_loss"])
    saved = save_phantom_extractor(tmp_path / "ext.pt", model.block5, model.head, {"purpose": "test"})
    loaded = load_phantom_extractor(tmp_path / "ext.pt")
    assert loaded.kind == EXTRACTOR_PHANTOM and loaded.sha256 == saved.sha256 != extractor.sha256
    tail = loaded.features[PHANTOM_TRAINABLE_FROM:]
    with torch.inference_mode():
        primed = torch.flatten(loaded.avgpool(tail(torch.from_numpy(data["acts"][:2]))), 1)
    direct = extract_features(samples[:2], loaded, None, progress=False).features
    np.testing.assert_allclose(primed.numpy(), direct, rtol=1e-4, atol=1e-6)
    with pytest.raises(SystemExit, match="also occur"):
        tve.check_disjoint(samples, phantom_samples(6, seed=103, size=96))


@pytest.mark.parametrize("module", ["train_anomaly", "anomaly_features", "evaluate_anomaly", "baseline_autoencoder",
                                    "train_vgg_extractor", "fit_patch_model", "train_pathology"])
def test_cli_help(module, capsys):
    import importlib

    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(f"training.{module}").main(["--help"])
    assert exit_info.value.code == 0
    assert "usage: python -m training." in capsys.readouterr().out


def test_training_modules_import_each_other_at_the_top_and_without_cycles():
    """Imports between training modules sit at module level (none hidden inside functions) and form no cycle."""
    import ast
    from pathlib import Path

    import training

    folder = Path(training.__file__).parent
    graph: dict[str, set[str]] = {}
    for path in sorted(folder.glob("*.py")):
        tree = ast.parse(path.read_text())
        top = set(tree.body)
        edges = set()
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            targets = {n.split(".")[1] for n in names if n.startswith("training.") and
                       (folder / f"{n.split('.')[1]}.py").is_file()}
            if targets:
                assert node in top, f"{path.name} imports {targets} inside a function"
                edges |= targets
        graph[path.stem] = edges

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph.get(start, ()))

    assert not [m for m in graph if reaches(m, m, set())]
