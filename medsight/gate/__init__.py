"""Input gate: is an ingested study a frontal chest radiograph the chest X-ray models should read?

Run before any image model, on every path (Analyze page, batch CLI, API). :func:`check_study`
runs every check and returns a :class:`GateDecision`; the first failing check, in the order
below, gives the decision's ``code`` and ``reason``:

1. DICOM header (``source_format == "dicom"``): Modality must be a plain radiograph (CR/DX; a
   missing Modality falls through to the content check); BodyPartExamined, when stated, must not
   name another body part; ViewPosition / PatientOrientation / View Code must not say lateral or
   oblique; one frame only.
2. Picture form (all formats): not a colour picture (Hasler–Süsstrunk colourfulness measured by
   ingest before the luminance conversion), short side at least :data:`MIN_SHORT_SIDE` pixels,
   aspect ratio at most :data:`MAX_ASPECT_RATIO`, not blank, and (PNG/JPEG) not a screenshot
   (large exactly-flat areas).
3. Image content (all formats): the layout of a frontal chest film — see
   :mod:`medsight.gate.content`; ``content_score`` is the layout correlation. When only the
   picture's negative has that layout, the code is "inverted" (an export with inverted greyscale).

The gate refuses only what is confidently not a frontal chest film: its content thresholds sit
well below every chest film measured (``python -m training.evaluate_gate``, figures in
``benchmarks/results/gate.json`` and the README section "Input gate"). A refusal can be
overridden by a user (:meth:`GateDecision.overridden`), which keeps the code and reason.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medsight.gate import content as _content

__all__ = [
    "GATE_VERSION",
    "GateDecision",
    "check_study",
    "content_looks_like_chest",
    "ACCEPTED_MODALITIES",
    "MIN_SHORT_SIDE",
    "MAX_ASPECT_RATIO",
    "COLOURFULNESS_LIMIT",
    "CHROMATIC_FRACTION_LIMIT",
    "SCREENSHOT_FLAT_FRACTION",
    "LAYOUT_CORRELATION_MIN",
    "LUNG_CONTRAST_MIN",
    "SYMMETRY_MIN",
    "EDGE_AIR_MAX",
]

#: Changes whenever a rule or threshold changes, so a stored decision says which rules made it.
GATE_VERSION = "1"

#: Modalities of plain projection radiographs (DR and RG are retired / digitised-film codes).
ACCEPTED_MODALITIES = frozenset({"CR", "DX", "DR", "RG"})

#: What to call each refused modality in a refusal ("This is a CT image (Modality CT) ...").
MODALITY_NAMES: dict[str, str] = {
    "CT": "a CT image",
    "MR": "an MR image",
    "US": "an ultrasound image",
    "NM": "a nuclear medicine image",
    "PT": "a PET image",
    "MG": "a mammogram",
    "XA": "an X-ray angiography image",
    "RF": "a fluoroscopy image",
    "OT": "a secondary capture or other non-radiograph image",
    "SC": "a secondary capture image",
    "PX": "a dental panoramic X-ray",
    "IO": "an intra-oral dental X-ray",
    "DG": "a diaphanography image",
    "BMD": "a bone densitometry image",
    "SEG": "a segmentation map",
    "RTDOSE": "a radiotherapy dose map",
    "RTIMAGE": "a radiotherapy portal image",
    "RTSTRUCT": "a radiotherapy structure set",
    "RTPLAN": "a radiotherapy plan",
    "SM": "a slide microscopy image",
    "XC": "a photograph (external camera)",
    "OP": "an ophthalmic photograph",
    "OPT": "an ophthalmic tomography image",
    "ES": "an endoscopy image",
    "GM": "a general microscopy image",
    "IVUS": "an intravascular ultrasound image",
    "OCT": "an optical coherence tomography image",
    "ECG": "an ECG recording",
    "SR": "a structured report",
    "DOC": "a document",
    "KO": "a key object selection",
    "PR": "a presentation state",
}

#: BodyPartExamined values (normalised: upper case, no spaces/underscores) that are chest films.
CHEST_BODY_PARTS = frozenset({"CHEST", "THORAX", "LUNG", "LUNGS", "CHESTPA", "CHESTAP", "TORSO"})
#: BodyPartExamined values that clearly name another part (PS3.16 CID 4031 defined terms and
#: common vendor spellings). Unknown values are not refused.
NON_CHEST_BODY_PARTS = frozenset(
    {
        "SKULL", "HEAD", "BRAIN", "FACE", "SINUS", "SINUSES", "JAW", "TMJ", "MANDIBLE", "ORBIT", "EAR",
        "NECK", "CSPINE", "TSPINE", "LSPINE", "SSPINE", "SPINE", "COCCYX", "SACRUM",
        "ABDOMEN", "PELVIS", "HIP", "HIPS", "KIDNEY", "BLADDER", "ABDOMENPELVIS",
        "EXTREMITY", "UPPEREXTREMITY", "LOWEREXTREMITY", "ARM", "UPPERARM", "FOREARM",
        "SHOULDER", "CLAVICLE", "SCAPULA", "HUMERUS", "ELBOW", "WRIST", "HAND", "FINGER", "THUMB",
        "LEG", "LOWERLEG", "FEMUR", "THIGH", "KNEE", "PATELLA", "TIBIA", "FIBULA", "ANKLE", "FOOT",
        "HEEL", "CALCANEUS", "TOE", "BREAST", "WHOLEBODY", "TEETH", "TOOTH", "DENTAL",
    }
)
#: ViewPosition values of lateral and oblique projections (PS3.3 C.8.11.5.1.1 defined terms).
LATERAL_VIEWS = frozenset({"LL", "RL", "LAT", "LATERAL", "LEFTLATERAL", "RIGHTLATERAL", "XTABLELATERAL"})
OBLIQUE_VIEWS = frozenset({"LAO", "RAO", "LPO", "RPO", "RLO", "LLO", "OBL", "OBLIQUE"})
FRONTAL_VIEWS = frozenset({"PA", "AP", "LLD", "RLD"})  # decubitus films are frontal projections
GREYSCALE_PHOTOMETRIC = frozenset({"MONOCHROME1", "MONOCHROME2"})

#: Shortest side a chest film can have and still be read (the models use 224-512 px inputs).
MIN_SHORT_SIDE = 256
#: Longest / shortest side; chest films are 14x17 in (1.21) or 17x14 / 14x14 in, exports a bit
#: more when cropped. Beyond this the picture is a strip (a whole-body scan, a banner, a panorama).
MAX_ASPECT_RATIO = 2.5
#: Hasler–Süsstrunk colourfulness (0-255 scale) from which a picture counts as a colour picture:
#: ~15 is "slightly colourful", ~33 "moderately"; a grey film stored as RGB measures ~0 and a
#: sepia-tinted scan of a film stays below this.
COLOURFULNESS_LIMIT = 20.0
#: ... and only when at least this share of pixels is chromatic (a small coloured arrow or label
#: burned into a grey film does not make it a colour picture).
CHROMATIC_FRACTION_LIMIT = 0.02
#: A picture whose grey levels (0-1 display scale) span no more than this is blank.
BLANK_SPREAD = 0.01
#: Share of exactly flat pixels (3x3 neighbourhood, extremes and flat borders excluded) from which
#: a PNG/JPEG is a screenshot or drawing: radiographs, even 8-bit JPEG exports, have noise
#: everywhere (measured at most 0.01 on every chest film in benchmarks/results/gate.json).
SCREENSHOT_FLAT_FRACTION = 0.25
#: Content thresholds. Each sits well below the lowest value measured on any chest film
#: (real film variants and phantoms) in benchmarks/results/gate.json, so a real film is refused
#: only when it is far from every chest film seen:
#: layout correlation with the real-film lung layout (chest films measured >= 0.27, real >= 0.6),
LAYOUT_CORRELATION_MIN = 0.15
#: the mediastinum brighter than the darker lung field, in mean rank (chest films >= 0.48),
LUNG_CONTRAST_MIN = 0.25
#: left-right mirror symmetry allowing +-10 degrees of tilt (chest films >= 0.78),
SYMMETRY_MIN = 0.6
#: and at most this share of the picture's edge is dark background (chest films <= 0.69: the
#: neck and abdomen leave the frame; a CT slice or a hand on black is ringed by air).
EDGE_AIR_MAX = 0.88
#: A picture failing the content check is called an inverted chest film only when its negative
#: has a clear chest layout (an inverted export of the real film, turned back, measures
#: 0.66 / 0.49 / 0.85; an MR slice's negative can pass the lenient thresholds above, so these are
#: stricter).
INVERTED_LAYOUT_MIN = 0.45
INVERTED_LUNG_CONTRAST_MIN = 0.4
INVERTED_SYMMETRY_MIN = 0.7


@dataclass
class GateDecision:
    """The gate's verdict on one study.

    Attributes:
        decision: "accepted", "refused", or "overridden" (a user chose to analyse a refused study).
        code: Stable short code of the deciding check: "ok", "modality", "body_part",
            "lateral_view", "oblique_view", "multiframe", "colour", "too_small", "aspect_ratio",
            "blank", "screenshot", "not_chest_content", "inverted" (a chest film whose greyscale is inverted).
        reason: One sentence for the radiologist naming what the input is.
        checks: Every check run, in order: ``{"name", "passed", "detail"}`` (content checks also
            carry ``"value"`` and ``"threshold"``).
        content_score: The layout correlation of the content check (None if it could not run).
        overridden_by: Who overrode a refusal, for the audit trail.
        gate_version: :data:`GATE_VERSION` of the rules that decided.
    """

    decision: str
    code: str
    reason: str
    checks: list[dict[str, Any]] = field(default_factory=list)
    content_score: float | None = None
    overridden_by: str | None = None
    gate_version: str = field(default_factory=lambda: GATE_VERSION)

    @property
    def accepted(self) -> bool:
        """True when the study may go on to the models (accepted, or a refusal overridden)."""
        return self.decision in ("accepted", "overridden")

    @property
    def failed_checks(self) -> list[str]:
        """Names of the checks that did not pass."""
        return [c["name"] for c in self.checks if not c["passed"]]

    def overridden(self, by: str) -> GateDecision:
        """A copy marked "overridden" by ``by``; the refusal's code and reason are kept.

        Overriding an accepted decision changes nothing (an unchanged copy is returned).
        """
        if self.decision == "accepted":
            return dataclasses.replace(self, checks=[dict(c) for c in self.checks])
        return dataclasses.replace(
            self, decision="overridden", overridden_by=str(by), checks=[dict(c) for c in self.checks]
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateDecision:
        """Rebuild a decision stored with :meth:`to_dict`."""
        return cls(
            decision=str(data["decision"]),
            code=str(data["code"]),
            reason=str(data["reason"]),
            checks=[dict(c) for c in data.get("checks") or []],
            content_score=data.get("content_score"),
            overridden_by=data.get("overridden_by"),
            gate_version=str(data.get("gate_version") or GATE_VERSION),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable form (for storage, the PDF and the API)."""
        return {
            "decision": self.decision,
            "code": self.code,
            "reason": self.reason,
            "checks": [dict(c) for c in self.checks],
            "content_score": self.content_score,
            "overridden_by": self.overridden_by,
            "accepted": self.accepted,
            "gate_version": self.gate_version,
        }


def _norm(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        value = "\\".join(str(v) for v in value)
    return "".join(ch for ch in str(value).upper() if ch.isalnum())


def _article(text: str) -> str:
    return f"an {text}" if text[:1].upper() in "AEIOU" else f"a {text}"


def _header_checks(study: Any) -> list[tuple[dict[str, Any], str, str]]:
    """(check, code, reason-if-failed) for the DICOM header rules."""
    meta = study.metadata or {}
    out: list[tuple[dict[str, Any], str, str]] = []

    modality = (study.modality or meta.get("modality") or "").strip().upper()
    if not modality:
        out.append(({"name": "modality", "passed": True, "detail": "not stated; left to the content check"}, "", ""))
    elif modality in ACCEPTED_MODALITIES:
        out.append(({"name": "modality", "passed": True, "detail": f"Modality {modality} (plain radiograph)"}, "", ""))
    else:
        what = MODALITY_NAMES.get(modality, "not a plain radiograph")
        out.append(
            (
                {"name": "modality", "passed": False, "detail": f"Modality {modality}"},
                "modality",
                f"This is {what} (Modality {modality}); the chest X-ray models only read plain "
                "radiographs (CR/DX).",
            )
        )

    body = meta.get("body_part")
    body_key = _norm(body)
    if not body_key:
        out.append(({"name": "body_part", "passed": True, "detail": "not stated"}, "", ""))
    elif body_key in NON_CHEST_BODY_PARTS and not any(k in body_key for k in ("CHEST", "THORAX", "LUNG")):
        shown = str(body).strip().upper()
        kind = "radiograph" if modality in ACCEPTED_MODALITIES else "image"
        out.append(
            (
                {"name": "body_part", "passed": False, "detail": f"BodyPartExamined {shown}"},
                "body_part",
                f"This is {_article(kind)} of the {shown.lower()} (BodyPartExamined {shown}), not of the chest; "
                "the models only read chest films.",
            )
        )
    else:
        known = body_key in CHEST_BODY_PARTS or any(k in body_key for k in ("CHEST", "THORAX", "LUNG"))
        detail = f"BodyPartExamined {str(body).strip().upper()}"
        if not known:
            detail += " (not a known value; not refused)"
        out.append(({"name": "body_part", "passed": True, "detail": detail}, "", ""))

    view = _norm(study.view_position or meta.get("view_position"))
    view_code = str(meta.get("view_code") or "").lower()
    orientation = meta.get("patient_orientation")
    row_direction = ""
    if isinstance(orientation, (list, tuple)) and orientation:
        row_direction = str(orientation[0]).strip().upper()
    elif isinstance(orientation, str) and orientation.strip():
        row_direction = orientation.replace("\\", " ").split()[0].upper()
    lateral_by = ""
    if view in LATERAL_VIEWS:
        lateral_by = f"ViewPosition {view}"
    elif "lateral" in view_code and "decubitus" not in view_code:
        lateral_by = f"view code '{meta.get('view_code')}'"
    elif view not in FRONTAL_VIEWS and row_direction[:1] in ("A", "P"):
        # Rows running anterior-posterior: the film was taken from the side (PS3.3 C.7.6.1.1.1).
        shown = "/".join(orientation) if isinstance(orientation, (list, tuple)) else orientation
        lateral_by = f"PatientOrientation {shown}"
    if lateral_by:
        out.append(
            (
                {"name": "view", "passed": False, "detail": lateral_by},
                "lateral_view",
                f"This is a lateral film ({lateral_by}); lateral views are not supported by these "
                "models, which read frontal (PA/AP) chest films only.",
            )
        )
    elif view in OBLIQUE_VIEWS or "oblique" in view_code:
        shown = f"ViewPosition {view}" if view in OBLIQUE_VIEWS else f"view code '{meta.get('view_code')}'"
        out.append(
            (
                {"name": "view", "passed": False, "detail": shown},
                "oblique_view",
                f"This is an oblique film ({shown}); the models read frontal (PA/AP) films only.",
            )
        )
    else:
        detail = f"ViewPosition {view}" if view else "not stated"
        out.append(({"name": "view", "passed": True, "detail": detail}, "", ""))

    try:
        frames = int(meta.get("number_of_frames") or 1)
    except (TypeError, ValueError):
        frames = 1
    if frames > 1:
        out.append(
            (
                {"name": "frames", "passed": False, "detail": f"{frames} frames"},
                "multiframe",
                f"This is a multi-frame DICOM ({frames} frames: a cine loop, volume or series), not a single "
                "radiograph; the models read one frontal chest film at a time.",
            )
        )
    else:
        out.append(({"name": "frames", "passed": True, "detail": "single frame"}, "", ""))

    # A colour photometric interpretation alone is not refused: grey films are sometimes stored as
    # RGB/YBR. The colour check decides from the measured colourfulness.
    photometric = str(meta.get("photometric") or "").strip().upper()
    detail = photometric or "not stated"
    if photometric and photometric not in GREYSCALE_PHOTOMETRIC:
        detail = f"{photometric} (colour storage; the colour check measures the pixels)"
    out.append(({"name": "photometric", "passed": True, "detail": detail}, "", ""))
    return out


def _form_checks(study: Any) -> list[tuple[dict[str, Any], str, str]]:
    """(check, code, reason-if-failed) for colour, size, shape, blank pictures and screenshots."""
    meta = study.metadata or {}
    out: list[tuple[dict[str, Any], str, str]] = []
    label = "DICOM image" if study.source_format == "dicom" else f"{study.source_format.upper()} image"

    colourfulness = float(meta.get("colourfulness") or 0.0)
    chromatic = float(meta.get("chromatic_fraction") or 0.0)
    is_colour = colourfulness >= COLOURFULNESS_LIMIT and chromatic >= CHROMATIC_FRACTION_LIMIT
    detail = f"colourfulness {colourfulness:.1f} (limit {COLOURFULNESS_LIMIT:g}), chromatic pixels {chromatic:.1%}"
    photometric = str(meta.get("photometric") or "").strip().upper()
    if study.source_format == "dicom":
        what = f"a colour DICOM image (PhotometricInterpretation {photometric or 'not stated'})"
    else:
        what = "a colour picture, such as a photograph or an annotated screenshot"
    out.append(
        (
            {"name": "colour", "passed": not is_colour, "detail": detail},
            "colour",
            f"This is {what} (colourfulness {colourfulness:.0f}, {chromatic:.0%} of pixels in colour); "
            "chest radiographs are greyscale.",
        )
    )

    height, width = (int(v) for v in study.image.shape[:2])
    short, long_ = min(height, width), max(height, width)
    out.append(
        (
            {
                "name": "size",
                "passed": short >= MIN_SHORT_SIDE,
                "detail": f"{width}×{height} px (short side minimum {MIN_SHORT_SIDE})",
            },
            "too_small",
            f"This {label} is only {width}×{height} pixels, too small for a chest radiograph "
            f"(at least {MIN_SHORT_SIDE} pixels on the short side); it may be a thumbnail or an icon.",
        )
    )
    ratio = long_ / max(short, 1)
    out.append(
        (
            {
                "name": "aspect_ratio",
                "passed": ratio <= MAX_ASPECT_RATIO,
                "detail": f"{ratio:.2f}:1 (limit {MAX_ASPECT_RATIO:g}:1)",
            },
            "aspect_ratio",
            f"This {label} is a {ratio:.1f}:1 strip ({width}×{height} pixels), far from the shape of a chest "
            "film; it may be a whole-body scan, a banner or a panorama.",
        )
    )

    spread = float(np.ptp(_content.working_copy(study.image))) if study.image.size else 0.0
    out.append(
        (
            {"name": "blank", "passed": spread > BLANK_SPREAD, "detail": f"grey-level spread {spread:.3f}"},
            "blank",
            f"This {label} is blank (one flat grey level), so there is nothing to analyse.",
        )
    )

    if study.source_format in ("png", "jpeg"):
        flat = _content.flat_fraction(study.image)
        out.append(
            (
                {
                    "name": "screenshot",
                    "passed": flat < SCREENSHOT_FLAT_FRACTION,
                    "detail": f"{flat:.1%} of pixels in perfectly flat areas (limit {SCREENSHOT_FLAT_FRACTION:.0%})",
                    "value": flat,
                    "threshold": SCREENSHOT_FLAT_FRACTION,
                },
                "screenshot",
                f"This looks like a screenshot or drawing ({flat:.0%} of the picture is perfectly flat colour, "
                "as in a viewer's panels or a diagram), not an exported radiograph; export the image itself "
                "or crop it to the film.",
            )
        )

    return out


def content_looks_like_chest(image: Any) -> tuple[bool, dict[str, float]]:
    """The image-content check alone on a display image: (passed, measures)."""
    measures = _content.layout_measures(image)
    passed = all(check["passed"] for check in _content_items(measures))
    return passed, measures


def _content_items(measures: dict[str, float]) -> list[dict[str, Any]]:
    items = (
        (
            "content_layout",
            "layout_correlation",
            LAYOUT_CORRELATION_MIN,
            "correlation with the lung layout of real chest films",
            "minimum",
        ),
        (
            "content_lung_fields",
            "lung_contrast",
            LUNG_CONTRAST_MIN,
            "mediastinum brighter than the lung fields (rank gap)",
            "minimum",
        ),
        ("content_symmetry", "symmetry", SYMMETRY_MIN, "left-right symmetry", "minimum"),
        ("content_body_at_edge", "edge_air", EDGE_AIR_MAX, "share of the picture's edge that is background", "maximum"),
    )
    out = []
    for name, key, threshold, what, kind in items:
        value = float(measures[key])
        passed = value >= threshold if kind == "minimum" else value <= threshold
        out.append(
            {
                "name": name,
                "passed": passed,
                "detail": f"{what}: {value:.2f} ({kind} {threshold:g})",
                "value": value,
                "threshold": threshold,
                "what": what,
                "kind": kind,
            }
        )
    return out


def _clearly_chest(measures: dict[str, float]) -> bool:
    """Stricter than the content check: only a clear chest layout earns the "inverted" reason."""
    return (
        measures["layout_correlation"] >= INVERTED_LAYOUT_MIN
        and measures["lung_contrast"] >= INVERTED_LUNG_CONTRAST_MIN
        and measures["symmetry"] >= INVERTED_SYMMETRY_MIN
        and measures["edge_air"] <= EDGE_AIR_MAX
    )


def _content_checks(study: Any) -> tuple[list[tuple[dict[str, Any], str, str]], float | None]:
    measures = _content.layout_measures(study.image)
    items = _content_items(measures)
    failed = [f"{c['what']} {'too low' if c['kind'] == 'minimum' else 'too high'}" for c in items if not c["passed"]]
    reason = (
        "The picture does not look like a frontal chest radiograph (" + "; ".join(failed) + "): it may be "
        "another body part, a cross-sectional slice, a document or a photograph."
    )
    checks = [{k: v for k, v in c.items() if k not in ("what", "kind")} for c in items]
    code = "not_chest_content"
    if failed and _clearly_chest(_content.layout_measures(1.0 - study.image)):
        # Its negative is a chest film: an export with inverted greyscale (or MONOCHROME1 pixels
        # saved without their photometric interpretation). The models need air dark, bone bright.
        code = "inverted"
        reason = (
            "The picture does not look like a frontal chest radiograph as it is, but its negative does: if it is a "
            "chest film exported with inverted greyscale (lungs bright, bones dark), export it with normal "
            "greyscale (air dark) or send the DICOM file instead."
        )
    return [(c, code, reason) for c in checks], float(measures["layout_correlation"])


def check_study(study: Any) -> GateDecision:
    """Decide whether ``study`` (a :class:`medsight.ingest.Study`) is a frontal chest radiograph.

    Every check runs (so the record shows all of them); the first failing one, in the order
    header → form → content, decides the code and reason.

    Args:
        study: An ingested study.

    Returns:
        The decision; ``decision`` is "accepted" or "refused".
    """
    results: list[tuple[dict[str, Any], str, str]] = []
    if study.source_format == "dicom":
        results.extend(_header_checks(study))
    results.extend(_form_checks(study))
    content_score: float | None
    try:
        content, content_score = _content_checks(study)
        results.extend(content)
    except Exception as exc:  # noqa: BLE001 - a broken measure must not block a film; say so
        content_score = None
        results.append(
            (
                {
                    "name": "content",
                    "passed": True,
                    "detail": f"could not be measured ({type(exc).__name__}); not refused",
                },
                "",
                "",
            )
        )
    checks = [check for check, _, _ in results]
    for check, code, reason in results:
        if not check["passed"]:
            return GateDecision("refused", code, reason, checks, content_score)
    what = "frontal chest radiograph"
    if study.source_format == "dicom" and study.modality:
        what = f"{study.modality} {what}"
    return GateDecision(
        "accepted",
        "ok",
        f"Accepted as {_article(what)}: every input check passed.",
        checks,
        content_score,
    )
