"""Fusion rules on hand-made stage outputs: agreement, contradiction, boost, confidence, risk, missing stages."""

from __future__ import annotations

import json
import math

import pytest

from medsight import fusion
from medsight.fusion import (
    AGREEMENT_BOOST, ANOMALY_HIGH_MARGIN, CONTRADICTION_PENALTY, binary_entropy, centre_on_threshold,
    confidence_of, fuse,
)

LABELS = ("Effusion", "Pneumothorax", "Consolidation", "Cardiomegaly", "Nodule")


def pathology(**probs: float) -> dict:
    """A pathology result with every label at threshold 0.5; unspecified labels at p=0.05."""
    p = {label: probs.get(label, 0.05) for label in LABELS}
    return {"probabilities": p, "thresholds": {label: 0.5 for label in LABELS},
            "positives": [label for label, v in p.items() if v >= 0.5]}


def text(*findings: tuple[str, str], symptoms: tuple[tuple[str, str | None], ...] = ()) -> dict:
    """An NLP result dict with the given (finding, status) pairs and (symptom, severity) pairs."""
    return {
        "findings": [{"name": name, "status": status, "evidence": [f"sentence about {name}"]} for name, status in findings],
        "entities": [{"label": "SYMPTOM", "canonical": s, "text": s, "status": "present", "severity": sev}
                     for s, sev in symptoms],
    }


NORMAL_ANOMALY = {"fused_score": 0.20, "threshold": 0.35, "is_anomalous": False}


def by_finding(items: list[dict]) -> dict[str, dict]:
    return {i["finding"]: i for i in items}


def test_agreement_boost_exact_value():
    result = fuse(NORMAL_ANOMALY, pathology(Effusion=0.62), text(("effusion", "present")))
    agreement = by_finding(result.agreements)["effusion"]
    assert agreement["relation"] == "agreement"
    assert agreement["fused_p"] == pytest.approx(0.62 + AGREEMENT_BOOST)
    assert result.fused_probabilities["Effusion"] == pytest.approx(0.77)
    assert fuse(None, pathology(Effusion=0.95), text(("effusion", "present"))).fused_probabilities["Effusion"] == 1.0
    assert "min(1, p + 0.15)" in result.rule


def test_contradiction_message_and_penalty():
    nlp = {"findings": [{"name": "effusion", "status": "negated", "evidence": ["No pleural effusion."]}], "entities": []}
    result = fuse(NORMAL_ANOMALY, pathology(Effusion=0.82), nlp)
    [c] = result.contradictions
    assert c["message"].startswith("Image suggests effusion (p=0.82 ≥ 0.50); text denies it ('No pleural effusion.')")
    assert c["fused_p"] == pytest.approx(0.82 - CONTRADICTION_PENALTY)
    assert result.confidence["low_confidence"]
    assert "contradict" in result.confidence["reason"]


def test_related_finding_counts_as_agreement_and_other_lists():
    result = fuse(NORMAL_ANOMALY, pathology(Consolidation=0.7, Nodule=0.6),
                  text(("pneumonia", "present"), ("pneumothorax", "negated"), ("granuloma", "present"),
                       ("cardiomegaly", "present")))
    agreements = by_finding(result.agreements)
    assert agreements["consolidation"]["text_finding"] == "pneumonia"
    assert agreements["pneumothorax"]["relation"] == "agree_absent"  # both say no pneumothorax
    assert agreements["pneumothorax"]["fused_p"] == pytest.approx(0.05)  # no boost on absence
    assert list(by_finding(result.unmentioned_image_findings)) == ["nodule"]
    text_only = by_finding(result.text_only_findings)
    assert "not assessed" in text_only["granuloma"]["message"]
    assert "does not show it" in text_only["cardiomegaly"]["message"]


def test_uncertain_text_gives_no_boost():
    result = fuse(NORMAL_ANOMALY, pathology(Nodule=0.6), text(("nodule", "uncertain")))
    [u] = result.uncertain
    assert u["fused_p"] == pytest.approx(0.6)


def test_entropy_confidence():
    assert binary_entropy(0.5) == pytest.approx(1.0)
    assert binary_entropy(0.0) == binary_entropy(1.0) == 0.0
    assert binary_entropy(0.11) == pytest.approx(-(0.11 * math.log2(0.11) + 0.89 * math.log2(0.89)))
    assert confidence_of(0.9) == pytest.approx(1 - binary_entropy(0.9))
    assert centre_on_threshold(0.1, 0.1) == pytest.approx(0.5)
    assert centre_on_threshold(0.55, 0.1) == pytest.approx(0.75)
    # a probability at its threshold is a coin toss; far from it is confident
    near = fuse(None, pathology(Effusion=0.5), None).confidence["sources"]["pathology"]
    far = fuse(None, pathology(Effusion=0.99), None).confidence["sources"]["pathology"]
    assert far > near


def test_agreement_raises_fused_confidence_and_contradiction_lowers_it():
    base = fuse(None, pathology(Effusion=0.6), text(("effusion", "uncertain"))).confidence
    agree = fuse(None, pathology(Effusion=0.6), text(("effusion", "present"))).confidence
    contra = fuse(None, pathology(Effusion=0.6), text(("effusion", "negated"))).confidence
    assert agree["sources"]["pathology"] == base["sources"]["pathology"] == contra["sources"]["pathology"]
    assert agree["fused"] > contra["fused"]
    assert contra["low_confidence"]


def test_low_confidence_is_flagged_not_hidden():
    result = fuse({"fused_score": 0.35, "threshold": 0.35, "is_anomalous": True}, pathology(Effusion=0.5), None)
    assert result.confidence["low_confidence"]
    assert result.confidence["fused"] < fusion.LOW_CONFIDENCE
    assert result.findings  # results are still there


# ---------------------------------------------------------------- risk

def test_risk_high_critical_finding():
    risk = fuse(NORMAL_ANOMALY, pathology(Pneumothorax=0.7), None).risk
    assert risk["level"] == "High"
    assert risk["reasons"][0].startswith("Critical finding on the image: pneumothorax")


def test_risk_high_anomaly_margin_with_positive_pathology():
    anomaly = {"fused_score": 0.35 + ANOMALY_HIGH_MARGIN + 0.01, "threshold": 0.35, "is_anomalous": True}
    risk = fuse(anomaly, pathology(Effusion=0.6), None).risk
    assert risk["level"] == "High"
    assert any("+ 0.15 with positive pathology (effusion)" in r for r in risk["reasons"])
    # same anomaly without a positive pathology is only Moderate
    assert fuse(anomaly, pathology(), None).risk["level"] == "Moderate"


def test_risk_high_red_flag_symptom_with_abnormal_image():
    anomaly = {"fused_score": 0.40, "threshold": 0.35, "is_anomalous": True}
    symptoms = text(symptoms=(("hemoptysis", None),))
    risk = fuse(anomaly, pathology(), None, symptoms).risk
    assert risk["level"] == "High"
    assert risk["red_flag_symptoms"] == ["hemoptysis"]
    # severe dyspnoea counts, mild does not
    assert fuse(anomaly, pathology(), None, text(symptoms=(("dyspnea", "severe"),))).risk["level"] == "High"
    assert fuse(anomaly, pathology(), None, text(symptoms=(("dyspnea", "mild"),))).risk["level"] == "Moderate"
    # red flag with a normal image: Moderate, saying so
    alone = fuse(NORMAL_ANOMALY, pathology(), None, symptoms).risk
    assert alone["level"] == "Moderate"
    assert any("Red-flag symptom (hemoptysis)" in r for r in alone["reasons"])


@pytest.mark.parametrize(
    "anomaly, path, nlp, reason",
    [
        ({"fused_score": 0.40, "threshold": 0.35, "is_anomalous": True}, pathology(), None, "Anomaly score 0.400 ≥ threshold 0.350."),
        (NORMAL_ANOMALY, pathology(Effusion=0.7), None, "Pathology positive: effusion (p=0.70 ≥ 0.50)."),
        (NORMAL_ANOMALY, pathology(), text(("atelectasis", "uncertain")), "Text is uncertain about atelectasis"),
        ({**NORMAL_ANOMALY, "peak_deviation": 7.25, "deviation_threshold": 4.9, "deviation_unusual": True},
         pathology(), None, "Peak deviation from normal 7.2 above the normal range (≤ 4.9"),
    ],
)
def test_risk_moderate_reasons(anomaly, path, nlp, reason):
    risk = fuse(anomaly, path, nlp).risk
    assert risk["level"] == "Moderate"
    assert any(r.startswith(reason) for r in risk["reasons"])


def test_risk_low_with_reasons():
    risk = fuse(NORMAL_ANOMALY, pathology(), text(("pneumothorax", "negated"))).risk
    assert risk["level"] == "Low"
    assert "Anomaly score 0.200 < threshold 0.350." in risk["reasons"]
    assert "No pathology label above its operating threshold." in risk["reasons"]


def test_missing_stages_are_reported():
    result = fuse(None, None, text(("effusion", "present")))
    assert any("Anomaly detector result missing" in m for m in result.missing)
    assert any("Pathology classifier result missing" in m for m in result.missing)
    assert result.risk["level"] == "Moderate"
    assert any(r.startswith("Not considered: Anomaly") for r in result.risk["reasons"])
    nothing = fuse(None, None, None)
    assert nothing.risk["level"] == "Unknown"
    assert len(nothing.missing) == 3
    assert nothing.confidence["low_confidence"]
    image_only = fuse(NORMAL_ANOMALY, pathology(Effusion=0.7), None)
    assert image_only.unmentioned_image_findings[0]["message"].endswith("no text to compare.")


def test_result_is_json_and_works_with_real_nlp_output():
    from medsight.nlp import analyze_text

    nlp = analyze_text("FINDINGS: Small right pleural effusion. No pneumothorax.", classify_conditions=False).to_dict()
    result = fuse(NORMAL_ANOMALY, pathology(Effusion=0.7, Pneumothorax=0.1), nlp).to_dict()
    json.dumps(result)
    assert by_finding(result["agreements"])["effusion"]["fused_p"] == pytest.approx(0.85)
    assert by_finding(result["agreements"])["pneumothorax"]["relation"] == "agree_absent"
    assert result["risk"]["level"] == "Moderate"


def test_deviation_from_normal_makes_the_image_abnormal_for_red_flags():
    deviating = {**NORMAL_ANOMALY, "peak_deviation": 6.0, "deviation_threshold": 4.9, "deviation_unusual": True}
    within = {**deviating, "peak_deviation": 4.0, "deviation_unusual": False}
    symptoms = text(symptoms=(("hemoptysis", None),))
    assert fuse(deviating, pathology(), None, symptoms).risk["level"] == "High"
    assert fuse(within, pathology(), None, symptoms).risk["level"] == "Moderate"
    assert fuse(within, pathology(), None).risk["level"] == "Low"
