"""Short radiology reports that match a synthetic phantom's ground truth.

Wording varies with the seed (several phrasings per sentence), positives carry side, lobe and size,
and absent findings are stated as negatives, as in real reports. The IMPRESSION always uses the
canonical term for each finding (consolidation, nodule or mass, pleural effusion, pneumothorax,
cardiomegaly) so label extraction can be checked against it.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

HEADER = "EXAMINATION: Chest radiograph, PA view. SYNTHETIC PHANTOM (not a patient image)."


def _side_word(laterality: str) -> str:
    return {"right": "right", "left": "left", "bilateral": "bilateral"}.get(laterality, "")


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _consolidation(rng, lat: str, d: dict) -> tuple[str, str]:
    sites = d.get("sites", [])
    size = d.get("size", "")
    if lat == "bilateral" or len(sites) > 1:
        where = " and ".join(f"{s['side']} {s['lobe']}" for s in sites)
        finding = rng.choice([
            f"Patchy airspace consolidation in the {where}.",
            f"Bilateral areas of consolidation involving the {where}.",
        ])
        return finding, "Bilateral consolidation, compatible with multifocal pneumonia in the appropriate clinical setting."
    s = sites[0]
    lobe = s["lobe"]
    size_word = {"small": "Small focal", "moderate": "Moderate", "large": "Extensive"}.get(size, "")
    finding = str(rng.choice([
        f"{size_word} airspace consolidation in the {s['side']} {lobe}.",
        f"{size_word} area of consolidation projecting over the {s['side']} {s['zone']}, in keeping with the {lobe}.",
        f"{size_word} opacity with air bronchograms in the {s['side']} {lobe}, consistent with consolidation.",
    ]))
    lobe_short = "lingular" if lobe == "lingula" else lobe.replace(" lobe", "") + " lobe"
    impression = _cap(f"{s['side']} {lobe_short} consolidation.")
    return finding, impression


def _nodule(rng, lat: str, d: dict) -> tuple[str, str]:
    kind, cm, lobe = d.get("kind", "nodule"), d.get("diameter_cm", 1.0), d.get("lobe", "")
    size = f"{cm:.1f} cm" if cm >= 1.0 else f"{int(round(cm * 10))} mm"
    adjective = "well-circumscribed" if rng.random() < 0.5 else "rounded"
    finding = str(rng.choice([
        f"{_cap(adjective)} {size} {kind} in the {lat} {lobe}.",
        f"There is a {adjective} {kind} measuring approximately {size} in the {lat} {lobe}.",
    ]))
    follow = " Recommend CT chest for further characterisation." if kind == "mass" or cm >= 0.8 else ""
    impression = _cap(f"{size} {lat} {lobe} {kind}.{follow}")
    return finding, impression


def _effusion(rng, lat: str, d: dict) -> tuple[str, str]:
    size = d.get("size", "small")
    if lat == "bilateral":
        finding = str(rng.choice([
            f"Bilateral {size} pleural effusions with blunting of both costophrenic angles.",
            f"{_cap(size)} bilateral pleural effusions, with meniscus at both lung bases.",
        ]))
        return finding, _cap(f"{size} bilateral pleural effusions.")
    finding = str(rng.choice([
        f"{_cap(size)} {lat} pleural effusion with blunting of the {lat} costophrenic angle.",
        f"Meniscus-shaped opacity at the {lat} lung base, in keeping with a {size} {lat} pleural effusion.",
        f"{_cap(size)} {lat} pleural effusion obscuring the {lat} hemidiaphragm.",
    ]))
    return finding, _cap(f"{size} {lat} pleural effusion.")


def _pneumothorax(rng, lat: str, d: dict) -> tuple[str, str]:
    size, gap = d.get("size", "small"), d.get("apical_gap_cm", 1.0)
    finding = str(rng.choice([
        f"Visible {lat} visceral pleural line with absent lung markings peripherally, in keeping with a {size} {lat} pneumothorax.",
        f"{_cap(size)} {lat} apical pneumothorax, measuring approximately {gap:.1f} cm at the apex.",
    ]))
    return finding, _cap(f"{size} {lat} pneumothorax. No mediastinal shift.")


def _cardiomegaly(rng, lat: str, d: dict) -> tuple[str, str]:
    ctr, size = d.get("ctr", 0.6), d.get("size", "mild")
    finding = str(rng.choice([
        f"The cardiac silhouette is enlarged (cardiothoracic ratio approximately {ctr:.2f}).",
        f"{_cap(size)} enlargement of the cardiac silhouette, cardiothoracic ratio {ctr:.2f}.",
    ]))
    return finding, _cap(f"{size} cardiomegaly.")


_WRITERS = {
    "consolidation": _consolidation,
    "nodule": _nodule,
    "effusion": _effusion,
    "pneumothorax": _pneumothorax,
    "cardiomegaly": _cardiomegaly,
}


def compose_report(labels: Sequence[str], laterality: Mapping[str, str], details: Mapping[str, dict],
                   seed: int) -> str:
    """Write a FINDINGS / IMPRESSION report for a phantom's ground truth.

    Args:
        labels: present findings (canonical names from ``FINDINGS``); empty for a normal study.
        laterality: patient side per finding.
        details: per-finding description (lobe, zone, size words, measurements).
        seed: phrasing choice; the same inputs and seed give the same text.

    Returns:
        The report text with "FINDINGS:" and "IMPRESSION:" sections.
    """
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 7])
    present = set(labels)
    findings: list[str] = []
    impression: list[str] = []
    for name in labels:
        f, i = _WRITERS[name](rng, laterality.get(name, "n/a"), dict(details.get(name, {})))
        findings.append(f)
        impression.append(i)

    # Negatives for what is absent, worded the way radiologists usually group them.
    if "consolidation" not in present:
        if not present & {"nodule", "effusion", "pneumothorax"}:
            findings.append(str(rng.choice([
                "The lungs are clear.", "No focal consolidation.", "The lungs are clear without focal airspace disease.",
            ])))
        else:
            findings.append("No focal consolidation.")
    elif "nodule" not in present and rng.random() < 0.5:
        findings.append("No discrete pulmonary nodule.")
    if "effusion" not in present and "pneumothorax" not in present:
        findings.append(str(rng.choice(["No pleural effusion or pneumothorax.", "No pneumothorax or pleural effusion."])))
    elif "effusion" not in present:
        findings.append("No pleural effusion.")
    elif "pneumothorax" not in present:
        findings.append("No pneumothorax.")
    if "cardiomegaly" not in present:
        findings.append(str(rng.choice([
            "Heart size is normal.", "The cardiomediastinal silhouette is within normal limits.",
            "Normal heart size.",
        ])))
    findings.append(str(rng.choice([
        "No acute osseous abnormality.", "The visualised bones are unremarkable.", "Bony thorax is intact.",
    ])))

    if not labels:
        impression = [str(rng.choice([
            "No acute cardiopulmonary abnormality.", "Normal chest radiograph.", "No acute cardiopulmonary process.",
        ]))]
    body = " ".join(findings)
    if len(impression) == 1:
        imp = impression[0]
    else:
        imp = "\n".join(f"{k}. {s}" for k, s in enumerate(impression, 1))
    return f"{HEADER}\n\nFINDINGS: {body}\n\nIMPRESSION: {imp}"
