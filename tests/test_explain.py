"""Explanation maps: colour LUT, overlay, panels, Grad-CAM on a toy model with a known answer,
localisation metrics on hand-made masks, and the two anomaly-detector maps on generated phantoms."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from medsight.explain import localisation as loc
from medsight.explain.gradcam import grad_cam
from medsight.explain.render import (
    LUT,
    LUT_ANCHORS,
    HeatmapResult,
    apply_colormap,
    clahe,
    make_result,
    overlay,
    overlay_alpha,
    three_panels,
    to_png_bytes,
)

REC709 = np.array([0.2126, 0.7152, 0.0722])


def _gaussian(shape, centre, sigma):
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * sigma**2)).astype(np.float32)


# ---------------------------------------------------------------- render


def test_lut_endpoints_and_anchors():
    assert LUT.shape == (256, 3) and LUT.dtype == np.uint8
    assert LUT[0].tolist() == [0, 0, 0]  # black
    assert LUT[255].tolist() == [255, 255, 0]  # yellow
    for position, colour in LUT_ANCHORS:
        assert np.abs(LUT[round(position * 255)].astype(int) - colour).max() <= 2
    # blue stays off: the scale never passes through cold colours
    assert LUT[:, 2].max() == 0


def test_lut_luminance_is_monotone():
    luminance = LUT.astype(float) @ REC709
    assert np.all(np.diff(luminance) >= 0)
    assert luminance[-1] > 200 and luminance[0] == 0


def test_apply_colormap_maps_values_through_lut():
    heat = np.array([[0.0, 1.0], [0.5, 2.0]], np.float32)  # 2.0 is clipped to 1
    rgb = apply_colormap(heat)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[0, 1].tolist() == [255, 255, 0]
    assert rgb[1, 1].tolist() == [255, 255, 0]
    assert rgb[1, 0].tolist() == LUT[128].tolist()


def test_clahe_range_and_contrast():
    rng = np.random.default_rng(0)
    image = (0.45 + 0.1 * rng.random((128, 128))).astype(np.float32)  # low-contrast image
    out = clahe(image)
    assert out.shape == image.shape and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert out.std() > image.std()  # contrast is enhanced
    flat = np.full((32, 32), 0.3, np.float32)
    assert np.allclose(clahe(flat), 0.3)


def test_overlay_alpha_is_zero_below_p30_and_rises():
    heat = np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10)
    alpha = overlay_alpha(heat, opacity=0.65)
    p30 = np.percentile(heat, 30)
    assert np.all(alpha[heat <= p30] == 0)
    assert alpha.max() == pytest.approx(0.65, abs=1e-6)
    assert np.all(np.diff(alpha.ravel()) >= 0)  # monotone in heat
    # exact formula at one point
    h = heat[7, 5]
    assert alpha[7, 5] == pytest.approx(((h - p30) / (1 - p30)) ** 1.3 * 0.65, rel=1e-5)


def test_overlay_leaves_low_heat_pixels_as_clahe_radiograph():
    rng = np.random.default_rng(1)
    image = rng.random((64, 64)).astype(np.float32)
    heat = np.zeros((64, 64), np.float32)
    heat[40:50, 40:50] = 1.0
    out = overlay(image, heat)
    base = np.rint(clahe(image) * 255).astype(np.uint8)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert np.array_equal(out[:20, :20, 0], base[:20, :20])  # untouched where the map is low
    # where the map is high, the colour is pulled towards yellow (red and green up, blue down)
    assert out[45, 45, 2] < out[45, 45, 0]


def test_overlay_resizes_heat_to_image():
    image = np.random.default_rng(2).random((120, 90)).astype(np.float32)
    heat = _gaussian((12, 9), (3, 6), 1.5)
    assert overlay(image, heat).shape == (120, 90, 3)


def test_three_panels_shape_and_png_roundtrip():
    image = np.random.default_rng(3).random((200, 160)).astype(np.float32)
    heat = _gaussian((200, 160), (60, 100), 15)
    panels = three_panels(image, heat, "Title", "subtitle", "a caption", score_text="score 0.50")
    assert panels.ndim == 3 and panels.shape[2] == 3 and panels.dtype == np.uint8
    assert panels.shape[1] > 2.5 * panels.shape[0] * 160 / 200 * 0.8  # three panels side by side
    # dark background (legible on the dark UI)
    assert panels[:5, :5].mean() < 40
    png = to_png_bytes(panels)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image
    import io

    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), panels)


def test_to_png_bytes_rejects_bad_shapes():
    with pytest.raises(ValueError):
        to_png_bytes(np.zeros((4, 4, 5), np.uint8))


def test_heatmap_result_ranges_shapes_and_dict():
    image = np.random.default_rng(4).random((96, 128)).astype(np.float32)
    heat = _gaussian((12, 16), (3, 12), 2.0)
    result = make_result("spatial_anomaly", image, heat, "Spatial anomaly map", "caption", score=0.42,
                         score_text="score 0.42", details={"threshold": 0.348})
    assert isinstance(result, HeatmapResult)
    assert result.heat.shape == image.shape and result.heat.dtype == np.float32
    assert 0.0 <= result.heat.min() and result.heat.max() <= 1.0
    assert result.panels.dtype == np.uint8 and result.panels.ndim == 3
    data = result.to_dict()
    json.dumps(data)  # serialisable, no arrays
    assert data["heat_shape"] == [96, 128] and data["png_bytes"] == len(result.png()) > 0
    assert data["score"] == pytest.approx(0.42)
    panels = result.panel_images()
    assert set(panels) == {"original", "heatmap", "overlay"}
    assert all(p.shape == (96, 128, 3) for p in panels.values())
    faded = result.with_opacity(0.2)
    assert faded.opacity == 0.2 and faded.panels.shape == result.panels.shape
    with pytest.raises(ValueError):
        make_result("not-a-kind", image, heat, "t", "c")


def test_preview_is_the_overlay_at_list_size_and_each_drawing_is_encoded_once():
    import io

    from PIL import Image

    image = np.random.default_rng(5).random((1500, 1200)).astype(np.float32) * 0.4 + 0.3
    heat = _gaussian((60, 48), (15, 36), 4.0)  # hot spot in the upper right
    result = make_result("spatial_anomaly", image, heat, "Spatial anomaly map", "caption", render=False)
    preview = result.preview_jpeg()
    assert result.preview_jpeg() is preview and result.panels is None  # drawn once, no figure needed
    picture = np.asarray(Image.open(io.BytesIO(preview)).convert("RGB")).astype(int)
    assert picture.shape == (640, 512, 3)  # long side 640, aspect kept
    # Coloured at the map's peak, the grey radiograph where the map is cold.
    hot, cold = picture[160, 384], picture[560, 64]
    assert hot.max() - hot.min() > 60 and cold.max() - cold.min() < 12
    assert max(Image.open(io.BytesIO(result.preview_jpeg(200))).size) == 200
    png = result.png()
    assert result.png() is png and png.startswith(b"\x89PNG")
    assert result.with_opacity(0.2).png() != png  # a new drawing is encoded anew


# ---------------------------------------------------------------- Grad-CAM on a toy model with a known answer


class _ToyNet(nn.Module):
    """Two fixed detectors over a mid-grey image: channel 0 fires on bright spots, channel 1 on dark spots.

    The score is the global mean of ONE channel (global pooling, as in the anomaly detector), so the
    answer is known: explaining the "bright" score must point at the bright blob and ignore the dark
    one, and vice versa. An in-place ReLU follows the target layer, as in torchvision's DenseNet.
    """

    def __init__(self, channel: int = 0):
        super().__init__()
        self.channel = channel
        self.conv = nn.Conv2d(1, 2, kernel_size=1)
        with torch.no_grad():
            self.conv.weight[:, 0, 0, 0] = torch.tensor([1.0, -1.0])
            self.conv.bias[:] = torch.tensor([-0.5, 0.5])
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(0.9)  # eval mode must switch this off

    def forward(self, x):
        a = self.relu(self.conv(x))
        return self.dropout(a[:, self.channel]).mean(dim=(1, 2))


def _two_blobs() -> torch.Tensor:
    image = 0.5 + 0.4 * _gaussian((32, 32), (10, 6), 2.5) - 0.4 * _gaussian((32, 32), (22, 26), 2.5)
    return torch.from_numpy(image)[None, None]


@pytest.mark.parametrize("channel, blob", [(0, (10, 6)), (1, (22, 26))])
def test_gradcam_points_at_what_the_score_measures(channel, blob):
    net = _ToyNet(channel).train()
    for p in net.parameters():
        p.requires_grad_(False)  # frozen, like the VGG extractor
    x = _two_blobs()
    out = grad_cam(net.conv, net, x, output_size=(64, 64), model=net)
    assert out.heat.shape == (1, 64, 64)
    assert 0.0 <= out.heat.min() and out.heat.max() == pytest.approx(1.0)
    peak = np.unravel_index(out.heat[0].argmax(), (64, 64))
    assert abs(peak[0] - 2 * blob[0]) <= 2 and abs(peak[1] - 2 * blob[1]) <= 2  # at twice the resolution
    other = (22, 26) if channel == 0 else (10, 6)
    assert out.heat[0, 2 * other[0], 2 * other[1]] < 0.05  # the other blob is not highlighted
    assert net.training  # previous mode restored
    assert all(p.grad is None for p in net.parameters())  # no gradient leaks into the model
    with torch.no_grad():  # the score comes from the same, eval-mode (deterministic) pass
        assert out.scores[0] == pytest.approx(float(net.eval()(x)), rel=1e-5)


def test_gradcam_batch_and_errors():
    net = _ToyNet().eval()
    x = torch.rand(3, 1, 32, 32)
    out = grad_cam(net.conv, net, x)
    assert out.heat.shape == (3, 32, 32) and out.scores.shape == (3,)
    other = nn.Conv2d(1, 1, 3)
    with pytest.raises(RuntimeError, match="never ran the target layer"):
        grad_cam(other, net, x)


def test_gradcam_on_densenet_last_block_with_inplace_relu():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    net = torchvision.models.densenet121(weights=None, num_classes=2).eval()
    out = grad_cam(net.features.norm5, lambda t: net(t)[:, 1], torch.rand(1, 3, 64, 64), (100, 80), model=net)
    assert out.heat.shape == (1, 100, 80) and out.raw.shape == (1, 2, 2)
    assert all(p.grad is None for p in net.parameters())


# ---------------------------------------------------------------- localisation metrics (exact values)


def test_pointing_game_hit_and_miss():
    mask = np.zeros((10, 10), bool)
    mask[2:5, 2:5] = True
    heat = np.zeros((10, 10), np.float32)
    heat[3, 3] = 1.0
    assert loc.pointing_hit(heat, mask)
    heat2 = np.zeros((10, 10), np.float32)
    heat2[3, 6] = 1.0
    assert not loc.pointing_hit(heat2, mask)
    assert loc.pointing_hit(heat2, mask, tolerance_px=2)  # within 2 px of the mask
    assert not loc.pointing_hit(np.full((10, 10), 0.5), mask)  # a constant map points nowhere


def test_top_fraction_iou_exact():
    mask = np.zeros((10, 10), bool)
    mask[0, :10] = True  # 10 pixels
    heat = np.zeros((10, 10), np.float32)
    heat[0, :5] = 1.0  # 5 pixels in the mask
    heat[9, :5] = 0.9  # 5 pixels outside
    # top 10 % = 10 pixels: 5 inside the mask → IoU = 5 / (10 + 10 - 5)
    assert loc.top_fraction_iou(heat, mask, 0.10) == pytest.approx(5 / 15)
    assert loc.top_fraction_iou(heat, mask, 0.05) == pytest.approx(5 / 10)
    assert loc.top_region(heat, 0.10).sum() == 10


def test_energy_inside_exact_and_chance():
    mask = np.zeros((4, 4), bool)
    mask[:2, :2] = True  # area fraction 0.25
    heat = np.zeros((4, 4), np.float32)
    heat[0, 0] = 3.0 / 4
    heat[3, 3] = 1.0 / 4
    assert loc.energy_inside(heat, mask) == pytest.approx(0.75)
    uniform = np.ones((4, 4), np.float32)
    assert loc.energy_inside(uniform, mask) == pytest.approx(0.25)  # uniform map sits exactly at chance
    scores = loc.localisation_scores(heat, mask, top_fraction=0.25)
    assert scores.mask_fraction == pytest.approx(0.25)
    # random 4-pixel region vs 4-pixel mask in 16: E[I] = 1 → IoU 1 / 7
    assert scores.chance_iou == pytest.approx(1 / 7)


def test_region_chance_and_summary():
    mask = np.zeros((10, 10), bool)
    mask[0:2, 0:2] = True
    lungs = np.zeros((10, 10), bool)
    lungs[:, :5] = True  # 50 px, containing the 4-px lesion
    hit = np.zeros((10, 10), np.float32)
    hit[1, 1] = 1.0
    miss = np.zeros((10, 10), np.float32)
    miss[8, 8] = 1.0
    s_hit = loc.localisation_scores(hit, mask, region=lungs)
    s_miss = loc.localisation_scores(miss, mask, region=lungs)
    assert s_hit.region_chance == pytest.approx(4 / 50)
    summary = loc.summarise([s_hit, s_miss, s_hit, s_hit])
    assert summary["n"] == 4 and summary["pointing_hit_rate"] == pytest.approx(0.75)
    assert summary["pointing_chance"] == pytest.approx(0.04)
    low, high = summary["pointing_hit_rate_ci95"]
    assert low < 0.75 < high
    json.dumps(summary)
    with pytest.raises(ValueError, match="empty"):
        loc.localisation_scores(hit, np.zeros((10, 10), bool))


def test_random_maps_score_near_chance():
    rng = np.random.default_rng(5)
    mask = np.zeros((64, 64), bool)
    mask[10:30, 20:44] = True
    scores = [loc.localisation_scores(rng.random((64, 64)), mask) for _ in range(200)]
    summary = loc.summarise(scores)
    assert abs(summary["pointing_hit_rate"] - summary["pointing_chance"]) < 0.08
    assert abs(summary["top_iou_mean"] - summary["top_iou_chance"]) < 0.03


# ---------------------------------------------------------------- the anomaly detector's two maps


@pytest.fixture(scope="module")
def untrained_detector():
    """Detector with the demo extractor and freshly initialised VAE/ViT: for shapes and wiring only."""
    from medsight.models.anomaly import AnomalyDetector, build_demo_extractor
    from medsight.models.anomaly.checkpoint import build_networks

    torch.manual_seed(0)
    vae, vit = build_networks()
    return AnomalyDetector(build_demo_extractor(), vae, vit)


@pytest.fixture(scope="module")
def nodule_phantom():
    from medsight.synthetic import generate_phantom

    return generate_phantom(31, size=192, findings=("nodule",))


def test_paper_attention_map_is_384_and_labelled_not_spatial(untrained_detector, nodule_phantom):
    from medsight.explain.attention import PAPER_MAP_SIZE, attention_grid, paper_attention_map

    result = paper_attention_map(untrained_detector, nodule_phantom.image)
    assert result.kind == "paper_attention"
    assert result.heat.shape == (PAPER_MAP_SIZE, PAPER_MAP_SIZE) == (384, 384)
    assert result.image.shape == (384, 384)
    assert 0.0 <= result.heat.min() and result.heat.max() <= 1.0
    assert "not image regions" in result.caption and "illustrative only" in result.caption
    assert result.details["spatial"] is False and len(result.details["patch_weights"]) == 8
    # the score is the detector's own fused score
    assert result.score == pytest.approx(untrained_detector.score(nodule_phantom.image).fused_score, abs=1e-5)
    # layout: patch 0 is the top-left cell, patch 7 the bottom-right one
    grid = attention_grid(np.array([1, 0, 0, 0, 0, 0, 0, 0.0]))
    peak = np.unravel_index(grid.argmax(), grid.shape)
    assert peak[0] < 192 and peak[1] < 96  # inside the top-left cell (2 rows × 4 columns of 192 × 96 px)
    assert grid[96, 48] > 0.7 and grid[-96, -48] < 0.05
    with pytest.raises(ValueError):
        attention_grid(np.ones(7))


def test_spatial_anomaly_map_at_image_resolution(untrained_detector):
    from medsight.explain.anomaly_map import spatial_anomaly_map

    image = np.random.default_rng(6).random((150, 110)).astype(np.float32)  # not square, not 224
    result = spatial_anomaly_map(untrained_detector, image, render=False)
    assert result.kind == "spatial_anomaly" and result.panels is None
    assert result.heat.shape == (150, 110) and result.heat.dtype == np.float32
    assert 0.0 <= result.heat.min() and result.heat.max() <= 1.0
    assert result.details["grid"] == [14, 14] and result.details["spatial"] is True
    # one pass gives the map AND the same score and components as the detector's scoring path
    scored = untrained_detector.score(image)
    assert result.score == pytest.approx(scored.fused_score, abs=1e-5)
    for key, value in scored.components.items():
        assert result.details["components"][key] == pytest.approx(value, abs=1e-5)
    assert all(p.grad is None for p in untrained_detector.vae.parameters())
    assert result.png()[:4] == b"\x89PNG" and result.panels is not None  # rendered on demand


def test_anomaly_maps_explain_the_detectors_target_layer(untrained_detector, monkeypatch):
    """`detector.target_layer` is the module whose output both anomaly maps use: 512 × 14 × 14 at 224 px."""
    from medsight.explain import anomaly_map
    from medsight.models.anomaly.patch import LAYER_NAME

    image = np.random.default_rng(8).random((150, 110)).astype(np.float32)
    seen = []
    handle = untrained_detector.target_layer.register_forward_hook(lambda module, args, out: seen.append(out))
    try:
        _, activations = untrained_detector.score_with_activations(image)  # what the deviation map reads
    finally:
        handle.remove()
    assert len(seen) == 1 and tuple(seen[0].shape) == (1, 512, 14, 14)
    assert torch.equal(seen[0], activations)

    explained = []
    grad_cam = anomaly_map.GradCAM
    monkeypatch.setattr(anomaly_map, "GradCAM", lambda layer, *args, **kwargs: explained.append(layer)
                        or grad_cam(layer, *args, **kwargs))
    result = anomaly_map.spatial_anomaly_map(untrained_detector, image, render=False)
    assert len(explained) == 1 and explained[0] is untrained_detector.target_layer
    assert result.details["grid"] == [14, 14]
    assert untrained_detector.target_layer_name == LAYER_NAME and LAYER_NAME in result.details["method"]
    json.dumps(result.to_dict())


def test_compute_map_rejects_missing_models(nodule_phantom):
    from medsight.explain import compute_map

    with pytest.raises(ValueError, match="anomaly detector"):
        compute_map("spatial_anomaly", nodule_phantom.image)
    with pytest.raises(ValueError, match="pathology classifier"):
        compute_map("pathology_gradcam", nodule_phantom.image, label="effusion")
    with pytest.raises(ValueError, match="Unknown map kind"):
        compute_map("saliency", nodule_phantom.image)


@pytest.mark.slow
@pytest.mark.xfail(
    strict=False,
    reason="measured with the demo detector (VGG16 fine-tuned on phantoms, test AUROC 0.80): pointing game "
           "1/40 vs chance 0.048 on 256-px phantoms (top-10% IoU 0.066 vs chance 0.028); the Grad-CAM of the "
           "pooled score does not point at the findings. The deviation-from-normal map does (0.375 on the same "
           "40; tests/test_anomaly_patch.py).",
)
def test_spatial_map_localises_above_chance_on_phantoms():
    """Demo detector on abnormal phantoms: pointing-game hit rate above the mask-area chance level."""
    from medsight import registry
    from training.evaluate_maps import abnormal_phantoms, evaluate

    try:
        from medsight.models.anomaly import load_detector

        detector = load_detector()
    except registry.ModelUnavailable as exc:
        pytest.skip(f"no anomaly detector weights in this build: {exc}")
    phantoms = abnormal_phantoms(20, seed=7000, size=512, findings=("consolidation", "effusion", "pneumothorax", "cardiomegaly"))
    summary = evaluate(detector, phantoms)["summary"]
    spatial = summary["spatial_anomaly"]
    assert spatial["pointing_hit_rate"] > spatial["pointing_chance"]
    assert spatial["top_iou_mean"] > spatial["top_iou_chance"]


def test_evaluate_maps_scores_an_oracle_and_a_blank_map_on_phantoms(tmp_path):
    """The evaluation loop on real phantoms with two maps whose answers are known: a map drawn from the
    ground-truth mask (always hits) and a blank map (never hits)."""
    from scipy import ndimage

    from medsight.explain.render import make_result
    from training.evaluate_maps import abnormal_phantoms, evaluate, write_grid

    def oracle(phantom):
        mask = np.logical_or.reduce(list(phantom.masks.values()))
        heat = ndimage.distance_transform_edt(mask).astype(np.float32)
        return make_result("spatial_anomaly", phantom.image, heat / heat.max(), "oracle", "", render=False)

    def blank(phantom):
        return make_result("spatial_anomaly", phantom.image, np.zeros_like(phantom.image), "blank", "", render=False)

    phantoms = abnormal_phantoms(3, seed=40, size=96, findings=("consolidation", "effusion", "nodule"))
    result = evaluate({"oracle": oracle, "blank": blank}, phantoms)
    assert result["summary"]["oracle"]["pointing_hit_rate"] == 1.0
    assert result["summary"]["oracle"]["energy_inside_mean"] == pytest.approx(1.0)
    assert result["summary"]["blank"]["pointing_hit_rate"] == 0.0
    assert result["summary"]["blank"]["empty_maps"] == 3
    assert set(result["by_finding"]["oracle"]) == {"consolidation", "effusion", "nodule"}
    json.dumps({k: result[k] for k in ("summary", "by_finding", "rows")})
    assert write_grid(result["examples"], tmp_path / "grid.png").stat().st_size > 0


def test_evaluate_maps_cli_help():
    import subprocess
    import sys

    from medsight.config import PROJECT_ROOT

    out = subprocess.run([sys.executable, "-m", "training.evaluate_maps", "--help"], cwd=PROJECT_ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "pointing game" in out.stdout
