"""De-identification against PS3.15 Annex E Table E.1-1, attribute by attribute, and the identity map."""

from __future__ import annotations

import copy
import io
import os
import shutil
import stat
import subprocess
from datetime import date, timedelta

import numpy as np
import pytest
from pydicom import dcmread, uid
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from medsight.deid import (
    IdentityMap,
    deidentify_dataset,
    installation_secret,
    load_table,
    patient_pseudonym,
    uid_pseudonym,
)
from medsight.deid.table import actions_by_tag
from test_ingest import make_dicom

SECRET_A = bytes(range(32))
SECRET_B = bytes(range(1, 33))
TEXT_MARKER = "MKR"
DATE_MARKER = "19230405"
TIME_MARKER = "112233"
UID_ROOT = "1.2.826.0.1.3680043.8.498.777."


def base_dataset() -> Dataset:
    """A small valid DX image, the kind of file a PACS sends."""
    ds = make_dicom(np.arange(64, dtype=np.uint16).reshape(8, 8), modality="DX")
    ds.BurnedInAnnotation = "NO"
    return ds


def marker_value(tag: int, vr: str, index: int):
    """A value of the right VR that is recognisably a marker for ``tag``."""
    text = f"{TEXT_MARKER}{tag:08X}"
    return {
        "AE": text, "CS": text, "SH": text, "LO": text, "ST": text, "LT": text, "UT": text, "UC": text,
        "PN": f"{text}^NAME", "UR": f"http://{text.lower()}.example/", "AS": "077Y", "DA": DATE_MARKER,
        "TM": TIME_MARKER, "DT": DATE_MARKER + TIME_MARKER, "DS": "7.77", "IS": "777", "US": 777, "SS": 777,
        "UI": f"{UID_ROOT}{index}", "OB": text.encode() + b"\x00", "OW": text.encode() + b"\x00",
        "UN": text.encode() + b"\x00",
    }[vr]


def marker_item(index: int) -> Dataset:
    """A sequence item holding table attributes and a code meaning, to be cleaned at the nested level."""
    item = Dataset()
    item.PatientName = f"{TEXT_MARKER}NESTED^NAME"
    item.CodeMeaning = "FREE TEXT"  # not a table attribute: only a dummied (D) sequence replaces it
    item.ReferencedSOPInstanceUID = f"{UID_ROOT}9{index}"
    item.ReferencedSOPClassUID = uid.DigitalXRayImageStorageForPresentation
    item.StationName = f"{TEXT_MARKER}STATION"
    return item


def table_rows():
    return [(tag, row) for tag, row in sorted(actions_by_tag().items())]


def marker_dataset() -> tuple[Dataset, dict[int, object]]:
    """Every Table E.1-1 attribute filled with a marker, plus private, curve and overlay data."""
    ds = base_dataset()
    markers: dict[int, object] = {}
    for index, (tag, _row) in enumerate(table_rows()):
        vr = dictionary_VR(tag).split(" or ")[0]
        if vr == "SQ":
            ds.add_new(tag, vr, Sequence([marker_item(index)]))
            continue
        if tag in (0x00020003,):
            continue
        markers[tag] = marker_value(tag, vr, index)
        ds.add_new(tag, vr, markers[tag])
    ds.PatientID = "PID-MARKER-1"
    markers[0x00100020] = "PID-MARKER-1"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.SourceApplicationEntityTitle = f"{TEXT_MARKER}SRCAE"
    ds.add_new(0x00091010, "LO", f"{TEXT_MARKER}PRIVATE")
    ds.add_new(0x00090010, "LO", f"{TEXT_MARKER}CREATOR")
    ds.add_new(0x50003000, "OB", f"{TEXT_MARKER}CURVE".encode() + b"\x00")
    ds.add_new(0x60004000, "LT", f"{TEXT_MARKER}OVERLAY COMMENT")
    ds.add_new(0x60003000, "OW", f"{TEXT_MARKER}OVERLAY".encode() + b"\x00")
    return ds, markers


def written(ds: Dataset) -> bytes:
    """The file as stored; command-group (0000) elements of the table belong to messages, not files."""
    ds = copy.deepcopy(ds)
    for elem in [e for e in ds if e.tag.group == 0]:
        del ds[elem.tag]
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def surviving(clean: Dataset, markers: dict[int, object]) -> set[int]:
    """Top-level table attributes whose marker value is still there, unchanged."""
    return {tag for tag, value in markers.items()
            if tag in clean and str(clean[tag].value) == str(value) and clean[tag].value not in ("", None)}


# ---------------------------------------------------------------- the table


def test_table_is_the_2024b_edition_with_every_attribute_known():
    table = load_table()
    assert table.edition == "2024b" and "innolitics/dicom-standard" in table.source
    assert len(table.rows) == 621
    assert len(actions_by_tag()) == 617  # + curve, overlay data, overlay comments, private groups
    actions = {row.basic for row in table.rows}
    assert actions == {"X", "Z", "D", "U", "X/Z", "X/D", "X/Z/D", "Z/D", "X/Z/U*"}
    assert all(keyword_for_tag(tag) for tag in actions_by_tag())


# ---------------------------------------------------------------- every attribute, with a marker


def test_no_marker_survives_the_basic_profile():
    ds, markers = marker_dataset()
    clean = deidentify_dataset(ds, secret=SECRET_A, retain_dates="off")
    data = written(clean)
    assert surviving(clean, markers) == set()
    for needle in (TEXT_MARKER.encode(), DATE_MARKER.encode(), UID_ROOT.encode(), b"PID-MARKER-1"):
        assert needle not in data
    assert b"077Y" not in data and b"7.77" not in data
    # What the table asks to remove is gone; names are emptied; dummies are not the marker.
    for tag, row in table_rows():
        if tag not in clean:
            continue
        elem = clean[tag]
        if row.basic == "X" and elem.VR != "PN":
            pytest.fail(f"{row.name} should have been removed")
        if row.basic == "Z" and elem.VR != "SQ":
            assert elem.value in ("", None, b""), row.name
    for group_tag in (0x00091010, 0x00090010, 0x50003000, 0x60004000, 0x60003000):
        assert group_tag not in clean


def test_markers_kept_by_an_enabled_option_are_exactly_the_listed_ones():
    ds, markers = marker_dataset()
    full = deidentify_dataset(ds, secret=SECRET_A, retain_dates="full")
    kept_full = {tag for tag, row in actions_by_tag().items() if row.options.get("rtnLongFullDatesOpt") == "K"}
    assert surviving(full, markers) == kept_full & set(markers)
    # Three of those are not dates but still kept by the option: time zone offset and two timestamps.
    data = written(full)
    leaked = {tag for tag in actions_by_tag() if f"{TEXT_MARKER}{tag:08X}".encode() in data}
    assert leaked == {0x00080201, 0x00340007, 0x04000310} and leaked <= kept_full
    assert b"NESTED" not in data and UID_ROOT.encode() not in data

    modified = deidentify_dataset(ds, secret=SECRET_A, retain_dates="modified")
    # Dates and date-times move; times of day are what the modified-dates option retains.
    kept_modified = {tag for tag, row in actions_by_tag().items()
                     if row.options.get("rtnLongModifDatesOpt") == "C" and dictionary_VR(tag) == "TM"}
    assert surviving(modified, markers) == kept_modified & set(markers)
    assert DATE_MARKER.encode() not in written(modified)


def test_nested_levels_are_cleaned_and_reference_sequences_keep_their_references():
    ds, _ = marker_dataset()
    clean = deidentify_dataset(ds, secret=SECRET_A, retain_dates="off")
    reference = clean.ReferencedImageSequence[0]  # X/Z/U*: kept, with its UID replaced
    assert reference.ReferencedSOPInstanceUID == uid_pseudonym(ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID,
                                                               SECRET_A)
    assert reference.ReferencedSOPClassUID == uid.DigitalXRayImageStorageForPresentation
    assert reference.PatientName == "" and "StationName" not in reference
    content = clean.ContentSequence[0]  # D: structure kept, values are dummies
    assert content.CodeMeaning != ds.ContentSequence[0].CodeMeaning and content.PatientName == ""


# ---------------------------------------------------------------- UIDs and pseudonyms


def test_uids_are_replaced_consistently_and_references_follow():
    ds = base_dataset()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.10", "1.2.3.20"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.30"
    ds.FrameOfReferenceUID = "1.2.3.40"
    prior = Dataset()
    prior.ReferencedSOPClassUID = ds.SOPClassUID
    prior.ReferencedSOPInstanceUID = "1.2.3.30"
    ds.SourceImageSequence = Sequence([prior])
    clean = deidentify_dataset(ds, secret=SECRET_A)
    again = deidentify_dataset(ds, secret=SECRET_A)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
        assert clean[keyword].value != ds[keyword].value
        assert clean[keyword].value == again[keyword].value
        assert clean[keyword].value.startswith("2.25.") and len(clean[keyword].value) <= 64
    assert clean.SourceImageSequence[0].ReferencedSOPInstanceUID == clean.SOPInstanceUID
    assert clean.file_meta.MediaStorageSOPInstanceUID == clean.SOPInstanceUID
    assert clean.SOPClassUID == ds.SOPClassUID
    # Applying it twice in one installation changes nothing more.
    twice = deidentify_dataset(clean, secret=SECRET_A)
    assert twice.SOPInstanceUID == clean.SOPInstanceUID and twice.StudyInstanceUID == clean.StudyInstanceUID


def test_pseudonyms_differ_between_installations():
    ds = base_dataset()
    ds.StudyInstanceUID, ds.PatientID = "1.2.3.10", "PID-1"
    a = deidentify_dataset(ds, secret=SECRET_A, pseudonymous_patient_id=True)
    b = deidentify_dataset(ds, secret=SECRET_B, pseudonymous_patient_id=True)
    assert a.StudyInstanceUID != b.StudyInstanceUID and a.SOPInstanceUID != b.SOPInstanceUID
    assert a.PatientID == patient_pseudonym("PID-1", SECRET_A) != b.PatientID
    assert "PID-1" not in (a.PatientID, b.PatientID)
    assert uid_pseudonym("1.2.3.10", SECRET_A) != uid_pseudonym("1.2.3.10", SECRET_B)


def test_installation_secret_is_created_once_and_private(medsight_home):
    first = installation_secret()
    path = medsight_home / "deid-secret.key"
    assert path.exists() and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert installation_secret() == first and len(first) == 32
    assert deidentify_dataset(base_dataset()).SOPInstanceUID  # the one-argument call uses it


# ---------------------------------------------------------------- dates


def test_modified_dates_shift_per_patient_and_keep_intervals():
    def study(patient: str, day: str) -> Dataset:
        ds = base_dataset()
        ds.PatientID, ds.StudyDate, ds.StudyTime = patient, day, "101500"
        ds.AcquisitionDateTime = day + "101500"
        return ds

    first = deidentify_dataset(study("P1", "20240115"), secret=SECRET_A, retain_dates="modified")
    prior = deidentify_dataset(study("P1", "20230110"), secret=SECRET_A, retain_dates="modified")
    other = deidentify_dataset(study("P2", "20240115"), secret=SECRET_A, retain_dates="modified")

    def day(value: str) -> date:
        return date(int(value[:4]), int(value[4:6]), int(value[6:8]))

    assert first.StudyDate != "20240115"
    assert day(first.StudyDate) - day(prior.StudyDate) == date(2024, 1, 15) - date(2023, 1, 10)
    assert first.AcquisitionDateTime[:8] == first.StudyDate and first.StudyTime == "101500"
    assert other.StudyDate != first.StudyDate  # another patient, another offset
    assert first.LongitudinalTemporalInformationModified == "MODIFIED"
    off = deidentify_dataset(study("P1", "20240115"), secret=SECRET_A, retain_dates="off")
    assert off.StudyDate == "" and "AcquisitionDateTime" not in off
    assert off.LongitudinalTemporalInformationModified == "REMOVED"


def test_retain_dates_setting_is_the_default(monkeypatch):
    ds = base_dataset()
    ds.StudyDate = "20240115"
    monkeypatch.setenv("MEDSIGHT_DEID_RETAIN_DATES", "full")
    assert deidentify_dataset(ds).StudyDate == "20240115"
    monkeypatch.setenv("MEDSIGHT_DEID_RETAIN_DATES", "off")
    assert deidentify_dataset(ds).StudyDate == ""


# ---------------------------------------------------------------- what is recorded


@pytest.mark.parametrize("option, codes", [("off", ["113100"]), ("modified", ["113100", "113107"]),
                                           ("full", ["113100", "113106"])])
def test_deidentification_is_recorded(option, codes):
    clean = deidentify_dataset(base_dataset(), secret=SECRET_A, retain_dates=option)
    assert clean.PatientIdentityRemoved == "YES"
    assert "Basic Application Confidentiality Profile" in str(clean.DeidentificationMethod)
    assert [item.CodeValue for item in clean.DeidentificationMethodCodeSequence] == codes
    assert {item.CodingSchemeDesignator for item in clean.DeidentificationMethodCodeSequence} == {"DCM"}


def test_burned_in_annotation_is_carried_forward():
    ds = base_dataset()
    ds.BurnedInAnnotation = "YES"
    assert deidentify_dataset(ds, secret=SECRET_A).BurnedInAnnotation == "YES"


# ---------------------------------------------------------------- still valid DICOM


def test_output_writes_and_reads_back():
    ds, _ = marker_dataset()
    clean = deidentify_dataset(ds, secret=SECRET_A)
    back = dcmread(io.BytesIO(written(clean)))
    assert back.SOPInstanceUID == clean.SOPInstanceUID
    np.testing.assert_array_equal(back.pixel_array, ds.pixel_array)


def _dciodvfy_errors(path) -> set[str]:
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    lines = (result.stdout + result.stderr).splitlines()
    return {line.split(" - ", 1)[-1] for line in lines if line.startswith("Error")}


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools not installed")
@pytest.mark.parametrize("source", ["generated", "CT_small.dcm"])
def test_dciodvfy_reports_no_new_errors(tmp_path, source):
    if source == "generated":
        ds = base_dataset()
        ds.PatientName, ds.PatientID, ds.StudyDate, ds.StudyTime = "DOE^JANE", "PID-1", "20240115", "101500"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = "1.2.3.1", "1.2.3.2", "1.2.3.3"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID, ds.InstitutionName = "A1", "DR^WHO", "S1", "HOSP"
        ds.SeriesNumber, ds.InstanceNumber, ds.PatientSex, ds.PatientBirthDate = 1, 1, "F", "19700101"
        ds.PresentationIntentType, ds.ImageType, ds.PixelIntensityRelationship = "FOR PRESENTATION", ["ORIGINAL", "PRIMARY"], "LOG"
    else:
        from pydicom.data import get_testdata_file

        ds = dcmread(get_testdata_file(source))
    before, after = tmp_path / "in.dcm", tmp_path / "out.dcm"
    ds.save_as(before, enforce_file_format=True)
    deidentify_dataset(ds, secret=SECRET_A).save_as(after, enforce_file_format=True)
    assert _dciodvfy_errors(after) - _dciodvfy_errors(before) == set()


# ---------------------------------------------------------------- the identity map, both directions


def identified_study() -> Dataset:
    ds = base_dataset()
    ds.PatientName, ds.PatientID, ds.AccessionNumber = "DOE^JANE", "PID-0001", "ACC123"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.10", "1.2.3.20"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.30"
    ds.StudyDate = "20240115"
    return ds


def test_identity_map_round_trip_is_encrypted_and_private(medsight_home):
    original = identified_study()
    clean = deidentify_dataset(original)
    identity = IdentityMap()
    assert identity.remember(original, clean) == clean.StudyInstanceUID
    assert stat.S_IMODE(identity.path.stat().st_mode) == 0o600
    raw = identity.path.read_bytes()
    for secret_text in (b"DOE^JANE", b"PID-0001", b"ACC123", b"1.2.3.10"):
        assert secret_text not in raw
    kept = identity.original_identifiers(clean.StudyInstanceUID)
    assert kept["PatientID"] == "PID-0001" and kept["StudyInstanceUID"] == "1.2.3.10"
    assert kept["uids"][clean.SOPInstanceUID] == "1.2.3.30"

    # A result about the de-identified study goes back naming the original study and instance.
    result = Dataset()
    result.StudyInstanceUID = clean.StudyInstanceUID
    ref = Dataset()
    ref.ReferencedSOPInstanceUID = clean.SOPInstanceUID
    result.CurrentRequestedProcedureEvidenceSequence = Sequence([ref])
    result.PatientIdentityRemoved = "YES"
    back = identity.reidentify(result)
    assert back.StudyInstanceUID == "1.2.3.10" and back.PatientName == "DOE^JANE" and back.AccessionNumber == "ACC123"
    assert back.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSOPInstanceUID == "1.2.3.30"
    assert "PatientIdentityRemoved" not in back

    # Another installation's secret cannot read the map.
    with pytest.raises(Exception):
        IdentityMap(secret=SECRET_B).original_identifiers(clean.StudyInstanceUID)

    assert identity.forget(clean.StudyInstanceUID) is True
    assert identity.original_identifiers(clean.StudyInstanceUID) is None
    with pytest.raises(KeyError):
        identity.reidentify(result)


def test_identity_map_purge_by_age(medsight_home, monkeypatch):
    from medsight.deid import identity_map

    original = identified_study()
    clean = deidentify_dataset(original)
    identity_map.remember(original, clean)
    assert identity_map.purge() == 0  # younger than the retention setting
    real_time = identity_map.time.time
    monkeypatch.setattr(identity_map.time, "time", lambda: real_time() + timedelta(days=31).total_seconds())
    assert identity_map.purge() == 1
    assert identity_map.original_identifiers(clean.StudyInstanceUID) is None
    monkeypatch.setattr(identity_map.time, "time", real_time)
    identity_map.remember(original, clean)
    assert identity_map.purge(older_than=0) == 1


def test_identity_map_refuses_a_copy_from_elsewhere(medsight_home):
    original = identified_study()
    other = deidentify_dataset(original, secret=SECRET_B)
    with pytest.raises(ValueError):
        IdentityMap().remember(original, other)
    assert not os.path.exists(medsight_home / "identity-map.sqlite3")


# ---------------------------------------------------------------- burned-in text reaches the PDF and batch output


def test_burned_in_annotation_warning_in_pdf_and_batch_output(tmp_path):
    pdfium = pytest.importorskip("pypdfium2")
    from medsight.batch import BatchRow, write_results
    from medsight.deid import BURNED_IN_WARNING, burned_in_warning
    from medsight.ingest import load_study
    from medsight.report.pdf import build_pdf

    ds = base_dataset()
    ds.BurnedInAnnotation = "YES"
    study = load_study(written(ds))
    assert burned_in_warning(study.metadata) == BURNED_IN_WARNING
    analysis = {"study": {"study_id": "s1", "metadata": study.metadata}}
    doc = pdfium.PdfDocument(build_pdf(analysis))
    text = "\n".join(doc[i].get_textpage().get_text_range() for i in range(len(doc)))
    assert "burned into the pixels" in " ".join(text.split())
    doc = pdfium.PdfDocument(build_pdf({"study": {"study_id": "s2", "metadata": {"burned_in_annotation": "NO"}}}))
    assert "burned into" not in doc[0].get_textpage().get_text_range()

    csv_path, json_path = write_results([BatchRow(file="a.dcm", warning=BURNED_IN_WARNING)], {}, tmp_path)
    assert BURNED_IN_WARNING in csv_path.read_text() and BURNED_IN_WARNING in json_path.read_text()
