"""Domain rule: outputs of image models are withheld for inputs outside the domain their weights were trained on."""

from __future__ import annotations

import csv
import io
import json
import shutil

import numpy as np
import pydicom.data
import pytest
from PIL import Image

from medsight import domain, registry
from medsight.config import SHIPPED_MODELS_DIR
from medsight.ingest import load_study
from medsight.synthetic import generate_phantom

SAMPLES = SHIPPED_MODELS_DIR / "samples"
ACCEPTED = {"decision": "accepted", "code": "ok", "reason": ""}
REFUSED = {"decision": "refused", "code": "modality", "reason": "This is a CT slice (Modality CT)."}


def _resaved(image: np.ndarray, width: int = 700, quality: int = 70) -> np.ndarray:
    """A phantom as a screenshot would carry it: 8-bit, resized, JPEG, no synthetic marker."""
    im = Image.fromarray(np.round(image * 255).astype(np.uint8)).resize((width, width), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf), dtype=np.float32) / 255


@pytest.fixture(scope="module")
def real_film():
    return load_study(pydicom.data.get_testdata_file("RG1_UNCI.dcm"))


@pytest.mark.parametrize("name", sorted(p.name for p in SAMPLES.iterdir() if p.suffix in (".png", ".jpg", ".dcm")))
def test_bundled_samples_are_inside_the_phantom_domain(name):
    verdict = domain.phantom_verdict(load_study(SAMPLES / name).image)
    assert verdict.inside, verdict


@pytest.mark.parametrize("seed,size,findings", [(5, 256, ()), (6, 512, ("effusion",)), (7, 384, ("nodule",))])
def test_fresh_phantoms_and_their_resaved_copies_are_inside(seed, size, findings):
    image = generate_phantom(seed, size=size, findings=findings).image
    assert domain.phantom_verdict(image).inside
    resaved = domain.phantom_verdict(_resaved(image))
    assert resaved.inside and not resaved.marked_synthetic, "a screenshot of a phantom loses the marker, not the domain"


def test_real_chest_film_and_ct_slice_are_outside_the_phantom_domain(real_film):
    verdict = domain.phantom_verdict(real_film.image)
    assert not verdict.inside and verdict.distance > 1.2 * verdict.threshold
    ct = load_study(pydicom.data.get_testdata_file("CT_small.dcm"))
    assert not domain.phantom_verdict(ct.image).inside


def test_a_real_film_marked_synthetic_is_still_outside(real_film):
    """The marker is information, not the decision: the measured test decides."""
    verdict = domain.phantom_verdict(real_film.image, marked_synthetic=True)
    assert verdict.marked_synthetic and not verdict.inside


def test_shipped_card_records_the_measured_separation():
    card = json.loads((SHIPPED_MODELS_DIR / "phantom_domain.card.json").read_text(encoding="utf-8"))
    figures = card["figures"]
    assert figures["held-out phantoms"]["rate"] >= 0.99
    assert figures["real chest radiographs (pydicom RG1 and variants)"]["rate"] == 1.0
    assert figures["non-chest images (pydicom, scikit-image)"]["rate"] == 1.0
    assert card["threshold"]["value"] == pytest.approx(domain.phantom_model().threshold, abs=0.01)


def test_feature_version_mismatch_is_refused_with_the_refit_command(tmp_path):
    model = domain.phantom_model()
    path = domain.PhantomDomainModel(model.mean, model.precision, model.threshold, version=99).save(tmp_path / "m.npz")
    with pytest.raises(ValueError, match="fit_phantom_domain"):
        domain.PhantomDomainModel.load(path)


@pytest.mark.parametrize("prov,gate,inside", [
    ({"tier": "real", "domain": "chest_xr"}, ACCEPTED, True),
    ({"tier": "real", "domain": "chest_xr"}, REFUSED, False),
    ({"tier": "real", "domain": "chest_xr"}, REFUSED | {"decision": "overridden", "overridden_by": "dr"}, True),
    ({"tier": "user", "domain": "unknown"}, ACCEPTED, False),
    ({"tier": "rules", "domain": ""}, REFUSED, True),
])
def test_slot_verdict_by_declared_domain(prov, gate, inside):
    assert domain.slot_verdict("pathology.classifier", prov, gate=gate, phantom=None).inside is inside


def test_demo_provenance_without_a_domain_field_is_treated_as_phantom_trained(real_film):
    """Records written before domains existed still withhold demo output on a real film."""
    phantom = domain.phantom_verdict(real_film.image)
    verdict = domain.slot_verdict("anomaly.detector", {"tier": "demo"}, gate=ACCEPTED, phantom=phantom)
    assert not verdict.inside and "synthetic chest phantoms" in verdict.reason


def test_every_image_slot_declares_the_domain_of_each_source():
    for name in ("anomaly.detector", "pathology.classifier", "retrieval.image_embedder"):
        for source in registry.get_slot(name).sources:
            expected = {registry.Tier.REAL: registry.Domain.CHEST_XR, registry.Tier.DEMO: registry.Domain.PHANTOM}
            if source.tier in expected:
                assert source.domain is expected[source.tier], (name, source.label)


def test_demo_models_load_with_the_phantom_domain():
    for name in ("anomaly.detector", "pathology.classifier"):
        provenance = registry.load(name).provenance
        assert provenance.tier == "demo" and provenance.domain == "phantom"
        assert "phantoms" in provenance.domain_description


# -- the pipeline, History, PDF and batch CLI on a real film, a CT slice and a phantom ---------------------------

NUMBERS_OF_FINDINGS = ("fused_score", "probabilities", "peak_deviation", "positives")


def _walk_keys(data):
    if isinstance(data, dict):
        for key, value in data.items():
            yield key
            yield from _walk_keys(value)
    elif isinstance(data, list):
        for item in data:
            yield from _walk_keys(item)


def test_demo_outputs_on_a_real_film_are_withheld_everywhere(real_film):
    from medsight.pipeline import STATUS_WITHHELD, run_analysis
    from medsight.report import build_pdf
    from medsight.storage import History
    from medsight.config import get_settings

    result = run_analysis(real_film, "fever and productive cough")
    assert result.gate["decision"] == "accepted"
    assert result.status == STATUS_WITHHELD
    assert result.anomaly is None and result.pathology is None and not result.maps
    assert set(result.withheld) == {"anomaly.detector", "pathology.classifier"}
    assert "heatmaps" not in result.objects or not result.objects["heatmaps"]
    kept = result.objects["withheld"]["pathology.classifier"]["output"]
    assert kept and kept["probabilities"], "the demo output is kept live for the greyed 'show anyway' view only"
    data = result.to_dict()
    keys = set(_walk_keys(data))
    assert not keys & set(NUMBERS_OF_FINDINGS), keys & set(NUMBERS_OF_FINDINGS)
    headline = " ".join(result.summary["headline"])
    assert "Withheld" in headline and "Risk: High" not in headline
    fusion = result.fusion or {}
    assert not fusion.get("unmentioned_image_findings") and not fusion.get("fused_probabilities")
    assert all(f.get("image_p") is None for f in fusion.get("findings", []))
    assert result.summary["demo_models"] == []

    text = _pdf_text(build_pdf(data))
    assert "Withheld" in text and "python -m medsight.weights fetch" in text
    for label in kept["probabilities"]:
        assert f"{label} 0." not in text and "Probability" not in text
    assert "Fused score" not in text

    history = History(get_settings().db_path)
    record_id = history.save_record("tester", "analysis", real_film.study_id, "x", data)
    stored = history.get_record("tester", record_id)
    assert not set(_walk_keys(stored)) & set(NUMBERS_OF_FINDINGS)


def test_a_bundled_phantom_still_gets_its_full_analysis():
    from medsight.pipeline import STATUS_COMPLETE, run_analysis

    result = run_analysis(load_study(SAMPLES / "effusion_left_pa.dcm"))
    assert result.status == STATUS_COMPLETE, [(s.name, s.status, s.message) for s in result.stages]
    assert result.anomaly and result.pathology and not result.withheld
    assert result.domain["slots"]["anomaly.detector"]["inside"]


def test_a_refused_study_reaches_no_image_model_until_overridden():
    from medsight.pipeline import STATUS_REFUSED, STATUS_WITHHELD, run_analysis

    ct = load_study(pydicom.data.get_testdata_file("CT_small.dcm"))
    result = run_analysis(ct)
    assert result.status == STATUS_REFUSED and result.gate["decision"] == "refused"
    assert not result.models and result.anomaly is None
    assert "Not analysed" in result.summary["headline"][0]
    overridden = run_analysis(ct, override_by="dr.who")
    assert overridden.gate["decision"] == "overridden" and overridden.gate["overridden_by"] == "dr.who"
    # The radiologist's override lets the models run; phantom-trained weights still cannot speak about a CT slice.
    assert overridden.status == STATUS_WITHHELD and overridden.anomaly is None
    assert any("overridden by dr.who" in line for line in overridden.summary["headline"])


def test_batch_cli_reports_gate_and_withheld_with_empty_scores(tmp_path):
    from medsight.batch import main

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("RG1_UNCI.dcm", "CT_small.dcm"):
        shutil.copy(pydicom.data.get_testdata_file(name), folder / name)
    shutil.copy(SAMPLES / "normal_pa.png", folder / "normal_pa.png")
    assert main([str(folder), "--out", str(tmp_path / "out")]) == 0
    rows = {r["file"].split("/")[-1]: r for r in csv.DictReader(open(tmp_path / "out" / "results.csv"))}
    real, ct, phantom = rows["RG1_UNCI.dcm"], rows["CT_small.dcm"], rows["normal_pa.png"]
    assert real["gate"] == "accepted" and real["status"] == "withheld"
    assert set(real["withheld"].split(";")) == {"anomaly.detector", "pathology.classifier"}
    assert real["anomaly_score"] == "" and real["positives"] == "" and all(
        v == "" for k, v in real.items() if k.startswith("p_"))
    assert ct["status"] == "refused" and ct["gate"].startswith("refused") and ct["anomaly_score"] == ""
    assert phantom["status"] == "ok" and phantom["withheld"] == "" and float(phantom["anomaly_score"]) > 0
    payload = json.loads((tmp_path / "out" / "results.json").read_text())
    assert payload["summary"]["refused"] == 1 and payload["summary"]["withheld"] == 1


def _pdf_text(pdf: bytes) -> str:
    import pypdfium2

    doc = pypdfium2.PdfDocument(pdf)
    return "\n".join(doc[i].get_textpage().get_text_range() for i in range(len(doc)))


def test_verification_of_a_real_film_says_the_image_output_was_withheld(real_film):
    from medsight.pipeline import run_analysis
    from medsight.verify import verify_report

    analysis = run_analysis(real_film).to_dict()
    result = verify_report("FINDINGS: Right lower lobe consolidation. IMPRESSION: Pneumonia.", analysis).to_dict()
    assert any("withheld" in n and "synthetic chest phantoms" in n for n in result["notices"]), result["notices"]
    evidence = [d["evidence"] for d in result["discrepancies"]]
    assert all(e["probability"] is None and e["anomaly_score"] is None for e in evidence), evidence
