"""DICOM results: Secondary Capture maps, Comprehensive SR and Encapsulated PDF of real analyses.

Three studies, each analysed once with the shipped demo models: a generated phantom written as DICOM (its
outputs stand), pydicom's real chest film RG1 (its demo outputs are withheld) and a bundled PNG phantom
(a new anonymous study). Every object is checked with dicom3tools' `dciodvfy` (0 errors).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import zipfile

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from medsight.config import PROJECT_ROOT
from medsight.dicom_out import SourceReference, derived_objects, file_name, pdf_bytes_of, zip_bytes
from medsight.ingest import load_study
from medsight.pipeline import run_analysis

SAMPLES = PROJECT_ROOT / "models" / "samples"
SC, SR, PDF = "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.104.1"
MEASUREMENTS = [{"kind": "length", "value": 41.5, "calibration": "ImagerPixelSpacing", "label": "cardiac width"},
                {"kind": "angle", "value": 12.0, "label": "costophrenic angle"}]
VERIFICATION = {"summary": {"checks_passed": 5, "checks_failed": 1, "discrepancies": 1}, "backend": "rules",
                "discrepancies": [{"severity": "major", "message": "Effusion seen by the image model is not reported"}]}


class _Case:
    def __init__(self, path, source, tmp_path_factory, **kwargs):
        self.study = load_study(path)
        self.result = run_analysis(self.study, "cough and fever")
        self.analysis = self.result.to_dict()
        self.source = source
        self.pdf = b"%PDF-1.4 test report\n%%EOF\n"  # odd length: the padding byte must not come back
        self.objects = derived_objects(self.study, self.result, source=source, pdf_bytes=self.pdf,
                                       measurements=MEASUREMENTS, verification=VERIFICATION, **kwargs)
        self.paths = _written(self.objects, tmp_path_factory.mktemp("dicom_out"))

    def of_class(self, sop_class):
        return [ds for ds in self.objects if ds.SOPClassUID == sop_class]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    from medsight.synthetic import generate_phantom
    from medsight.synthetic.dicom import write_dicom

    path = write_dicom(generate_phantom(11, size=512, findings=("effusion",)),
                       tmp_path_factory.mktemp("phantom") / "effusion.dcm")
    return _Case(path, pydicom.dcmread(path), tmp_path_factory)


@pytest.fixture(scope="module")
def real_film(tmp_path_factory):
    path = get_testdata_file("RG1_UNCI.dcm")
    return _Case(path, SourceReference.from_dataset(pydicom.dcmread(path, stop_before_pixels=True)), tmp_path_factory)


@pytest.fixture(scope="module")
def png(tmp_path_factory):
    return _Case(SAMPLES / "normal_pa.png", None, tmp_path_factory)


@pytest.fixture(autouse=True, scope="module")
def _home(tmp_path_factory):
    # module-scoped analyses need a data directory before the per-test one exists
    mp = pytest.MonkeyPatch()
    mp.setenv("MEDSIGHT_HOME", str(tmp_path_factory.mktemp("home")))
    mp.setenv("MEDSIGHT_REFERENCE", "off")
    yield
    mp.undo()


def _dciodvfy(path) -> tuple[list[str], list[str]]:
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, errors="replace", timeout=120)
    lines = (run.stdout + run.stderr).splitlines()
    return [l for l in lines if l.startswith("Error")], [l for l in lines if l.startswith("Warning")]


def _content(items):
    """(relationship, value type, concept meaning, value, item) of every SR content item, depth first."""
    for item in items:
        name = item.ConceptNameCodeSequence[0].CodeMeaning if "ConceptNameCodeSequence" in item else ""
        value = {"TEXT": lambda: item.TextValue, "CODE": lambda: item.ConceptCodeSequence[0].CodeMeaning,
                 "NUM": lambda: float(item.MeasuredValueSequence[0].NumericValue)}.get(item.ValueType, lambda: None)()
        yield item.RelationshipType, item.ValueType, name, value, item
        yield from _content(item.get("ContentSequence", []))


def _numbers(sr) -> dict[str, float]:
    return {name: value for _, kind, name, value, _ in _content(sr.ContentSequence) if kind == "NUM"}


def _codes(sr) -> dict[str, str]:
    return {name: value for _, kind, name, value, _ in _content(sr.ContentSequence) if kind == "CODE"}


def _texts(sr) -> list[str]:
    return [value for _, kind, _, value, _ in _content(sr.ContentSequence) if kind == "TEXT"]


def _assert_valid(paths) -> None:
    """Every file passes dciodvfy with no error (warnings are listed in the README)."""
    if shutil.which("dciodvfy") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("dciodvfy (Debian dicom3tools) is required under CI")
        pytest.skip("dciodvfy (Debian dicom3tools) is not installed")
    for path in paths:
        errors, _ = _dciodvfy(path)
        assert errors == [], (path.name, errors)


def _written(objects, folder):
    paths = []
    for ds in objects:
        paths.append(folder / file_name(ds))
        pydicom.dcmwrite(paths[-1], ds, enforce_file_format=True)
    return paths


@pytest.mark.parametrize("case", ["phantom", "real_film", "png"])
def test_every_object_passes_dciodvfy(case, request):
    _assert_valid(request.getfixturevalue(case).paths)


def test_phantom_results_file_into_the_source_study_and_refer_to_its_instance(phantom):
    source = phantom.source
    kinds = [ds.SOPClassUID for ds in phantom.objects]
    assert kinds == [SC] * len(phantom.analysis["maps"]) + [SR, PDF] and len(phantom.analysis["maps"]) >= 1
    series = {ds.SeriesInstanceUID for ds in phantom.objects}
    assert source.SeriesInstanceUID not in series and len(series) == 3
    for ds in phantom.objects:
        assert ds.StudyInstanceUID == source.StudyInstanceUID
        assert ds.PatientID == source.PatientID and ds.PatientName == source.PatientName
        assert ds.AccessionNumber == source.AccessionNumber
        assert "PatientIdentityRemoved" not in ds
    for sc in phantom.of_class(SC):
        ref = sc.SourceImageSequence[0]
        assert (ref.ReferencedSOPInstanceUID, ref.ReferencedSOPClassUID) == (source.SOPInstanceUID, source.SOPClassUID)
    sr = phantom.of_class(SR)[0]
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == source.StudyInstanceUID
    referenced = {i.ReferencedSOPInstanceUID for s in evidence.ReferencedSeriesSequence for i in s.ReferencedSOPSequence}
    assert source.SOPInstanceUID in referenced and {sc.SOPInstanceUID for sc in phantom.of_class(SC)} <= referenced
    images = [item for _, kind, _, _, item in _content(sr.ContentSequence) if kind == "IMAGE"]
    assert images and all(i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID for i in images)
    pdf = phantom.of_class(PDF)[0]
    assert pdf.SourceInstanceSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID


def test_map_captures_burn_in_the_warning_and_name_the_model(phantom):
    models = phantom.analysis["models"]
    for sc, key in zip(phantom.of_class(SC), phantom.analysis["maps"]):
        slot = "anomaly.detector" if key in ("patch_deviation", "spatial_anomaly", "paper_attention") else "pathology.classifier"
        assert sc.BurnedInAnnotation == "YES" and sc.PhotometricInterpretation == "RGB"
        assert "NOT FOR DIAGNOSTIC USE" in sc.SeriesDescription and "NOT FOR DIAGNOSTIC USE" in sc.ImageComments
        equipment = sc.ContributingEquipmentSequence[0]
        assert equipment.ManufacturerModelName == models[slot]["title"]
        assert equipment.SoftwareVersions == models[slot]["version"]
        assert models[slot]["tier"].upper() in equipment.ContributionDescription
        assert models[slot]["version"] in sc.DerivationDescription and "DEMO tier" in sc.DerivationDescription
        pixels = sc.pixel_array
        assert sc.Rows > phantom.study.image.shape[0] and sc.Columns == phantom.study.image.shape[1]
        band = pixels[: sc.Rows - phantom.study.image.shape[0]]
        warning_yellow = (band[..., 0] > 200) & (band[..., 1] > 170) & (band[..., 2] < 60)
        assert warning_yellow.sum() > 50, "the warning caption is drawn in the pixels"


def test_sr_scores_and_codes_equal_the_analysis(phantom):
    sr = phantom.of_class(SR)[0]
    numbers, codes, analysis = _numbers(sr), _codes(sr), phantom.analysis
    anomaly, pathology = analysis["anomaly"], analysis["pathology"]
    assert numbers["Fused anomaly score"] == pytest.approx(anomaly["fused_score"], rel=1e-9)
    assert numbers["Anomaly score threshold"] == pytest.approx(anomaly["threshold"], rel=1e-9)
    assert codes["Anomaly score verdict"] == ("Outside normal range" if anomaly["is_anomalous"] else "Within normal range")
    for label, probability in pathology["probabilities"].items():
        assert numbers[f"Probability of {label}"] == pytest.approx(probability, rel=1e-9)
        assert numbers[f"Operating threshold for {label}"] == pytest.approx(pathology["thresholds"][label], rel=1e-9)
        assert codes[label] == ("Present" if label in pathology["positives"] else "Absent")
    assert codes["Input gate decision"] == "Accepted as a frontal chest radiograph"
    assert codes["Analysis status"] == analysis["status"]
    texts = _texts(sr)
    assert "tier DEMO" in texts and analysis["models"]["pathology.classifier"]["version"] in texts
    assert numbers["Length"] == 41.5 and numbers["Angle"] == 12.0
    assert "ImagerPixelSpacing" in texts and "cardiac width" in texts
    assert codes["Report verification outcome"] == "Discrepancies found"
    assert numbers["Discrepancies"] == 1 and any("not reported" in t for t in texts)
    assert sr.VerificationFlag == "UNVERIFIED" and sr.PreliminaryFlag == "PRELIMINARY"
    template = sr.ContentTemplateSequence[0]
    assert (template.MappingResource, template.TemplateIdentifier) == ("DCMR", "1500")


def test_real_film_sr_says_withheld_and_carries_no_score(real_film):
    analysis, objects = real_film.analysis, real_film.objects
    assert analysis["status"] == "WITHHELD" and set(analysis["withheld"]) == {"anomaly.detector", "pathology.classifier"}
    assert [ds.SOPClassUID for ds in objects] == [SR, PDF], "withheld maps are not written"
    sr = objects[0]
    assert sr.StudyInstanceUID == real_film.source.study_instance_uid
    numbers = _numbers(sr)
    assert set(numbers) == {"Length", "Angle", "Checks passed", "Checks failed", "Discrepancies"}
    statuses = [value for _, kind, name, value, _ in _content(sr.ContentSequence) if name == "Output status"]
    assert statuses == ["Withheld: no value reported"] * 2
    written = b"".join(path.read_bytes() for path in real_film.paths)
    kept = real_film.result.objects["withheld"]
    hidden = [*kept["pathology.classifier"]["output"]["probabilities"].values(), kept["anomaly.detector"]["output"]["fused_score"]]
    for value in hidden:
        assert f"{value:.5f}".encode() not in written, value


def test_a_refused_study_writes_the_refusal_and_no_score(tmp_path):
    study = load_study(get_testdata_file("CT_small.dcm"))
    result = run_analysis(study)
    assert result.status == "REFUSED"
    objects = derived_objects(study, result, source=pydicom.dcmread(get_testdata_file("CT_small.dcm")),
                              pdf_bytes=b"%PDF-1.4\n")
    sr = objects[0]
    assert _codes(sr)["Input gate decision"] == "Refused: not a frontal chest radiograph"
    assert not _numbers(sr)
    _assert_valid(_written(objects, tmp_path))


def test_png_results_form_a_new_anonymous_study_derived_from_a_non_dicom_file(png):
    objects = png.objects
    assert [ds.SOPClassUID for ds in objects] == [SC] * (1 + len(png.analysis["maps"])) + [SR, PDF]
    study_uids = {ds.StudyInstanceUID for ds in objects}
    assert len(study_uids) == 1
    analysed = objects[0]
    assert analysed.PhotometricInterpretation == "MONOCHROME2"
    assert (analysed.Rows, analysed.Columns) == png.study.image.shape
    for ds in objects:
        assert str(ds.PatientName) == "ANONYMOUS^" and ds.PatientID in ("", None)
        assert ds.PatientIdentityRemoved == "YES" and "non-DICOM file (PNG)" in ds.DeidentificationMethod
        assert "non-DICOM file (PNG)" in ds.StudyDescription
    assert "non-DICOM file (PNG)" in analysed.ImageComments and "non-DICOM file (PNG)" in analysed.DerivationDescription
    sr = objects[-2]
    images = [item for _, kind, _, _, item in _content(sr.ContentSequence) if kind == "IMAGE"]
    assert images and all(i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == analysed.SOPInstanceUID for i in images)
    for sc in objects[1:-2]:
        assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == analysed.SOPInstanceUID


def test_zip_holds_every_object_and_the_pdf_round_trips(phantom):
    archive = zipfile.ZipFile(io.BytesIO(zip_bytes(phantom.objects)))
    assert sorted(archive.namelist()) == sorted(file_name(ds) for ds in phantom.objects)
    read = {pydicom.dcmread(io.BytesIO(archive.read(name))).SOPInstanceUID for name in archive.namelist()}
    assert read == {ds.SOPInstanceUID for ds in phantom.objects}
    pdf_name = file_name(phantom.of_class(PDF)[0])
    stored = pydicom.dcmread(io.BytesIO(archive.read(pdf_name)))
    assert stored.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert pdf_bytes_of(stored) == phantom.pdf


def test_the_radiologist_s_signature_marks_the_report_verified(phantom, tmp_path):
    objects = derived_objects(phantom.study, phantom.result, source=phantom.source, pdf_bytes=phantom.pdf,
                              verifying_observer="Radiologist^Test", verifying_organization="Test Hospital")
    sr = next(ds for ds in objects if ds.SOPClassUID == SR)
    _assert_valid(_written([sr], tmp_path))
    assert sr.VerificationFlag == "VERIFIED" and sr.PreliminaryFlag == "FINAL"
    assert str(sr.VerifyingObserverSequence[0].VerifyingObserverName) == "Radiologist^Test"


def test_without_the_original_identifiers_a_dicom_study_is_not_filed_into_a_guessed_study(phantom, tmp_path):
    objects = derived_objects(phantom.study, phantom.analysis, heatmaps=phantom.result.objects.get("heatmaps"),
                              pdf_bytes=phantom.pdf)
    assert {ds.StudyInstanceUID for ds in objects} != {phantom.source.StudyInstanceUID}
    assert all(ds.PatientID in ("", None) and "identifiers not kept" in ds.DeidentificationMethod
               and "identifiers not kept" in ds.StudyDescription for ds in objects)
    assert "original identifiers were not kept" in objects[0].ImageComments
    assert np.asarray(objects[0].pixel_array).ndim == 2
    _assert_valid(_written(objects, tmp_path))


def test_analyze_page_offers_the_dicom_results_on_request(logged_in_app, tmp_path):
    from medsight.synthetic import generate_phantom, write_png

    path = write_png(generate_phantom(seed=7, size=256, findings=("effusion",)), tmp_path / "effusion.png")
    study = load_study(path)
    at = logged_in_app(timeout=240)
    at.switch_page("views/analyze.py").run()
    at.session_state["study"] = study
    at.run()
    next(b for b in at.button if b.label == "Analyze").click()
    at.run(timeout=240)
    assert len(at.get("download_button")) == 1, "only the PDF until DICOM results are asked for"
    at.toggle(key=f"dicom_results_{study.study_id}").set_value(True)
    at.run(timeout=120)
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.get("download_button")) == 2
    assert [c.label for c in at.checkbox] == ["Sign the SR as verified by me"], "a PNG has no original study to file into"
