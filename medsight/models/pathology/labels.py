"""One label vocabulary for the classifier, the fusion rules, the NLP and the UI: torchxrayvision's names.

The demo tier predicts the five findings the synthetic phantoms carry; each maps to the torchxrayvision
label of the same meaning, so results of either tier can be compared and fused by name.
"""

from __future__ import annotations

#: The 18 outputs of torchxrayvision's ``densenet121-res224-all``, in its output order.
XRV_LABELS: tuple[str, ...] = (
    "Atelectasis", "Consolidation", "Infiltration", "Pneumothorax", "Edema", "Emphysema", "Fibrosis",
    "Effusion", "Pneumonia", "Pleural_Thickening", "Cardiomegaly", "Nodule", "Mass", "Hernia",
    "Lung Lesion", "Fracture", "Lung Opacity", "Enlarged Cardiomediastinum",
)

#: Phantom finding name (``medsight.synthetic.FINDINGS``) → canonical label.
PHANTOM_FINDING_TO_LABEL: dict[str, str] = {
    "consolidation": "Consolidation",
    "nodule": "Nodule",
    "effusion": "Effusion",
    "pneumothorax": "Pneumothorax",
    "cardiomegaly": "Cardiomegaly",
}

#: Labels of the demo tier, in its output order.
DEMO_LABELS: tuple[str, ...] = tuple(PHANTOM_FINDING_TO_LABEL.values())

#: Readable names for the UI and the PDF.
DISPLAY_NAMES: dict[str, str] = {label: label.replace("_", " ") for label in XRV_LABELS}
DISPLAY_NAMES.update({"Effusion": "Pleural effusion", "Nodule": "Nodule", "Enlarged Cardiomediastinum": "Enlarged cardiomediastinum"})

#: Labels a reader treats as one finding when comparing image and text (a "mass" in a report agrees with
#: a "Nodule" output and vice versa). Keyed by every member.
RELATED_LABELS: dict[str, tuple[str, ...]] = {}
for _group in (("Nodule", "Mass", "Lung Lesion"), ("Consolidation", "Pneumonia", "Infiltration", "Lung Opacity"),
               ("Cardiomegaly", "Enlarged Cardiomediastinum")):
    for _member in _group:
        RELATED_LABELS[_member] = _group

#: Lower-case words and phrases → canonical label.
LABEL_SYNONYMS: dict[str, str] = {label.lower().replace("_", " "): label for label in XRV_LABELS}
LABEL_SYNONYMS.update({
    "pleural effusion": "Effusion",
    "effusions": "Effusion",
    "hydrothorax": "Effusion",
    "pulmonary nodule": "Nodule",
    "lung nodule": "Nodule",
    "nodules": "Nodule",
    "nodule/mass": "Nodule",
    "lung mass": "Mass",
    "pulmonary mass": "Mass",
    "airspace disease": "Consolidation",
    "airspace opacity": "Lung Opacity",
    "opacity": "Lung Opacity",
    "collapse": "Atelectasis",
    "enlarged heart": "Cardiomegaly",
    "cardiac enlargement": "Cardiomegaly",
    "heart enlargement": "Cardiomegaly",
    "ptx": "Pneumothorax",
    "pulmonary edema": "Edema",
    "oedema": "Edema",
    "pulmonary oedema": "Edema",
    "pleural thickening": "Pleural_Thickening",
    "rib fracture": "Fracture",
    "widened mediastinum": "Enlarged Cardiomediastinum",
})
LABEL_SYNONYMS.update({finding: label for finding, label in PHANTOM_FINDING_TO_LABEL.items()})


def canonical_label(name: str) -> str:
    """Canonical (torchxrayvision) label for a label, phantom finding or common synonym.

    Args:
        name: e.g. "pleural effusion", "effusion", "Effusion", "Pleural_Thickening".

    Returns:
        The canonical label, e.g. "Effusion".

    Raises:
        ValueError: when the name is not a known label or synonym.
    """
    key = " ".join(str(name).strip().lower().replace("_", " ").split())
    if key in LABEL_SYNONYMS:
        return LABEL_SYNONYMS[key]
    raise ValueError(f"Unknown pathology label {name!r}; known labels: {', '.join(XRV_LABELS)}.")


def display_name(label: str) -> str:
    """Readable name of a canonical label (unknown names are returned unchanged)."""
    return DISPLAY_NAMES.get(label, label)
