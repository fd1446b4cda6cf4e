"""The viewer payload (medsight.display): modality values, window presets, calibration and map layers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pydicom
import pytest

from medsight import display
from medsight.ingest import load_study
from medsight.synthetic import generate_phantom, write_png
from medsight.synthetic.dicom import write_dicom


@pytest.fixture(scope="module")
def stored() -> np.ndarray:
    """12-bit stored values of a small phantom."""
    image = generate_phantom(seed=11, size=96).image
    return np.round(np.clip(image, 0, 1) * 4095).astype(np.uint16)


def _dicom(tmp_path, stored, name="film.dcm", **kwargs):
    return load_study(write_dicom(stored, tmp_path / name, **kwargs))


def test_pixels_are_modality_values_at_full_resolution(tmp_path, stored):
    study = _dicom(tmp_path, stored, rescale_slope=1.0, rescale_intercept=-1024.0)
    payload = display.unpack(display.pack(display.viewer_payload(study)))
    pixels = payload.blocks["image"]
    assert pixels.shape == stored.shape
    assert pixels.dtype == np.int16  # whole numbers below zero: signed 16-bit, not floats or an 8-bit image
    np.testing.assert_array_equal(pixels, stored.astype(np.int32) - 1024)
    assert payload.header["units"].startswith("modality values")
    assert payload.header["min"] == float(stored.min()) - 1024 and payload.header["max"] == float(stored.max()) - 1024


def test_fractional_rescale_travels_as_float32_and_unsigned_as_uint16(tmp_path, stored):
    half = display.unpack(display.pack(display.viewer_payload(_dicom(tmp_path, stored, "half.dcm", rescale_slope=0.5))))
    assert half.blocks["image"].dtype == np.float32
    np.testing.assert_allclose(half.blocks["image"], stored * 0.5)
    plain = display.viewer_payload(_dicom(tmp_path, stored, "plain.dcm"))
    assert plain.blocks["image"].dtype == np.uint16


def test_presets_start_with_the_header_windows_then_auto_and_chest(tmp_path, stored):
    study = _dicom(tmp_path, stored, windows=[(2000.0, 3000.0), (1500.0, 800.0)],
                   window_explanations=["STANDARD", "LUNG"])
    header = display.viewer_payload(study).header
    presets = header["presets"]
    assert [(p["name"], p["center"], p["width"], p["source"]) for p in presets[:2]] == [
        ("STANDARD", 2000.0, 3000.0, "header"), ("LUNG", 1500.0, 800.0, "header")]
    assert [p["name"] for p in presets[2:]] == ["Auto", "Lung", "Mediastinum", "Bone"]
    lo, hi = np.percentile(stored, display.AUTO_PERCENTILES)
    auto = presets[2]
    assert auto["center"] == pytest.approx((lo + hi) / 2) and auto["width"] == pytest.approx(hi - lo)
    assert header["window"] == {"center": 2000.0, "width": 3000.0}  # opens with the file's first window
    lung, mediastinum = presets[3], presets[4]
    assert lung["center"] < mediastinum["center"]  # lungs are the low (dark) values of a MONOCHROME2 film


def test_monochrome1_opens_inverted_with_mirrored_chest_presets(tmp_path, stored):
    study = _dicom(tmp_path, stored, photometric="MONOCHROME1")
    header = display.viewer_payload(study).header
    assert header["invert"] is True
    presets = {p["name"]: p for p in header["presets"]}
    assert presets["Lung"]["center"] > presets["Mediastinum"]["center"]  # stored inverted: lungs are high values


def test_pixel_spacing_equal_to_imager_spacing_is_at_the_detector(tmp_path, stored):
    calibration = display.viewer_payload(_dicom(tmp_path, stored, pixel_spacing=(0.2, 0.25))).header["calibration"]
    assert calibration["calibrated"] is True and calibration["source"] == "PixelSpacing"
    assert (calibration["row_mm"], calibration["col_mm"]) == (0.2, 0.25)
    assert calibration["plane"] == "detector" and "at the detector" in calibration["label"]


def test_imager_pixel_spacing_alone_is_used_and_labelled_at_the_detector(tmp_path, stored):
    path = write_dicom(stored, tmp_path / "imager.dcm", pixel_spacing=(0.139, 0.139))
    ds = pydicom.dcmread(path)
    del ds.PixelSpacing
    ds.save_as(path)
    calibration = display.calibration(load_study(path))
    assert calibration["source"] == "ImagerPixelSpacing" and calibration["row_mm"] == pytest.approx(0.139)
    assert calibration["plane"] == "detector" and "not magnification-corrected" in calibration["label"]


def test_pixel_spacing_that_differs_from_the_detector_is_at_the_patient(tmp_path, stored):
    study = _dicom(tmp_path, stored, pixel_spacing=(0.2, 0.2))
    corrected = dataclasses.replace(study, metadata={**study.metadata, "pixel_spacing": [0.18, 0.18]})
    calibration = display.calibration(corrected)
    assert calibration["source"] == "PixelSpacing" and calibration["plane"] == "patient"
    assert calibration["row_mm"] == 0.18


def test_calibration_type_and_magnification_estimate_are_read_from_the_file(tmp_path, stored):
    path = write_dicom(stored, tmp_path / "geometry.dcm", pixel_spacing=(0.2, 0.2))
    ds = pydicom.dcmread(path)
    ds.PixelSpacingCalibrationType = "GEOMETRY"  # PixelSpacing equal to the detector's, but corrected by geometry
    ds.save_as(path)
    calibration = display.calibration(load_study(path))
    assert calibration["source"] == "PixelSpacing" and calibration["plane"] == "patient"
    assert "geometry" in calibration["label"]

    path = write_dicom(stored, tmp_path / "magnified.dcm", pixel_spacing=(0.15, 0.15))
    ds = pydicom.dcmread(path)
    del ds.PixelSpacing
    ds.EstimatedRadiographicMagnificationFactor = "1.12"
    ds.save_as(path)
    calibration = display.calibration(load_study(path))
    assert calibration["plane"] == "detector" and calibration["estimated_magnification"] == pytest.approx(1.12)
    assert "×1.12" in calibration["label"]


def test_png_is_uncalibrated_and_opens_at_its_full_stored_range(tmp_path):
    study = load_study(write_png(generate_phantom(seed=2, size=64), tmp_path / "film.png"))
    header = display.viewer_payload(study).header
    assert header["calibration"]["calibrated"] is False and header["calibration"]["unit"] == "px"
    assert "uncalibrated" in header["calibration"]["label"]
    assert header["presets"][0]["name"] == "Full range" and header["window"] == {"center": 127.5, "width": 256.0}
    assert header["units"] == "stored grey levels"


def test_link_group_and_what_the_window_link_compares_travel_in_the_header(tmp_path, stored):
    dicom = _dicom(tmp_path, stored, photometric="MONOCHROME1")
    header = display.viewer_payload(dicom, link_group="priors").header
    assert header["link_group"] == "priors"
    assert (header["modality"], header["photometric"], header["bits"]) == ("CR", "MONOCHROME1", 12)
    assert display.viewer_payload(dicom).header["link_group"] is None
    png = display.viewer_payload(load_study(write_png(generate_phantom(seed=2, size=64), tmp_path / "f.png"))).header
    assert (png["photometric"], png["bits"], png["units"]) == (None, 8, "stored grey levels")


def test_a_study_reopened_from_history_opens_at_its_displayed_range(tmp_path, stored):
    from medsight.ingest.study import Study

    dicom = _dicom(tmp_path, stored, windows=[(2000.0, 3000.0)])
    reopened = Study.from_dict(dicom.to_dict(), image=dicom.image)
    assert reopened.window_used is not None  # in the file's values, which the reopened study no longer has
    header = display.viewer_payload(reopened).header
    assert header["window"] == {"center": 32767.5, "width": 65536.0}
    assert header["presets"][0]["name"] == "Full range" and header["presets"][0]["source"] == "displayed range"
    assert all(p["source"] != "header" for p in header["presets"])
    assert header["units"].startswith("displayed grey levels") and header["bits"] == 16


def test_maps_keep_their_own_geometry_and_cover_the_whole_image(tmp_path, stored):
    study = _dicom(tmp_path, stored)
    rows, cols = stored.shape
    full = np.zeros((rows, cols), np.float32)
    full[10:20, 30:40] = 1.0
    coarse = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)

    class Attention:  # the paper's latent attention: not an image-space map
        kind, heat, title, caption = "paper_attention", np.ones((8, 8), np.float32), "Paper attention", ""

    payload = display.unpack(display.pack(display.viewer_payload(
        study, {"patch_deviation": full, "pathology:Effusion": coarse, "paper_attention": Attention()})))
    maps = {m["key"]: m for m in payload.header["maps"]}
    assert set(maps) == {"patch_deviation", "pathology:Effusion"}
    assert maps["patch_deviation"]["aligned"] is True
    assert maps["patch_deviation"]["extent"] == [0.0, 0.0, float(cols), float(rows)]
    hot = np.argwhere(payload.blocks["map:patch_deviation"] == 255)
    assert hot.min(axis=0).tolist() == [10, 30] and hot.max(axis=0).tolist() == [19, 39]  # same pixels as the image
    assert (maps["pathology:Effusion"]["rows"], maps["pathology:Effusion"]["columns"]) == (3, 4)
    assert maps["pathology:Effusion"]["aligned"] is False
    assert maps["pathology:Effusion"]["extent"] == [0.0, 0.0, float(cols), float(rows)]
    np.testing.assert_array_equal(payload.blocks["map:pathology:Effusion"], np.rint(coarse * 255).astype(np.uint8))
    assert len(payload.header["colour_table"]) == 256


def test_map_with_an_explicit_extent_and_bad_maps():
    entry, block = display.map_layer("m", np.ones((5, 5)), (100, 80), extent=(10, 20, 60, 70))
    assert entry["extent"] == [10.0, 20.0, 60.0, 70.0] and block.dtype == np.uint8
    with pytest.raises(ValueError):
        display.map_layer("m", np.ones(5), (100, 80))
    with pytest.raises(ValueError):
        display.map_layer("m", np.ones((5, 5)), (100, 80), extent=(10, 10, 10, 20))


def test_message_is_binary_aligned_and_content_addressed(tmp_path, stored):
    study = _dicom(tmp_path, stored)
    message = display.pack(display.viewer_payload(study))
    assert message[:8] == display.MAGIC
    assert len(message) < stored.size * 2 + 200_000  # 2 bytes a pixel plus a small header, no JSON number lists
    header = display.unpack(message).header
    base = 12 + int.from_bytes(message[8:12], "little")
    assert base % 8 == 0 and all(b["offset"] % 8 == 0 for b in header["blocks"])
    assert display.unpack(display.pack(display.viewer_payload(study))).header["content_id"] == header["content_id"]
    other = display.pack(display.viewer_payload(study, {"m": np.ones(stored.shape, np.float32)}))
    assert display.unpack(other).header["content_id"] != header["content_id"]
    with pytest.raises(ValueError):
        display.unpack(b"not a viewer message")


def test_report_measurements_keep_calibration_and_never_turn_pixels_into_mm():
    from medsight.display import report_measurements

    state = {"measurements": [
        {"type": "length", "value": 60.04, "unit": "mm", "calibrated": True, "spacing_source": "ImagerPixelSpacing",
         "plane": "detector", "calibration": "ImagerPixelSpacing (at the detector)", "text": "60.0 mm at detector"},
        {"type": "length", "value": 300.0, "unit": "px", "calibrated": False, "text": "300.0 px (uncalibrated)"},
        {"type": "angle", "value": 90.2, "unit": "deg", "calibrated": True, "text": "90.2°"},
        {"type": "length", "value": None}]}
    length, pixels, angle = report_measurements(state)
    assert (length["unit"], length["calibration"], length["value"]) == ("mm", "ImagerPixelSpacing (at the detector)", 60.04)
    assert (pixels["unit"], pixels["calibrated"], pixels["calibration"]) == ("px", False, "uncalibrated")
    assert (angle["kind"], angle["unit"], angle["calibration"]) == ("angle", "deg", "not applicable")
    assert report_measurements(None) == []


def test_pdf_and_sr_carry_the_measurements_and_leave_an_uncalibrated_length_out_of_the_sr():
    import pypdfium2
    from pydicom.data import get_testdata_file

    from medsight.dicom_out.structured_report import _measurement_groups
    from medsight.display import report_measurements
    from medsight.report import build_pdf

    measurements = report_measurements({"measurements": [
        {"type": "length", "value": 41.5, "calibrated": True, "calibration": "PixelSpacing", "text": "41.5 mm"},
        {"type": "length", "value": 120.0, "calibrated": False, "text": "120.0 px (uncalibrated)"}]})
    pdf = build_pdf({"status": "COMPLETE", "summary": {}, "measurements": measurements})
    text = "".join(page.get_textpage().get_text_range() for page in pypdfium2.PdfDocument(pdf))
    assert "41.5 mm" in text and "120.0 px (uncalibrated)" in text and "Measurements" in text
    header = __import__("pydicom").dcmread(get_testdata_file("RG1_UNCI.dcm"), stop_before_pixels=True)
    groups = _measurement_groups(measurements, header)
    assert len(groups) == 1

    def numbers(items):
        for item in items:
            if item.ValueType == "NUM":
                yield float(item.MeasuredValueSequence[0].NumericValue)
            yield from numbers(item.get("ContentSequence", []))

    assert list(numbers(groups[0])) == [41.5]
    assert _measurement_groups(measurements[1:], header) == []
