"""AppTest of the Heatmap page, signed in through app.py, with a phantom study in session state."""

from __future__ import annotations

import pytest
import torch

from medsight.synthetic import generate_phantom, write_png

PAGE = "views/heatmap.py"


@pytest.fixture
def study(tmp_path):
    from medsight.ingest import load_study

    path = write_png(generate_phantom(21, size=256, findings=("nodule",)), tmp_path / "phantom.png")
    return load_study(path)


@pytest.fixture
def detector_in_home(medsight_home):
    """An anomaly checkpoint in the user's models folder, so the registry's demo source loads it.

    Its networks are freshly initialised: this test checks the page's behaviour, not the detector's figures.
    """
    from medsight.models.anomaly import Calibration, build_demo_extractor, save_checkpoint
    from medsight.models.anomaly.checkpoint import build_networks

    torch.manual_seed(0)
    vae, vit = build_networks()
    save_checkpoint(medsight_home / "models" / "anomaly_demo.pt", vae, vit, Calibration.published(), 0.348,
                    build_demo_extractor(), meta={"purpose": "page test"})
    from medsight import registry

    registry.clear_cache()
    yield
    registry.clear_cache()


def _open_page(logged_in_app, study):
    at = logged_in_app(timeout=180)
    at.session_state["study"] = study
    at.switch_page(PAGE).run(timeout=180)
    assert not at.exception, [e.value for e in at.exception]
    return at


def _texts(at) -> str:
    parts = [m.value for m in (*at.markdown, *at.caption, *at.info, *at.warning, *at.error)]
    return "\n".join(str(p) for p in parts)


def test_heatmap_page_draws_maps_and_switches_kind(logged_in_app, study, detector_in_home):
    at = _open_page(logged_in_app, study)
    assert not at.error, [e.value for e in at.error]
    radio = at.radio(key="heatmap_kind_choice")
    assert radio.value == "spatial_anomaly"
    cache = at.session_state["heatmap_cache"]
    spatial = cache[(study.study_id, "spatial_anomaly", "")]
    assert spatial.heat.shape == study.image.shape
    assert 0.0 <= spatial.score <= 1.0
    assert "Grad-CAM" in _texts(at)
    # a score gauge and the component breakdown are drawn
    assert len(at.get("plotly_chart")) == 2
    # four downloads: the three-panel figure and each panel
    assert len(at.get("download_button")) == 4

    # the paper map is labelled as not spatial
    radio.set_value("paper_attention").run(timeout=180)
    assert not at.exception, [e.value for e in at.exception]
    assert any("not image regions" in w.value for w in at.warning)
    paper = at.session_state["heatmap_cache"][(study.study_id, "paper_attention", "")]
    assert paper.heat.shape == (384, 384)

    # opacity changes redraw the overlay without recomputing the map
    at.slider(key="heatmap_opacity").set_value(0.3).run(timeout=180)
    assert not at.exception
    redrawn = at.session_state["heatmap_cache"][(study.study_id, "paper_attention", "")]
    assert redrawn.opacity == pytest.approx(0.3)
    assert (redrawn.heat == paper.heat).all()


def test_heatmap_page_pathology_choice_never_crashes(logged_in_app, study, detector_in_home):
    from medsight import registry

    try:
        registry.load("pathology.classifier")
        available = True
    except Exception:
        available = False
    registry.clear_cache()
    at = _open_page(logged_in_app, study)
    at.radio(key="heatmap_kind_choice").set_value("pathology_gradcam").run(timeout=180)
    assert not at.exception, [e.value for e in at.exception]
    keys = [k for k in at.session_state["heatmap_cache"] if k[1] == "pathology_gradcam"]
    if available:  # a per-label map of the most probable label, with its gauge
        assert len(keys) == 1 and keys[0][2] == at.selectbox(key="heatmap_label_choice").value
        result = at.session_state["heatmap_cache"][keys[0]]
        assert result.heat.shape == study.image.shape and result.label == keys[0][2]
        assert len(at.get("download_button")) == 4
    else:  # the page says what is missing
        assert not keys and "not available" in _texts(at)


def test_heatmap_page_without_detector_says_what_is_missing(logged_in_app, study, monkeypatch, tmp_path):
    from medsight import registry

    registry.clear_cache()
    # no weights anywhere: neither in the test's data directory nor shipped
    monkeypatch.setattr(registry, "SHIPPED_MODELS_DIR", tmp_path / "no-shipped-models")
    at = _open_page(logged_in_app, study)
    assert any("anomaly detector is not available" in w.value for w in at.warning)
    assert not at.get("download_button")
    registry.clear_cache()


def test_heatmap_page_without_study_asks_for_one(logged_in_app):
    at = logged_in_app()
    at.switch_page(PAGE).run()
    assert not at.exception
    assert any("Open a study" in i.value for i in at.info)


def test_heatmap_page_opens_on_the_deviation_map_with_the_shipped_demo(logged_in_app, study):
    from medsight import registry

    registry.clear_cache()
    try:
        detector = registry.load("anomaly.detector").model
    except registry.ModelUnavailable as exc:
        pytest.skip(f"no anomaly detector weights in this build: {exc}")
    if detector.patch_model is None:
        pytest.skip("no patch model for the shipped detector")
    at = _open_page(logged_in_app, study)
    assert not at.error, [e.value for e in at.error]
    assert at.radio(key="heatmap_kind_choice").value == "patch_deviation"
    result = at.session_state["heatmap_cache"][(study.study_id, "patch_deviation", "")]
    assert result.heat.shape == study.image.shape and result.details["peak_threshold"] > 0
    metric = at.metric[0]
    assert metric.label == "Peak deviation from normal"
    assert float(metric.value) == pytest.approx(result.details["peak_deviation"], abs=0.05)
    assert "normal range" in metric.delta


def test_heatmap_page_shows_the_analysis_map_without_computing_it_again(logged_in_app, study):
    from medsight import pipeline, registry

    registry.clear_cache()
    try:
        detector = registry.load("anomaly.detector").model
        classifier = registry.load("pathology.classifier").model
    except registry.ModelUnavailable as exc:
        pytest.skip(f"no demo weights in this build: {exc}")
    if detector.patch_model is None:
        pytest.skip("no patch model for the shipped detector")
    result = pipeline.run_analysis(study, detector=detector, classifier=classifier, maps="key")
    drawn = result.objects["heatmaps"]["patch_deviation"]
    at = logged_in_app(timeout=180)
    at.session_state["study"] = study
    at.session_state["analysis"] = {**result.to_dict(), "study_id": study.study_id}
    at.session_state["analysis_objects"] = result.objects
    passes = []
    handle = detector.target_layer.register_forward_hook(lambda *args: passes.append(1))
    try:
        at.switch_page(PAGE).run(timeout=180)
    finally:
        handle.remove()
    assert not at.exception, [e.value for e in at.exception]
    assert at.radio(key="heatmap_kind_choice").value == "patch_deviation"
    assert at.session_state["heatmap_cache"][(study.study_id, "patch_deviation", "")] is drawn
    assert not passes, "the deviation map of the analysis is shown, not computed again"


def test_analysis_maps_are_offered_only_for_their_own_study():
    from medsight.heatmap_choices import analysis_map_keys

    maps = {"patch_deviation": "deviation", "pathology:Effusion": "effusion"}
    assert analysis_map_keys({"study_id": "a"}, maps, "a") == {
        ("a", "patch_deviation", ""): "deviation", ("a", "pathology_gradcam", "Effusion"): "effusion"}
    assert analysis_map_keys({"study_id": "b"}, maps, "a") == {}
    assert analysis_map_keys(None, maps, "a") == {} and analysis_map_keys({"study_id": "a"}, None, "a") == {}


def test_heatmap_page_deviation_map_without_patch_model_says_how_to_fit_one(logged_in_app, study, detector_in_home):
    at = _open_page(logged_in_app, study)
    at.radio(key="heatmap_kind_choice").set_value("patch_deviation").run(timeout=180)
    assert not at.exception, [e.value for e in at.exception]
    assert any("fit_patch_model" in e.value for e in at.error)
