"""Deterministic engine: the always-available tier of the language-model layer.

It answers from the structured findings only, by the documented rules below, and never invents findings.

Differential rules (`differential_from_findings`):
  1. Each finding the image models call positive (probability ≥ its threshold) contributes the conditions in
     `FINDING_TO_CONDITIONS` with weight × probability. A finding near its threshold (within `NEAR_MARGIN`
     below) contributes at half weight, flagged as uncertain.
  2. Symptom keywords in the clinician's text add the boosts in `SYMPTOM_BOOSTS`, but only to conditions
     already supported by at least one image finding (symptoms alone never create a differential entry).
  3. Conditions are ranked by total score; scores are normalised to sum to 1 across the list (a ranking aid,
     not a probability of disease). With no positive finding the list holds one entry: "no acute
     cardiopulmonary abnormality detected by the models".
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

NEAR_MARGIN = 0.10

# canonical finding → (condition, weight, why)
FINDING_TO_CONDITIONS: dict[str, list[tuple[str, float, str]]] = {
    "consolidation": [("Pneumonia", 1.0, "airspace consolidation"),
                      ("Aspiration", 0.4, "airspace consolidation"),
                      ("Pulmonary haemorrhage or oedema (alveolar)", 0.25, "airspace filling")],
    "pneumonia": [("Pneumonia", 1.0, "pneumonia pattern")],
    "lung_opacity": [("Pneumonia", 0.6, "lung opacity"), ("Atelectasis", 0.4, "lung opacity")],
    "infiltration": [("Pneumonia", 0.6, "infiltrate"), ("Pulmonary oedema", 0.3, "infiltrate")],
    "atelectasis": [("Atelectasis", 1.0, "volume loss"), ("Obstructing lesion", 0.2, "lobar collapse")],
    "nodule": [("Pulmonary nodule — benign (granuloma, hamartoma)", 0.6, "solitary nodule"),
               ("Pulmonary nodule — malignancy to exclude", 0.5, "solitary nodule")],
    "mass": [("Lung mass — malignancy to exclude", 1.0, "mass")],
    "lung_lesion": [("Lung lesion — further characterisation needed", 0.8, "lung lesion")],
    "effusion": [("Pleural effusion — heart failure", 0.5, "pleural fluid"),
                 ("Pleural effusion — parapneumonic", 0.5, "pleural fluid"),
                 ("Pleural effusion — malignant", 0.25, "pleural fluid")],
    "pneumothorax": [("Pneumothorax", 1.2, "pleural air: urgent clinical correlation")],
    "cardiomegaly": [("Cardiomegaly — heart failure / cardiomyopathy", 0.8, "enlarged cardiac silhouette"),
                     ("Pericardial effusion", 0.3, "enlarged cardiac silhouette")],
    "enlarged_cardiomediastinum": [("Mediastinal widening", 0.7, "enlarged cardiomediastinum")],
    "edema": [("Pulmonary oedema — cardiogenic", 1.0, "oedema pattern")],
    "emphysema": [("COPD / emphysema", 1.0, "hyperlucency")],
    "fibrosis": [("Interstitial lung disease", 1.0, "fibrotic change")],
    "pleural_thickening": [("Pleural thickening — prior inflammation or asbestos exposure", 0.7, "pleural thickening")],
    "fracture": [("Rib fracture", 1.0, "cortical break")],
    "hernia": [("Hiatal hernia", 1.0, "retrocardiac lucency")],
}

# symptom regex → {condition: boost}
SYMPTOM_BOOSTS: list[tuple[str, dict[str, float]]] = [
    (r"\b(fever|febrile|pyrexi|chills|rigors|productive cough|sputum)\w*", {
        "Pneumonia": 0.5, "Pleural effusion — parapneumonic": 0.4, "Aspiration": 0.2}),
    (r"\bcough\w*", {"Pneumonia": 0.2}),
    (r"\b(orthopn|oedema|edema|ankle swelling|leg swelling|heart failure|chf|paroxysmal nocturnal)\w*", {
        "Pleural effusion — heart failure": 0.5, "Cardiomegaly — heart failure / cardiomyopathy": 0.4,
        "Pulmonary oedema — cardiogenic": 0.5}),
    (r"\b(dyspn|shortness of breath|breathless|short of breath)\w*", {
        "Pneumothorax": 0.2, "Pulmonary oedema — cardiogenic": 0.2, "Pleural effusion — heart failure": 0.1}),
    (r"\b(sudden|acute onset|pleuritic|trauma|fall|collision|stab)\w*", {"Pneumothorax": 0.5, "Rib fracture": 0.4}),
    (r"\b(weight loss|night sweats|smok\w*|haemoptysis|hemoptysis)\b", {
        "Pulmonary nodule — malignancy to exclude": 0.5, "Lung mass — malignancy to exclude": 0.5,
        "Pleural effusion — malignant": 0.3}),
    (r"\b(aspirat\w*|dysphagia|vomit\w*)\b", {"Aspiration": 0.5}),
]


@dataclass
class DifferentialItem:
    """One ranked differential entry.

    Attributes:
        condition: condition name.
        score: normalised ranking score (sums to 1 over the list; not a probability of disease).
        supporting: findings and symptoms that support it.
        uncertain: supported only by findings near their threshold.
    """

    condition: str
    score: float
    supporting: list[str] = field(default_factory=list)
    uncertain: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def canonical(name: str) -> str:
    """Canonical finding name ("Pleural_Thickening" → "pleural_thickening", "Lung Opacity" → "lung_opacity")."""
    try:
        from medsight.nlp import canonical_finding  # the NLP lexicon knows synonyms

        value = canonical_finding(name)
        if value:
            return value
    except Exception:  # noqa: BLE001 - NLP stack absent or name unknown: fall back to normalisation
        pass
    key = re.sub(r"[\s\-]+", "_", str(name).strip().lower())
    return {"pleural_effusion": "effusion", "enlarged_heart": "cardiomegaly"}.get(key, key)


def model_findings(analysis: dict | None) -> dict[str, dict]:
    """Per-finding model evidence from an analysis dict (`AnalysisResult.to_dict()` shape).

    Returns:
        {canonical finding: {"probability", "threshold", "positive", "near", "label", "laterality"}}.
    """
    pathology = (analysis or {}).get("pathology") or {}
    labels = list(pathology.get("labels") or [])
    probabilities = pathology.get("probabilities") or {}
    thresholds = pathology.get("thresholds") or {}
    positives = set(pathology.get("positives") or [])
    sides = pathology.get("laterality") or {}
    if isinstance(probabilities, list):
        probabilities = dict(zip(labels, probabilities))
    if isinstance(thresholds, list):
        thresholds = dict(zip(labels, thresholds))
    if isinstance(thresholds, (int, float)):
        thresholds = {label: float(thresholds) for label in labels}
    out: dict[str, dict] = {}
    for label in labels or list(probabilities):
        if label not in probabilities:
            continue
        p = float(probabilities[label])
        t = float(thresholds.get(label, 0.5))
        positive = (label in positives) if positives or "positives" in pathology else p >= t
        out[canonical(label)] = {"label": label, "probability": round(p, 4), "threshold": round(t, 4),
                                 "positive": bool(positive), "near": (not positive) and p >= t - NEAR_MARGIN,
                                 "laterality": sides.get(label) or sides.get(canonical(label))}
    return out


def differential_from_findings(findings: dict, symptoms: str = "") -> list[DifferentialItem]:
    """Ranked differential by the module's documented rules.

    Args:
        findings: an analysis dict (with "pathology") or the output of `model_findings`.
        symptoms: free text from the clinician.
    """
    evidence = findings if findings and all(isinstance(v, dict) and "probability" in v for v in findings.values()) \
        else model_findings(findings)
    scores: dict[str, float] = {}
    support: dict[str, list[str]] = {}
    certain: dict[str, bool] = {}
    for name, ev in evidence.items():
        if not (ev["positive"] or ev["near"]):
            continue
        factor = 1.0 if ev["positive"] else 0.5
        for condition, weight, why in FINDING_TO_CONDITIONS.get(name, []):
            scores[condition] = scores.get(condition, 0.0) + weight * ev["probability"] * factor
            support.setdefault(condition, []).append(f"{name.replace('_', ' ')} p={ev['probability']:.2f} ({why})")
            certain[condition] = certain.get(condition, False) or bool(ev["positive"])
    if not scores:
        return [DifferentialItem("No acute cardiopulmonary abnormality detected by the models", 1.0,
                                 ["no finding at or near its threshold"])]
    text = (symptoms or "").lower()
    for pattern, boosts in SYMPTOM_BOOSTS:
        match = re.search(pattern, text)
        if not match:
            continue
        for condition, boost in boosts.items():
            if condition in scores:  # symptoms re-rank, they never add conditions
                scores[condition] += boost
                support[condition].append(f"symptom: {match.group(0)}")
    total = sum(scores.values())
    items = [DifferentialItem(c, round(s / total, 3), support[c], not certain[c]) for c, s in scores.items()]
    return sorted(items, key=lambda item: -item.score)


def summarise_findings(findings: dict) -> str:
    """One plain sentence per model finding at or near threshold (the rules tier's free text)."""
    evidence = model_findings(findings)
    lines = []
    for name, ev in sorted(evidence.items(), key=lambda kv: -kv[1]["probability"]):
        if ev["positive"]:
            lines.append(f"The image model flags {name.replace('_', ' ')} (probability {ev['probability']:.2f}, "
                         f"threshold {ev['threshold']:.2f}).")
        elif ev["near"]:
            lines.append(f"{name.replace('_', ' ').capitalize()} is just below its threshold "
                         f"({ev['probability']:.2f} vs {ev['threshold']:.2f}).")
    anomaly = (findings or {}).get("anomaly") or {}
    if "fused_score" in anomaly:
        verdict = "above" if anomaly.get("is_anomalous") else "below"
        lines.append(f"The anomaly score is {float(anomaly['fused_score']):.3f}, {verdict} its threshold "
                     f"{float(anomaly.get('threshold', 0)):.3f}.")
    return " ".join(lines) or "No model finding reaches its threshold."
