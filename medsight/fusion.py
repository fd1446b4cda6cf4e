"""Fusion of image and text results: agreement, uncertainty and risk, by explicit rules.

Inputs are the `to_dict()` forms of the other stages; any of them may be missing (stage skipped or
failed), and the result then says what was missing instead of guessing.

Agreement rule (the same text is shown in the UI as `FusionResult.rule`):
    For each image label, the text's statement about the same finding (or a related one, e.g.
    consolidation ↔ pneumonia, see `medsight.nlp.related_findings`) is looked up.
    - image positive (p ≥ threshold) and text asserts it        → agreement:
          fused p = min(1, p + AGREEMENT_BOOST)
    - image positive and text denies it                        → contradiction:
          fused p = max(0, p − CONTRADICTION_PENALTY)
    - image positive, text hedges ("possible", "cannot exclude") → uncertain, fused p = p
    - image positive, text silent                              → image-only ("unmentioned") finding, fused p = p
    - image negative and text asserts it                       → text-only finding (image p shown), fused p = p
    - image negative and text denies it                        → agreement on absence (no boost)
    Text findings with no image label (e.g. granuloma) are listed as text-only, "not assessed by the image".

Uncertainty: binary entropy H(q) = −q log₂ q − (1−q) log₂(1−q), which lies in [0, 1] bits, so the
confidence of one probability is 1 − H(q). Pathology probabilities are first re-centred on their own
operating threshold (q = 0.5 at the threshold, piecewise linear to 0 and 1), because a probability of
0.3 is a confident "yes" for a label whose threshold is 0.1. The anomaly score becomes a probability by
a logistic around its threshold (`ANOMALY_TEMPERATURE`); each text finding's status maps to
`TEXT_STATUS_PROBABILITY`. Per-source confidence is the mean over its items; the fused confidence is the
mean of the available sources, using fused (boosted/penalised) pathology probabilities. A result is
flagged low-confidence (never hidden) when the fused confidence is below `LOW_CONFIDENCE`, a source is
below `LOW_SOURCE_CONFIDENCE`, or image and text contradict each other.

Risk rules (first matching level wins; every matching reason is listed):
    High     - a critical finding (`CRITICAL_FINDINGS`, e.g. pneumothorax) positive on the image
               (fused p ≥ threshold) or asserted by the text;
             - anomaly score ≥ threshold + ANOMALY_HIGH_MARGIN together with a positive pathology;
             - a red-flag symptom (`RED_FLAG_SYMPTOMS`, or a severe `SEVERE_FLAG_SYMPTOMS`) with an
               abnormal image (anomalous, deviating from normal, or any positive pathology).
    Moderate - anomaly score ≥ threshold; peak deviation from normal above the normal range (when the
               detector has a per-position model of normal features); any positive pathology; any text
               finding asserted present or uncertain; any contradiction; a red-flag symptom without an
               abnormal image.
    Low      - none of the above, with at least one stage's result available.
    Unknown  - no stage result at all (nothing to assess).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from medsight.nlp.lexicon import canonical_finding, related_findings

AGREEMENT_BOOST = 0.15
CONTRADICTION_PENALTY = 0.15
ANOMALY_TEMPERATURE = 0.05
ANOMALY_HIGH_MARGIN = 0.15
TEXT_STATUS_PROBABILITY = {"present": 0.9, "negated": 0.1, "uncertain": 0.5}
LOW_CONFIDENCE = 0.5
LOW_SOURCE_CONFIDENCE = 0.3
DEFAULT_THRESHOLD = 0.5

CRITICAL_FINDINGS = ("pneumothorax",)
RED_FLAG_SYMPTOMS = ("hemoptysis", "cyanosis", "hypoxia", "syncope")
SEVERE_FLAG_SYMPTOMS = ("dyspnea", "chest_pain", "tachypnea")

RISK_LEVELS = ("Low", "Moderate", "High")

AGREEMENT_RULE = (
    f"Image and text agree → fused p = min(1, p + {AGREEMENT_BOOST:.2f}); "
    f"text denies an image-positive finding → fused p = max(0, p − {CONTRADICTION_PENALTY:.2f}); "
    "otherwise fused p = image p."
)
RISK_RULE = (
    f"High: critical finding ({', '.join(CRITICAL_FINDINGS)}) positive, or anomaly ≥ threshold + "
    f"{ANOMALY_HIGH_MARGIN:.2f} with a positive pathology, or red-flag symptom "
    f"({', '.join(RED_FLAG_SYMPTOMS)}; severe {', '.join(SEVERE_FLAG_SYMPTOMS)}) with an abnormal image. "
    "Moderate: anomaly ≥ threshold, peak deviation from normal above the normal range, any positive "
    "pathology, any finding stated or hedged in the text, "
    "a contradiction, or a red-flag symptom alone. Low: otherwise."
)


def binary_entropy(p: float) -> float:
    """H(p) in bits, in [0, 1] (0 for p in {0, 1}, 1 for p = 0.5)."""
    p = min(1.0, max(0.0, float(p)))
    if p in (0.0, 1.0):
        return 0.0
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def confidence_of(p: float) -> float:
    """1 − H(p): 1 for a certain probability, 0 for a coin toss."""
    return 1.0 - binary_entropy(p)


def centre_on_threshold(p: float, threshold: float) -> float:
    """Map p so that its operating threshold sits at 0.5 (piecewise linear, monotone, 0→0, 1→1)."""
    p, t = min(1.0, max(0.0, float(p))), min(0.999, max(0.001, float(threshold)))
    return 0.5 * p / t if p < t else 0.5 + 0.5 * (p - t) / (1 - t)


def anomaly_probability(score: float, threshold: float) -> float:
    """Logistic of (score − threshold) / ANOMALY_TEMPERATURE: 0.5 at the threshold."""
    z = (float(score) - float(threshold)) / ANOMALY_TEMPERATURE
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))


@dataclass
class FindingComparison:
    """One finding as seen by the image classifier and by the text."""

    finding: str
    relation: str  # agreement | contradiction | uncertain | image_only | text_only | agree_absent
    message: str
    image_label: str | None = None
    image_p: float | None = None
    threshold: float | None = None
    image_positive: bool = False
    text_status: str | None = None
    text_finding: str | None = None
    text_evidence: list[str] = field(default_factory=list)
    text_source: str | None = None
    fused_p: float | None = None
    confidence_image: float | None = None
    confidence_fused: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FusionResult:
    """Agreement between image and text, uncertainty and risk. `to_dict()` is JSON-serialisable."""

    agreements: list[dict] = field(default_factory=list)
    contradictions: list[dict] = field(default_factory=list)
    uncertain: list[dict] = field(default_factory=list)
    unmentioned_image_findings: list[dict] = field(default_factory=list)
    text_only_findings: list[dict] = field(default_factory=list)
    findings: list[dict] = field(default_factory=list)
    fused_probabilities: dict[str, float] = field(default_factory=dict)
    confidence: dict[str, Any] = field(default_factory=dict)
    risk: dict[str, Any] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    rule: str = AGREEMENT_RULE

    def to_dict(self) -> dict:
        return asdict(self)


def _text_findings(nlp: dict | None, source: str) -> dict[str, dict]:
    """{canonical: {status, evidence, source}} from an NLP result dict (its findings summary or entities)."""
    if not nlp:
        return {}
    out: dict[str, dict] = {}
    rows = nlp.get("findings")
    if rows is None:  # an older/partial dict: rebuild the summary from entities
        rows = []
        for e in nlp.get("entities", []):
            if e.get("label") in ("FINDING", "DISEASE"):
                rows.append({"name": e.get("canonical", e.get("text", "")), "status": e.get("status", "present"),
                             "evidence": [e.get("sentence") or e.get("text", "")]})
    order = {"present": 0, "uncertain": 1, "negated": 2}
    for row in rows:
        name = canonical_finding(str(row.get("name", "")))
        status = row.get("status", "present")
        if status not in order:
            continue
        current = out.get(name)
        if current is None or order[status] < order[current["status"]]:
            out[name] = {"status": status, "evidence": list(row.get("evidence") or [])[:2], "source": source}
    return out


def _symptoms(*nlps: dict | None) -> list[dict]:
    found = []
    for nlp in nlps:
        for e in (nlp or {}).get("entities", []):
            if e.get("label") == "SYMPTOM" and e.get("status", "present") == "present":
                found.append(e)
    return found


def _quote(evidence: list[str]) -> str:
    return f" ('{evidence[0]}')" if evidence else ""


def _text_statement(finding: str, text: dict[str, dict]) -> tuple[str | None, dict | None]:
    """The text's statement about `finding`: exact name first, then related names (present/uncertain only)."""
    if finding in text:
        return finding, text[finding]
    for name in related_findings(finding)[1:]:
        if name in text and text[name]["status"] in ("present", "uncertain"):
            return name, text[name]
    return None, None


def _compare(pathology: dict, text: dict[str, dict], have_text: bool) -> tuple[list[FindingComparison], set[str]]:
    probs = pathology.get("probabilities") or {}
    thresholds = pathology.get("thresholds") or {}
    positives = set(pathology.get("positives") or [])
    rows: list[FindingComparison] = []
    used_text: set[str] = set()
    for label, p in probs.items():
        p = float(p)
        thr = float(thresholds.get(label, DEFAULT_THRESHOLD))
        positive = label in positives or p >= thr
        finding = canonical_finding(label)
        t_name, t = _text_statement(finding, text) if have_text else (None, None)
        if t_name:
            used_text.add(t_name)
        row = FindingComparison(finding=finding, relation="", message="", image_label=label, image_p=round(p, 4),
                                threshold=thr, image_positive=positive,
                                text_status=t["status"] if t else None, text_finding=t_name,
                                text_evidence=t["evidence"] if t else [], text_source=t["source"] if t else None)
        shown = f"{finding.replace('_', ' ')}"
        via = f" (as {t_name.replace('_', ' ')})" if t_name and t_name != finding else ""
        fused = p
        if positive:
            img = f"Image suggests {shown} (p={p:.2f} ≥ {thr:.2f})"
            if t is None:
                row.relation = "image_only"
                row.message = f"{img}; the text does not mention it." if have_text else f"{img}; no text to compare."
            elif t["status"] == "present":
                fused = min(1.0, p + AGREEMENT_BOOST)
                row.relation = "agreement"
                row.message = f"{img}; text confirms it{via}{_quote(t['evidence'])} → fused p={fused:.2f}."
            elif t["status"] == "negated":
                fused = max(0.0, p - CONTRADICTION_PENALTY)
                row.relation = "contradiction"
                row.message = f"{img}; text denies it{via}{_quote(t['evidence'])} → fused p={fused:.2f}."
            else:
                row.relation = "uncertain"
                row.message = f"{img}; text is uncertain{via}{_quote(t['evidence'])}."
        else:
            img = f"image p={p:.2f} < {thr:.2f}"
            if t is None:
                row.relation = "image_negative"
                row.message = f"Image does not suggest {shown} ({img})."
            elif t["status"] == "present":
                row.relation = "text_only"
                row.message = f"Text states {shown}{via}{_quote(t['evidence'])}; the image does not show it ({img})."
            elif t["status"] == "negated":
                row.relation = "agree_absent"
                row.message = f"Image and text agree: no {shown} ({img}){_quote(t['evidence'])}."
            else:
                row.relation = "uncertain"
                row.message = f"Text is uncertain about {shown}{via}{_quote(t['evidence'])}; {img}."
        row.fused_p = round(fused, 4)
        row.confidence_image = round(confidence_of(centre_on_threshold(p, thr)), 4)
        row.confidence_fused = round(confidence_of(centre_on_threshold(fused, thr)), 4)
        rows.append(row)
    return rows, used_text


def fuse(anomaly: dict | None, pathology: dict | None, nlp: dict | None,
         symptoms_nlp: dict | None = None) -> FusionResult:
    """Combine anomaly, pathology and text results into agreements, confidence and a risk level.

    Args:
        anomaly: `AnomalyResult.to_dict()` ({fused_score, threshold, is_anomalous, ...}) or None.
        pathology: pathology `to_dict()` ({probabilities, thresholds, positives, ...}) or None.
        nlp: `NLPResult.to_dict()` of the report / clinical text, or None.
        symptoms_nlp: `NLPResult.to_dict()` of a separate symptom text, or None; its findings count as text
            statements and its symptoms feed the red-flag rule.

    Returns:
        `FusionResult` (see the module docstring for every rule and constant).
    """
    result = FusionResult()
    anomaly = anomaly or None
    pathology = pathology if pathology and pathology.get("probabilities") else None
    if anomaly is None:
        result.missing.append("Anomaly detector result missing (stage skipped or failed): anomaly rules not applied.")
    if pathology is None:
        result.missing.append("Pathology classifier result missing (stage skipped or failed): no image findings to compare.")
    if not nlp and not symptoms_nlp:
        result.missing.append("No text analysis (no report or clinical text): image findings cannot be checked against text.")

    text = _text_findings(symptoms_nlp, "symptoms")
    text.update(_text_findings(nlp, "text"))  # the main text's statement wins over the symptom note's
    have_text = bool(nlp or symptoms_nlp)

    rows: list[FindingComparison] = []
    used: set[str] = set()
    if pathology is not None:
        rows, used = _compare(pathology, text, have_text)
        result.fused_probabilities = {r.image_label: r.fused_p for r in rows}
    for name, t in text.items():
        if name in used or t["status"] == "negated":
            continue
        assessed = pathology is not None and any(r.finding == name for r in rows)
        if assessed:
            continue
        rows.append(FindingComparison(
            finding=name, relation="text_only" if t["status"] == "present" else "uncertain",
            message=(f"Text {'states' if t['status'] == 'present' else 'is uncertain about'} {name.replace('_', ' ')}"
                     f"{_quote(t['evidence'])}; not assessed by the image model."),
            text_status=t["status"], text_finding=name, text_evidence=t["evidence"], text_source=t["source"],
        ))

    for row in rows:
        d = row.to_dict()
        if row.relation in ("agreement", "agree_absent"):
            result.agreements.append(d)
        elif row.relation == "contradiction":
            result.contradictions.append(d)
        elif row.relation == "uncertain":
            result.uncertain.append(d)
        elif row.relation == "image_only":
            result.unmentioned_image_findings.append(d)
        elif row.relation == "text_only":
            result.text_only_findings.append(d)
    # Absence agreements are listed after the positive ones: they matter less to the reader.
    result.agreements.sort(key=lambda d: d["relation"] != "agreement")
    result.findings = [r.to_dict() for r in rows]
    result.confidence = _confidence(anomaly, rows, text, pathology is not None, bool(result.contradictions))
    available = {"anomaly": anomaly is not None, "pathology": pathology is not None, "text": have_text}
    result.risk = _risk(anomaly, rows, text, _symptoms(nlp, symptoms_nlp), result, available)
    return result


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _confidence(anomaly: dict | None, rows: list[FindingComparison], text: dict[str, dict],
                have_pathology: bool, contradiction: bool) -> dict:
    sources: dict[str, float | None] = {"anomaly": None, "pathology": None, "text": None}
    details: dict[str, Any] = {}
    if anomaly is not None and anomaly.get("fused_score") is not None:
        q = anomaly_probability(anomaly["fused_score"], anomaly.get("threshold", 0.5))
        sources["anomaly"] = round(confidence_of(q), 4)
        details["anomaly_probability"] = round(q, 4)
    image_rows = [r for r in rows if r.image_p is not None]
    fused_path = None
    if have_pathology and image_rows:
        sources["pathology"] = _mean([r.confidence_image for r in image_rows])
        fused_path = _mean([r.confidence_fused for r in image_rows])
        least = min(image_rows, key=lambda r: r.confidence_image)
        details["least_confident_label"] = {"label": least.image_label, "p": least.image_p,
                                            "threshold": least.threshold, "confidence": least.confidence_image}
    if text:
        sources["text"] = _mean([confidence_of(TEXT_STATUS_PROBABILITY[t["status"]]) for t in text.values()])
    fused_parts = [v for v in (sources["anomaly"], fused_path, sources["text"]) if v is not None]
    fused = _mean(fused_parts)
    reasons = []
    if fused is None:
        reasons.append("no result to judge confidence from")
    elif fused < LOW_CONFIDENCE:
        reasons.append(f"fused confidence {fused:.2f} < {LOW_CONFIDENCE:.2f}")
    for name, value in sources.items():
        if value is not None and value < LOW_SOURCE_CONFIDENCE:
            reasons.append(f"{name} confidence {value:.2f} < {LOW_SOURCE_CONFIDENCE:.2f}")
    if contradiction:
        reasons.append("image and text contradict each other")
    return {
        "sources": sources,
        "fused": fused,
        "low_confidence": bool(reasons),
        "reason": "; ".join(reasons),
        "details": details,
        "method": "1 − binary entropy (bits) of each probability, pathology re-centred on its threshold; "
                  "fused = mean of available sources using fused pathology probabilities",
    }


def _risk(anomaly: dict | None, rows: list[FindingComparison], text: dict[str, dict], symptoms: list[dict],
          result: FusionResult, available: dict[str, bool]) -> dict:
    high: list[str] = []
    moderate: list[str] = []
    positives = [r for r in rows if r.image_p is not None and r.fused_p is not None and r.fused_p >= (r.threshold or DEFAULT_THRESHOLD)]
    image_positive_labels = [r for r in rows if r.image_positive]
    score = thr = None
    anomalous = False
    if anomaly is not None and anomaly.get("fused_score") is not None:
        score, thr = float(anomaly["fused_score"]), float(anomaly.get("threshold", 0.5))
        anomalous = bool(anomaly.get("is_anomalous", score >= thr)) or score >= thr
    deviating = anomaly is not None and bool(anomaly.get("deviation_unusual"))
    abnormal_image = anomalous or deviating or bool(image_positive_labels)

    for r in positives:
        if r.finding in CRITICAL_FINDINGS:
            high.append(f"Critical finding on the image: {r.finding} (fused p={r.fused_p:.2f} ≥ {r.threshold:.2f}).")
    for name, t in text.items():
        if name in CRITICAL_FINDINGS and t["status"] == "present":
            high.append(f"Critical finding stated in the {t['source']}: {name}{_quote(t['evidence'])}.")
    if score is not None and score >= thr + ANOMALY_HIGH_MARGIN and image_positive_labels:
        labels = ", ".join(r.finding for r in image_positive_labels)
        high.append(f"Anomaly score {score:.3f} ≥ threshold {thr:.3f} + {ANOMALY_HIGH_MARGIN:.2f} with positive pathology ({labels}).")
    flags = []
    for s in symptoms:
        name = s.get("canonical", "")
        if name in RED_FLAG_SYMPTOMS or (name in SEVERE_FLAG_SYMPTOMS and s.get("severity") == "severe"):
            flags.append(f"{s.get('text', name)}")
    flags = list(dict.fromkeys(flags))
    if flags and abnormal_image:
        high.append(f"Red-flag symptom ({', '.join(flags)}) with an abnormal image.")
    elif flags:
        moderate.append(f"Red-flag symptom ({', '.join(flags)}); the image result is "
                        f"{'not abnormal' if (available['anomaly'] or available['pathology']) else 'missing'}.")

    if score is not None and anomalous:
        moderate.append(f"Anomaly score {score:.3f} ≥ threshold {thr:.3f}.")
    if deviating:
        moderate.append(f"Peak deviation from normal {float(anomaly['peak_deviation']):.1f} above the normal range "
                        f"(≤ {float(anomaly['deviation_threshold']):.1f} in 95 % of normal images).")
    for r in image_positive_labels:
        moderate.append(f"Pathology positive: {r.finding} (p={r.image_p:.2f} ≥ {r.threshold:.2f}).")
    for name, t in text.items():
        if t["status"] in ("present", "uncertain") and name not in CRITICAL_FINDINGS:
            moderate.append(f"Text {'states' if t['status'] == 'present' else 'is uncertain about'} "
                            f"{name.replace('_', ' ')}{_quote(t['evidence'])}.")
    for c in result.contradictions:
        moderate.append(f"Contradiction: {c['message']}")

    if high:
        level, reasons = "High", high + moderate
    elif moderate:
        level, reasons = "Moderate", moderate
    elif available["anomaly"] or available["pathology"] or available["text"]:
        level, reasons = "Low", []
        if score is not None:
            reasons.append(f"Anomaly score {score:.3f} < threshold {thr:.3f}.")
        if available["pathology"]:
            reasons.append("No pathology label above its operating threshold.")
        if available["text"]:
            reasons.append("No finding stated or hedged in the text.")
    else:
        level, reasons = "Unknown", ["No image or text result was available; risk not assessed."]
    if result.missing and level != "Unknown":
        reasons = reasons + [f"Not considered: {m}" for m in result.missing]
    return {"level": level, "reasons": reasons, "rule": RISK_RULE, "red_flag_symptoms": flags}
