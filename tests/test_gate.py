"""Input gate: header rules, picture-form rules and the chest-layout content check."""

from __future__ import annotations

import io
import json
import statistics
import time

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from medsight import gate
from medsight.gate import GateDecision, check_study, content_looks_like_chest
from medsight.ingest import IngestError, load_study
from medsight.synthetic import generate_phantom
from training import gate_images as gi


@pytest.fixture(scope="module")
def phantom_image() -> np.ndarray:
    return generate_phantom(7, 512, ()).image


@pytest.fixture(scope="module")
def film_1k() -> np.ndarray:
    """The real CR chest film RG1 at 1k on its long side, as an export would be."""
    return gi._resize(gi.real_chest_image(), 1024)


def _dicom_study(image: np.ndarray, **header) -> object:
    return load_study(gi.dicom_bytes(image, **header), filename="test.dcm")


# ------------------------------------------------------------------ DICOM header rules


@pytest.mark.parametrize("modality", ["CR", "DX"])
def test_radiograph_modalities_with_chest_content_are_accepted(phantom_image, modality):
    decision = check_study(_dicom_study(phantom_image, modality=modality))
    assert decision.decision == "accepted" and decision.code == "ok" and decision.accepted
    assert decision.content_score is not None and decision.content_score >= gate.LAYOUT_CORRELATION_MIN


@pytest.mark.parametrize(
    "modality, name",
    [
        ("CT", "a CT image"),
        ("MR", "an MR image"),
        ("US", "an ultrasound image"),
        ("NM", "a nuclear medicine image"),
        ("PT", "a PET image"),
        ("MG", "a mammogram"),
        ("XA", "an X-ray angiography image"),
        ("RF", "a fluoroscopy image"),
        ("OT", "a secondary capture"),
    ],
)
def test_other_modalities_are_refused_naming_what_they_are(phantom_image, modality, name):
    decision = check_study(_dicom_study(phantom_image, modality=modality))
    assert decision.decision == "refused" and decision.code == "modality" and not decision.accepted
    assert decision.reason.startswith(f"This is {name}") and f"(Modality {modality})" in decision.reason
    assert "only read plain radiographs (CR/DX)" in decision.reason


def test_missing_modality_falls_through_to_the_content_check(phantom_image):
    ds = pydicom.dcmread(io.BytesIO(gi.dicom_bytes(phantom_image)))
    del ds.Modality
    out = io.BytesIO()
    ds.save_as(out)
    decision = check_study(load_study(out.getvalue()))
    modality_check = next(c for c in decision.checks if c["name"] == "modality")
    assert modality_check["passed"] and "not stated" in modality_check["detail"]
    assert decision.decision == "accepted"

    noise = np.random.default_rng(0).random((512, 512)).astype(np.float32)
    ds = pydicom.dcmread(io.BytesIO(gi.dicom_bytes(noise)))
    del ds.Modality
    out = io.BytesIO()
    ds.save_as(out)
    assert check_study(load_study(out.getvalue())).code == "not_chest_content"


@pytest.mark.parametrize("part", ["HAND", "KNEE", "SKULL", "ABDOMEN", "PELVIS", "EXTREMITY", "C SPINE"])
def test_body_part_that_is_not_chest_is_refused(phantom_image, part):
    decision = check_study(_dicom_study(phantom_image, BodyPartExamined=part))
    assert decision.code == "body_part"
    assert f"BodyPartExamined {part}" in decision.reason and "not of the chest" in decision.reason
    assert decision.reason.startswith(f"This is a radiograph of the {part.lower()}")


@pytest.mark.parametrize("part", ["CHEST", "THORAX", "LUNG", "", "PORTABLE"])
def test_chest_empty_or_unknown_body_part_is_not_refused(phantom_image, part):
    decision = check_study(_dicom_study(phantom_image, BodyPartExamined=part))
    assert decision.decision == "accepted", decision.reason


@pytest.mark.parametrize("view", ["PA", "AP"])
def test_frontal_views_are_accepted(phantom_image, view):
    assert check_study(_dicom_study(phantom_image, view_position=view)).decision == "accepted"


@pytest.mark.parametrize("view", ["LL", "RL", "LAT", "LATERAL"])
def test_lateral_views_are_refused(phantom_image, view):
    decision = check_study(_dicom_study(phantom_image, view_position=view))
    assert decision.code == "lateral_view"
    assert "lateral views are not supported by these models" in decision.reason


@pytest.mark.parametrize("view", ["RAO", "LLO"])
def test_oblique_views_are_refused(phantom_image, view):
    decision = check_study(_dicom_study(phantom_image, view_position=view))
    assert decision.code == "oblique_view" and f"ViewPosition {view}" in decision.reason


def test_lateral_from_patient_orientation_alone(phantom_image):
    decision = check_study(_dicom_study(phantom_image, view_position="", PatientOrientation=["A", "F"]))
    assert decision.code == "lateral_view" and "PatientOrientation A/F" in decision.reason
    frontal = check_study(_dicom_study(phantom_image, view_position="", PatientOrientation=["L", "F"]))
    assert frontal.decision == "accepted"


def test_multiframe_is_refused(phantom_image):
    decision = check_study(_dicom_study(phantom_image, n_frames=3))
    assert decision.code == "multiframe" and "3 frames" in decision.reason


def test_header_refusal_still_records_every_check(phantom_image):
    decision = check_study(_dicom_study(phantom_image, modality="CT", BodyPartExamined="HEAD"))
    names = [c["name"] for c in decision.checks]
    assert names[:5] == ["modality", "body_part", "view", "frames", "photometric"]
    assert {"colour", "size", "aspect_ratio", "content_layout", "content_symmetry"} <= set(names)
    assert decision.code == "modality"  # the first failing check decides
    assert decision.failed_checks[:2] == ["modality", "body_part"]


# ------------------------------------------------------------------ pydicom's real files


def test_real_chest_film_is_accepted():
    for name in gi.REAL_CHEST_FILES[:2]:
        decision = check_study(load_study(get_testdata_file(name)))
        assert decision.decision == "accepted", (name, decision.reason)
        assert decision.content_score > 0.5


@pytest.mark.parametrize(
    "name, code",
    [
        ("CT_small.dcm", "modality"),
        ("MR_small.dcm", "modality"),
        ("US1_UNCI.dcm", "modality"),
        ("JPEG2000.dcm", "modality"),  # nuclear medicine whole-body scan
        ("emri_small.dcm", "modality"),
        ("RG3_UNCI.dcm", "body_part"),  # a real CR film of a leg
        ("GDCMJ2K_TextGBR.dcm", "colour"),  # no Modality; colour secondary capture
    ],
)
def test_real_non_chest_files_are_refused_with_the_right_code(name, code):
    decision = check_study(load_study(get_testdata_file(name)))
    assert decision.decision == "refused" and decision.code == code, decision.reason


@pytest.mark.parametrize(
    "name, words",
    [
        ("test-SR.dcm", "DICOM Structured Report (a document, not an image)"),
        ("reportsi.dcm", "DICOM Structured Report"),
        ("rtplan.dcm", "radiotherapy plan"),
        ("rtstruct.dcm", "radiotherapy structure set"),
        ("waveform_ecg.dcm", "waveform recording"),
    ],
)
def test_non_image_objects_are_named(name, words):
    with pytest.raises(IngestError) as caught:
        load_study(get_testdata_file(name))
    message = str(caught.value)
    assert message.startswith("This is ") and words in message and "no image pixel data" in message


def _non_image_object(sop_class: str, modality: str, **elements) -> bytes:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("object.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.Modality = modality
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.mark.parametrize(
    "sop_class, modality, words",
    [
        ("1.2.840.10008.5.1.4.1.1.104.1", "DOC", "a PDF document wrapped in DICOM (Encapsulated PDF)"),
        ("1.2.840.10008.5.1.4.1.1.11.1", "PR", "a DICOM presentation state"),
        ("1.2.840.10008.5.1.4.1.1.88.59", "KO", "a DICOM Key Object Selection"),
        ("1.2.840.10008.5.1.4.1.1.88.22", "SR", "a DICOM Structured Report"),
    ],
)
def test_generated_non_image_objects_are_named(sop_class, modality, words):
    extra = {"MIMETypeOfEncapsulatedDocument": "application/pdf", "EncapsulatedDocument": b"%PDF-1.4\n%%EOF\n"}
    data = _non_image_object(sop_class, modality, **(extra if modality == "DOC" else {}))
    with pytest.raises(IngestError) as caught:
        load_study(data)
    assert str(caught.value).startswith(f"This is {words}")


# ------------------------------------------------------------------ PNG / JPEG form rules


def test_grey_film_in_colour_dicom_storage_is_not_refused_as_colour():
    decision = check_study(load_study(get_testdata_file("SC_jpeg_no_color_transform.dcm")))
    assert decision.code != "colour"
    assert next(c for c in decision.checks if c["name"] == "photometric")["detail"].startswith("RGB")
    colour = check_study(load_study(get_testdata_file("GDCMJ2K_TextGBR.dcm")))
    assert colour.code == "colour" and "PhotometricInterpretation YBR_RCT" in colour.reason


def test_colour_photograph_is_refused():
    study = load_study(gi.jpeg_bytes(gi.colour_photo(), 90), filename="photo.jpg")
    assert study.metadata["colour"] and study.metadata["colourfulness"] > gate.COLOURFULNESS_LIMIT
    decision = check_study(study)
    assert decision.code == "colour" and "colour picture" in decision.reason


def test_grey_film_stored_as_rgb_is_not_colour(film_1k):
    grey = gi.to_uint8(film_1k)
    study = load_study(gi.png_bytes(np.stack([grey] * 3, axis=-1)))
    assert study.metadata["colourfulness"] == 0.0 and study.metadata["colour"] is False
    assert check_study(study).decision == "accepted"


def test_small_coloured_annotation_keeps_a_film_acceptable(film_1k):
    rgb = np.stack([gi.to_uint8(film_1k)] * 3, axis=-1)
    rgb[100:130, 100:400] = (255, 0, 0)  # a red measurement label
    decision = check_study(load_study(gi.png_bytes(rgb)))
    assert decision.decision == "accepted", decision.reason


def test_alpha_channel_is_recorded(phantom_image):
    grey = gi.to_uint8(phantom_image)
    rgba = np.stack([grey, grey, grey, np.full_like(grey, 255)], axis=-1)
    rgba[:10, :10, 3] = 0
    study = load_study(gi.png_bytes(rgba))
    assert study.metadata["alpha"] is True and 0 < study.metadata["transparent_fraction"] < 0.01


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_viewer_screenshot_is_refused(fmt):
    picture = gi.screenshot()
    data = gi.png_bytes(picture) if fmt == "png" else gi.jpeg_bytes(picture, 90)
    decision = check_study(load_study(data))
    assert decision.code == "screenshot" and "screenshot" in decision.reason


def test_blank_image_is_refused():
    decision = check_study(load_study(gi.png_bytes(np.full((600, 500), 0.4, np.float32))))
    assert decision.code == "blank" and "blank" in decision.reason


def test_tiny_image_is_refused():
    decision = check_study(load_study(gi.png_bytes(generate_phantom(3, 128, ()).image)))
    assert decision.code == "too_small" and "128×128" in decision.reason


def test_extreme_aspect_ratio_is_refused(phantom_image):
    strip = np.tile(phantom_image, (1, 3))[:300]  # 1536 x 300
    decision = check_study(load_study(gi.png_bytes(strip)))
    assert decision.code == "aspect_ratio" and "strip" in decision.reason


@pytest.mark.parametrize("marker", ["L", "R"])
def test_8bit_jpeg_export_of_a_real_film_with_text_and_markers_is_accepted(film_1k, marker):
    export = gi.jpeg_bytes(gi.collimate(gi.burn_in_text(film_1k, marker), 0.05, 1.0), 75)
    decision = check_study(load_study(export, filename="chest.jpg"))
    assert decision.decision == "accepted", decision.reason


@pytest.mark.parametrize("degrees", [-10, 10])
def test_tilted_film_is_accepted(film_1k, degrees):
    decision = check_study(load_study(gi.png_bytes(gi._rotate(film_1k, degrees))))
    assert decision.decision == "accepted", decision.reason


def test_bundled_samples_are_accepted():
    from pathlib import Path

    samples = sorted(p for p in (Path(__file__).parents[1] / "models" / "samples").iterdir() if p.suffix != ".json")
    assert len(samples) >= 5
    for path in samples:
        assert check_study(load_study(path)).decision == "accepted", path.name


# ------------------------------------------------------------------ content check alone


@pytest.mark.parametrize("name", ["693_UNCI.dcm", "MR2_UNCI.dcm", "MR-SIEMENS-DICOM-WithOverlays.dcm"])
def test_ct_and_mr_pixels_exported_as_png_are_refused_on_content(name):
    pixels = load_study(get_testdata_file(name)).image
    decision = check_study(load_study(gi.png_bytes(pixels), filename="slice.png"))
    assert decision.code == "not_chest_content", decision.reason
    assert "does not look like a frontal chest radiograph" in decision.reason
    assert content_looks_like_chest(pixels)[0] is False


@pytest.mark.parametrize(
    "make", [gi.hand_film, gi.knee_film, gi.ct_like_slice, gi.text_page, lambda: gi.noise("smooth", seed=1)]
)
def test_drawn_non_chest_pictures_are_refused_on_content(make):
    decision = check_study(load_study(gi.png_bytes(make())))
    assert decision.code == "not_chest_content", decision.reason


def test_inverted_export_of_a_chest_film_is_refused_as_inverted(film_1k):
    decision = check_study(load_study(gi.png_bytes(1.0 - film_1k), filename="negative.png"))
    assert decision.code == "inverted" and "exported with inverted greyscale" in decision.reason
    assert check_study(load_study(gi.png_bytes(film_1k))).decision == "accepted"


def test_content_thresholds_are_reported_in_checks(film_1k):
    decision = check_study(load_study(gi.png_bytes(film_1k)))
    content = [c for c in decision.checks if c["name"].startswith("content_")]
    assert len(content) == 4 and all("threshold" in c and "value" in c for c in content)
    layout = next(c for c in content if c["name"] == "content_layout")
    assert layout["value"] == decision.content_score and layout["threshold"] == gate.LAYOUT_CORRELATION_MIN


def test_gate_is_fast_on_a_large_film(film_1k):
    import cv2

    study = load_study(gi.png_bytes(cv2.resize(film_1k, (2000, 2500), interpolation=cv2.INTER_LINEAR)))
    check_study(study)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        check_study(study)
        times.append(time.perf_counter() - start)
    assert statistics.median(times) < 0.1  # measured ~10 ms; generous for a shared machine


# ------------------------------------------------------------------ the decision object


def test_override_keeps_code_and_reason_and_records_who(phantom_image):
    refused = check_study(_dicom_study(phantom_image, modality="CT"))
    overridden = refused.overridden(by="dr.jones")
    assert overridden.decision == "overridden" and overridden.accepted
    assert overridden.code == refused.code == "modality" and overridden.reason == refused.reason
    assert overridden.overridden_by == "dr.jones" and refused.decision == "refused"
    record = json.loads(json.dumps(overridden.to_dict()))
    assert record["decision"] == "overridden" and record["accepted"] is True
    assert record["overridden_by"] == "dr.jones" and len(record["checks"]) == len(refused.checks)
    assert GateDecision.from_dict(record) == overridden
    accepted = check_study(_dicom_study(phantom_image))
    assert accepted.overridden(by="dr.jones").decision == "accepted"  # nothing to override


def test_decision_round_trips_as_json(phantom_image):
    decision = check_study(load_study(gi.png_bytes(phantom_image)))
    assert isinstance(decision, GateDecision)
    record = json.loads(json.dumps(decision.to_dict()))
    assert record["decision"] == "accepted" and record["code"] == "ok" and record["accepted"] is True
    assert all(set(c) >= {"name", "passed", "detail"} for c in record["checks"])
    assert record["gate_version"] == gate.GATE_VERSION


def test_ingest_records_the_header_values_the_gate_reads():
    meta = load_study(get_testdata_file("RG1_UNCI.dcm")).metadata
    assert meta["body_part"] == "CHEST" and meta["view_position"] == "PA"
    assert meta["patient_orientation"] == ["L", "F"] and meta["photometric"] == "MONOCHROME1"
    assert meta["sop_class_uid"] == "1.2.840.10008.5.1.4.1.1.1" and meta["image_type"][:2] == ["DERIVED", "PRIMARY"]
    colour = load_study(get_testdata_file("US1_UNCI.dcm")).metadata
    assert colour["colour"] is True and colour["colourfulness"] > gate.COLOURFULNESS_LIMIT
