"""PDF report: opens, has pages, carries the findings text, renders Unicode and images."""

import io

import numpy as np
import pytest
from PIL import Image

from medsight.report.pdf import DISCLAIMER, build_pdf

pdfium = pytest.importorskip("pypdfium2")


def _png(width, height, value=128):
    buf = io.BytesIO()
    Image.fromarray(np.full((height, width), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _analysis(**extra):
    data = {
        "analysis_id": "abc123",
        "created": "2026-11-23T10:00:00+00:00",
        "status": "COMPLETE",
        "study": {"study_id": "f00dfeedcafe1234", "modality": "CR", "view_position": "PA", "source_format": "dicom",
                  "filename": "DOE_JANE.dcm", "synthetic": True, "metadata": {}},
        "symptoms": "Fever and cough for 3 days; SpO₂ 91 %, pleuritic pain ≥ 2 days",
        "anomaly": {"fused_score": 0.62, "threshold": 0.348, "is_anomalous": True, "tier": "demo",
                    "components": {"reconstruction": 0.31, "kl": 0.11, "vit": 0.2}},
        "pathology": {"probabilities": {"effusion": 0.81, "pneumothorax": 0.05}, "thresholds": {"effusion": 0.5, "pneumothorax": 0.4},
                      "positives": ["effusion"], "tier": "demo"},
        "nlp": {"entities": [{"text": "pneumothorax", "label": "FINDING", "negated": True, "uncertain": False}],
                "conditions": [{"name": "pleural effusion", "status": "present"}]},
        "fusion": {"risk": {"level": "Moderate", "reasons": ["Anomaly score above threshold"]},
                   "agreements": ["Image and text agree on effusion"], "contradictions": []},
        "summary": {"headline": ["Anomaly score 0.620 (threshold 0.348): outside normal range"], "demo_models": ["anomaly.detector"]},
        "models": {"anomaly.detector": {"tier": "demo", "source_label": "demo weights", "version": "1", "sha256": "ab" * 32}},
        "stages": [{"name": "validate input", "status": "ok", "seconds": 0.01, "message": ""}],
    }
    data.update(extra)
    return data


def _text(pdf_bytes):
    doc = pdfium.PdfDocument(pdf_bytes)
    return len(doc), "\n".join(doc[i].get_textpage().get_text_range() for i in range(len(doc))), doc


def test_pdf_contains_findings_unicode_and_disclaimer():
    pdf = build_pdf(_analysis(), images=[("Original radiograph", _png(200, 200))], user="radiologist",
                    report_text="FINDINGS: Small right pleural effusion.\nIMPRESSION: Effusion.")
    assert pdf[:5] == b"%PDF-"
    pages, text, _ = _text(pdf)
    assert pages >= 1
    for expected in ("f00dfeedcafe1234", "effusion", "0.620", "Risk: Moderate", "SpO₂ 91 %", "≥ 2 days",
                     "Small right pleural effusion", "SYNTHETIC PHANTOM", "radiologist"):
        assert expected in text, expected
    assert "Decision support, not a diagnosis" in text


def test_identifiers_only_when_opted_in():
    _, text, _ = _text(build_pdf(_analysis()))
    assert "DOE_JANE" not in text
    _, text, _ = _text(build_pdf(_analysis(), include_identifiers=True))
    assert "DOE_JANE" in text


def test_many_images_add_pages_and_render_to_png(tmp_path):
    images = [(f"Panel {i}", _png(900, 300, 40 * i)) for i in range(6)]
    pdf = build_pdf(_analysis(), images=images)
    pages, text, doc = _text(pdf)
    assert pages >= 2, "six wide panels cannot fit one A4 page"
    assert "Panel 5" in text
    bitmap = doc[0].render(scale=1).to_pil()
    assert bitmap.size[0] > 500 and np.asarray(bitmap.convert("L")).std() > 5


def test_empty_analysis_still_renders():
    pdf = build_pdf({"status": "FAILED", "study": {}})
    pages, text, _ = _text(pdf)
    assert pages == 1 and "No result was produced" in text
    assert DISCLAIMER.split(".")[0] in text


def test_pdf_states_the_deviation_from_normal_when_present():
    anomaly = {**_analysis()["anomaly"], "peak_deviation": 7.31, "deviation_threshold": 4.91, "deviation_unusual": True}
    _, text, _ = _text(build_pdf(_analysis(anomaly=anomaly), images=[], user="radiologist"))
    assert "Peak deviation from normal 7.3 (ABOVE the normal range" in " ".join(text.split())
    _, without, _ = _text(build_pdf(_analysis(), images=[], user="radiologist"))
    assert "Peak deviation" not in without
