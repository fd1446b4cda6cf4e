"""Reference labels for the Indiana/OpenI reports from the MeSH major terms their human indexers assigned.

Each Indiana report carries MeSH major terms written as "Heading/qualifier/qualifier" ("Opacity/lung/base/
left", "Cardiomegaly/borderline", "normal"). They were assigned by indexers at the National Library of
Medicine, independently of this product, so they serve as an external reference for what the report says.

`MESH_MAPPING` (version `MESH_MAPPING_VERSION`) maps headings to the product's canonical findings. The
definition choices, written down because they decide the figures:

- Consolidation = "Consolidation" and "Airspace Disease". The product files "airspace opacity" under
  consolidation, indexers code it "Opacity", which is not mapped (it spans atelectasis, scarring, edema,
  nodules...), so such a report counts against consolidation precision.
- Edema = "Pulmonary Edema", "Pulmonary Congestion" (vascular congestion / engorgement) and
  "Heart Failure" (the product reads "CHF" / "heart failure" as edema).
- Emphysema = "Emphysema", "Pulmonary Emphysema", "Bullous Emphysema", "Blister" (bullae); not
  "Subcutaneous Emphysema" / "Mediastinal Emphysema" (air outside the lung) and not "Pulmonary Disease,
  Chronic Obstructive" (a clinical diagnosis, indexed for "hyperinflation consistent with COPD").
- Granuloma = "Calcified Granuloma", "Granuloma", "Granulomatous Disease". A "calcified nodule" and
  "nodular densities consistent with granulomatous disease" are granulomas (indexers code them so), not
  nodules; "Nodule" is kept for nodules not called calcified or granulomatous.
- Pneumothorax includes "Hydropneumothorax" and "Hemopneumothorax"; Effusion is "Pleural Effusion" only
  (not "Pericardial Effusion"); Hernia is "Hernia, Hiatal" / "Hernia, Diaphragmatic" / "Hernia".
- A heading counts whatever its qualifiers ("Cardiomegaly/borderline" is cardiomegaly); qualifiers are
  kept in the evaluation's error listing.
- A report is normal when its only term is "normal". Reports indexed "No Indexing" have no reference
  and are left out.

Strict scoring counts a finding the product reads as "present"; lenient scoring also counts "uncertain".
"""

from __future__ import annotations

MESH_MAPPING_VERSION = "1.0"

# canonical finding → MeSH headings (the part before the first "/"), compared case-insensitively.
MESH_MAPPING: dict[str, tuple[str, ...]] = {
    "atelectasis": ("Pulmonary Atelectasis",),
    "cardiomegaly": ("Cardiomegaly",),
    "consolidation": ("Consolidation", "Airspace Disease"),
    "edema": ("Pulmonary Edema", "Pulmonary Congestion", "Heart Failure"),
    "effusion": ("Pleural Effusion",),
    "emphysema": ("Emphysema", "Pulmonary Emphysema", "Bullous Emphysema", "Blister"),
    "fracture": ("Fractures, Bone",),
    "granuloma": ("Calcified Granuloma", "Granuloma", "Granulomatous Disease"),
    "hernia": ("Hernia, Hiatal", "Hernia, Diaphragmatic", "Hernia"),
    "mass": ("Mass",),
    "nodule": ("Nodule",),
    "pneumonia": ("Pneumonia",),
    "pneumothorax": ("Pneumothorax", "Hydropneumothorax", "Hemopneumothorax"),
}
MESH_FINDINGS: tuple[str, ...] = tuple(MESH_MAPPING)
NORMAL_HEADING = "normal"
UNINDEXED_HEADING = "no indexing"

_HEADING_TO_FINDING = {h.lower(): f for f, headings in MESH_MAPPING.items() for h in headings}


def heading(term: str) -> str:
    """The MeSH heading of a major term ("Opacity/lung/base/left" → "Opacity")."""
    return term.split("/", 1)[0].strip()


def mesh_findings(terms: list[str]) -> set[str]:
    """The canonical findings (of `MESH_FINDINGS`) that a report's MeSH major terms name."""
    return {_HEADING_TO_FINDING[h] for h in (heading(t).lower() for t in terms) if h in _HEADING_TO_FINDING}


def mesh_normal(terms: list[str]) -> bool:
    """True when the indexers coded the report as normal (its only term is "normal")."""
    headings = {heading(t).lower() for t in terms}
    return headings == {NORMAL_HEADING}


def mesh_indexed(terms: list[str]) -> bool:
    """False for reports without a reference ("No Indexing" or no terms)."""
    headings = {heading(t).lower() for t in terms}
    return bool(headings) and UNINDEXED_HEADING not in headings
