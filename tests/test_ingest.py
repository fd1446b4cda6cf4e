"""Ingest: PNG/JPEG/DICOM variants built from synthetic phantoms, pydicom's own test files, every bad input."""

from __future__ import annotations

import dataclasses
import io
import json
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageOps
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence

from medsight.ingest import IngestError, Study, apply_window, deidentify_dataset, load_study
from medsight.synthetic import generate_phantom


def pydicom_file(name: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.data.get_testdata_file(name)


@pytest.fixture(scope="module")
def phantom() -> np.ndarray:
    """A 96x96 synthetic chest radiograph in [0, 1]."""
    return generate_phantom(7, size=96).image


def png_bytes(arr: np.ndarray, **save_kwargs) -> bytes:
    out = io.BytesIO()
    Image.fromarray(arr).save(out, format="PNG", **save_kwargs)
    return out.getvalue()


def make_dicom(
    stored: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    modality: str = "CR",
    slope: float | None = None,
    intercept: float | None = None,
    windows: list[tuple[float, float]] | None = None,
    comments: str | None = None,
) -> Dataset:
    """A minimal but valid DICOM dataset (file meta included) around ``stored`` pixels."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = uid.DigitalXRayImageStorageForPresentation
    ds.SOPClassUID = uid.DigitalXRayImageStorageForPresentation
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.Modality = modality
    ds.ViewPosition = "PA"
    ds.PatientName = "DOE^JANE"
    ds.PatientID = "PID-0001"
    ds.PatientBirthDate = "19700101"
    ds.AccessionNumber = "ACC123"
    ds.InstitutionName = "General Hospital"
    ds.ReferringPhysicianName = "WHO^DR"
    ds.StudyDate = "20240315"
    ds.PixelSpacing = [0.2, 0.25]
    ds.set_pixel_data(stored, photometric, bits_stored)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if slope is not None:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept or 0.0
    if windows:
        ds.WindowCenter = [c for c, _ in windows] if len(windows) > 1 else windows[0][0]
        ds.WindowWidth = [w for _, w in windows] if len(windows) > 1 else windows[0][1]
    if comments:
        ds.ImageComments = comments
    return ds


def dicom_bytes(ds: Dataset, *, preamble: bool = True) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=preamble)
    return out.getvalue()


@pytest.fixture(scope="module")
def stored12(phantom) -> np.ndarray:
    """The phantom as 12-bit stored values (bright = dense)."""
    return np.round(phantom * 4095).astype(np.uint16)


# ---------------------------------------------------------------- VOI function


def test_apply_window_follows_ps33_linear_formula():
    x = np.array([0.0, 40.0, 50.0, 59.5, 60.0, 100.0])
    out = apply_window(x, center=50, width=20)
    # PS3.3 C.11.2.1.2.1: y = ((x - (c - 0.5)) / (w - 1) + 0.5), clipped to [0, 1]
    expected = np.clip((x - 49.5) / 19 + 0.5, 0, 1)
    expected[x <= 49.5 - 9.5] = 0
    expected[x > 49.5 + 9.5] = 1
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert out.dtype == np.float32


def test_apply_window_rejects_invalid_width_and_supports_sigmoid():
    with pytest.raises(IngestError, match="at least 1"):
        apply_window(np.zeros(3), 0, 0.5)
    sig = apply_window(np.array([-1000.0, 0.0, 1000.0]), 0, 100, "SIGMOID")
    np.testing.assert_allclose(sig, [0.0, 0.5, 1.0], atol=1e-6)


# ---------------------------------------------------------------- PNG / JPEG


def test_png_8bit_grey_is_stored_levels_over_255(phantom):
    arr = np.round(phantom * 255).astype(np.uint8)
    study = load_study(png_bytes(arr), "chest.png")
    assert study.source_format == "png" and study.raw is None and study.bits == 8
    np.testing.assert_allclose(study.image, arr / 255.0, atol=1e-6)
    assert study.original_size == arr.shape and study.filename == "chest.png"
    assert study.image.dtype == np.float32 and study.modality is None
    json.dumps(study.to_dict())


def test_png_16bit_keeps_full_depth():
    # 256 distinct 16-bit levels that an 8-bit reduction would collapse into one or two.
    ramp = (40000 + np.arange(256, dtype=np.uint16)).reshape(16, 16)
    study = load_study(png_bytes(ramp))
    assert study.bits == 16
    assert len(np.unique(study.image)) == 256
    np.testing.assert_allclose(study.image, ramp / 65535.0, atol=1e-6)


def test_png_16bit_with_12_significant_bits_is_scaled_to_12_bits(stored12):
    study = load_study(png_bytes(stored12))
    np.testing.assert_allclose(study.image, stored12 / 4095.0, atol=1e-6)
    assert any("12 significant bits" in n for n in study.notices)


def test_png_rgb_rgba_palette_la_become_luminance(phantom):
    grey = np.round(phantom * 255).astype(np.uint8)
    rgb = np.stack([grey, grey, grey], axis=-1)
    rgba = np.dstack([rgb, np.full_like(grey, 255)])
    la = np.dstack([grey, np.full_like(grey, 255)])
    palette = Image.fromarray(grey).convert("P")
    out = io.BytesIO()
    palette.save(out, format="PNG")
    for data in (png_bytes(rgb), png_bytes(rgba), out.getvalue(), png_bytes(la)):
        study = load_study(data)
        np.testing.assert_allclose(study.image, grey / 255.0, atol=1.0 / 255 + 1e-6)
    coloured = np.zeros((8, 8, 3), np.uint8)
    coloured[..., 1] = 200  # pure green: BT.601 luma 0.587 * 200
    np.testing.assert_allclose(load_study(png_bytes(coloured)).image, 0.587 * 200 / 255, atol=1e-4)


def test_png_16bit_rgb_is_not_reduced_to_8bit():
    cv2 = pytest.importorskip("cv2")
    ramp = (30000 + np.arange(256, dtype=np.uint16)).reshape(16, 16)
    ok, buf = cv2.imencode(".png", np.dstack([ramp, ramp, ramp]))
    assert ok
    study = load_study(buf.tobytes())
    assert study.bits == 16 and len(np.unique(study.image)) == 256


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(orientation):
    arr = np.arange(6 * 10, dtype=np.uint8).reshape(6, 10) * 4
    im = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    im.save(out, format="PNG", exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(out.getvalue()))))
    study = load_study(out.getvalue())
    np.testing.assert_allclose(study.image, expected / 255.0, atol=1e-6)


def test_jpeg_grey_and_rgb(phantom, tmp_path):
    grey = np.round(phantom * 255).astype(np.uint8)
    path = tmp_path / "chest.jpg"
    Image.fromarray(grey).save(path, format="JPEG", quality=95)
    study = load_study(path)
    assert study.source_format == "jpeg" and study.filename == "chest.jpg"
    assert np.abs(study.image - grey / 255.0).mean() < 0.02
    rgb_path = tmp_path / "chest_rgb.jpg"
    Image.fromarray(np.dstack([grey] * 3)).save(rgb_path, format="JPEG", quality=95)
    assert np.abs(load_study(rgb_path).image - grey / 255.0).mean() < 0.02


def test_png_text_chunk_marks_synthetic():
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Comment", "SYNTHETIC PHANTOM seed 7")
    arr = np.full((8, 8), 100, np.uint8)
    assert load_study(png_bytes(arr, pnginfo=info)).synthetic is True
    assert load_study(png_bytes(arr)).synthetic is False


def test_sources_path_filelike_and_bytes_agree(phantom, tmp_path):
    data = png_bytes(np.round(phantom * 255).astype(np.uint8))
    path = tmp_path / "a.png"
    path.write_bytes(data)
    by_path, by_str = load_study(path), load_study(str(path))
    handle = io.BytesIO(data)
    handle.name = "upload.png"
    by_file = load_study(handle)
    assert load_study(handle).study_id == by_file.study_id  # an upload read twice still loads
    by_bytes = load_study(data, filename="other-name.png")
    assert by_file.filename == "upload.png" and by_str.filename == "a.png"
    # Same pixels → same id, whatever the file is called.
    assert len({by_path.study_id, by_str.study_id, by_file.study_id, by_bytes.study_id}) == 1
    assert len(by_path.study_id) == 16 and int(by_path.study_id, 16) >= 0
    changed = np.round(phantom * 255).astype(np.uint8)
    changed[0, 0] ^= 1
    assert load_study(png_bytes(changed)).study_id != by_path.study_id


def test_png_with_window_and_thumbnail(phantom):
    arr = np.round(phantom * 255).astype(np.uint8)
    study = load_study(png_bytes(arr))
    narrow = study.with_window(128, 64)
    np.testing.assert_allclose(narrow.image, apply_window(arr.astype(np.float32), 128, 64), atol=1e-6)
    assert narrow.window_used == (128.0, 64.0) and narrow.study_id != study.study_id
    assert study.window_used is None  # the original is untouched
    thumb = Image.open(io.BytesIO(study.thumbnail_png(32)))
    assert thumb.format == "PNG" and max(thumb.size) == 32


# ---------------------------------------------------------------- to_dict / from_dict


def same_study(a: Study, b: Study) -> bool:
    """Field-by-field equality as the dataclass defines it, with pixel arrays compared by value."""
    for f in dataclasses.fields(Study):
        if not f.compare:
            continue
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray) and np.array_equal(x, y)):
                return False
        elif type(x) is not type(y) or x != y:
            return False
    return True


def _phantom_png_study(tmp_path: Path) -> Study:
    from medsight.synthetic import write_png

    path = write_png(generate_phantom(seed=7, size=128, findings=("nodule",)), tmp_path / "phantom.png", bits=16)
    return load_study(path)


@pytest.mark.parametrize("source", ["MR_small.dcm", "phantom.png"])
def test_from_dict_round_trips_to_dict(source, tmp_path):
    study = load_study(pydicom_file(source)) if source.endswith(".dcm") else _phantom_png_study(tmp_path)
    assert study.pixel_spacing is not None or study.synthetic  # both tuple and flag fields are exercised
    data = study.to_dict()
    # value_range comes from the values the window applies to: the raw DICOM values, which are passed
    # back, or a PNG's grey levels, which to_dict leaves out.
    expected = dict(data, value_range=data["value_range"] if study.raw is not None else None)
    for stored in (data, json.loads(json.dumps(data))):
        back = Study.from_dict(stored, image=study.image, raw=study.raw)
        assert same_study(back, study)
        assert back.to_dict() == expected
    back.notices.append("changed")
    back.metadata["changed"] = True
    assert "changed" not in study.notices and "changed" not in study.metadata and stored == json.loads(json.dumps(data))


# ---------------------------------------------------------------- DICOM built with pydicom


def test_dicom_rescale_and_first_window(stored12):
    ds = make_dicom(stored12, slope=2.0, intercept=-1024.0, windows=[(1500.0, 3000.0), (500.0, 800.0)])
    study = load_study(dicom_bytes(ds), "chest.dcm")
    np.testing.assert_allclose(study.raw, stored12 * 2.0 - 1024.0)
    assert study.windows == [(1500.0, 3000.0), (500.0, 800.0)]
    assert study.window_used == (1500.0, 3000.0)
    np.testing.assert_allclose(study.image, apply_window(study.raw, 1500, 3000), atol=1e-6)
    assert study.modality == "CR" and study.view_position == "PA"
    assert study.pixel_spacing == (0.2, 0.25) and study.bits == 12
    assert study.original_size == stored12.shape and study.notices == []


def test_dicom_selected_and_explicit_window(stored12):
    ds = make_dicom(stored12, windows=[(2000.0, 4000.0), (800.0, 600.0)])
    data = dicom_bytes(ds)
    second = load_study(data, window_index=1)
    assert second.window_used == (800.0, 600.0)
    np.testing.assert_allclose(second.image, apply_window(second.raw, 800, 600), atol=1e-6)
    explicit = load_study(data, window=(1000, 200))
    np.testing.assert_allclose(explicit.image, apply_window(explicit.raw, 1000, 200), atol=1e-6)
    missing = load_study(data, window_index=5)
    assert missing.window_used == (2000.0, 4000.0)
    assert any("does not exist" in n for n in missing.notices)
    rewindowed = load_study(data).with_window(800, 600)
    np.testing.assert_allclose(rewindowed.image, second.image)
    assert rewindowed.study_id == second.study_id


def test_dicom_voi_lut_sequence_is_applied(stored12):
    ds = make_dicom(stored12, windows=[(2000.0, 4000.0)])
    lut = np.round(np.sqrt(np.arange(4096) / 4095.0) * 255).astype(np.uint16)  # gamma-like curve
    item = Dataset()
    item.add_new(0x00283002, "US", [4096, 0, 8])  # LUT Descriptor: entries, first value, bits
    item.add_new(0x00283006, "US", lut.tolist())  # LUT Data
    ds.VOILUTSequence = Sequence([item])
    study = load_study(dicom_bytes(ds))
    np.testing.assert_allclose(study.image, lut[stored12] / 255.0, atol=1e-6)
    assert study.window_used is None and "VOI LUT" in study.metadata["voi"]
    # An explicit window still wins over the table.
    assert load_study(dicom_bytes(ds), window=(2000, 4000)).window_used == (2000.0, 4000.0)


def test_monochrome1_is_inverted(stored12):
    windows = [(2048.0, 4096.0)]
    mono2 = load_study(dicom_bytes(make_dicom(stored12, windows=windows)))
    mono1 = load_study(dicom_bytes(make_dicom(stored12, photometric="MONOCHROME1", windows=windows)))
    np.testing.assert_allclose(mono1.image, 1.0 - mono2.image, atol=1e-6)
    # In MONOCHROME1 a high stored value is dark: the brightest stored pixel displays darkest.
    brightest = np.unravel_index(np.argmax(stored12), stored12.shape)
    assert mono1.image[brightest] == pytest.approx(mono1.image.min())
    assert mono1.image[brightest] == pytest.approx(1.0 - (stored12.max() + 0.5) / 4095, abs=1e-3)
    assert mono2.image[brightest] > 0.8
    # Re-windowing keeps the inversion.
    np.testing.assert_allclose(mono1.with_window(1000, 500).image, 1 - mono2.with_window(1000, 500).image, atol=1e-6)


def test_no_window_uses_percentile_window_with_notice(stored12):
    study = load_study(dicom_bytes(make_dicom(stored12)))
    lo, hi = np.percentile(stored12, [0.5, 99.5])
    center, width = study.window_used
    assert center - width / 2 == pytest.approx(lo) and center + width / 2 == pytest.approx(hi)
    assert any("no display window" in n for n in study.notices)
    assert study.image.min() == 0.0 and study.image.max() == 1.0


def test_small_value_range_still_gets_full_contrast(stored12):
    # Modality values spanning < 1 unit (e.g. a parametric map) cannot use a LINEAR window (width >= 1).
    study = load_study(dicom_bytes(make_dicom(stored12, slope=0.0001, intercept=0.0)))
    assert study.raw.max() < 0.5
    assert study.image.min() == 0.0 and study.image.max() == 1.0
    assert np.corrcoef(study.image.ravel(), stored12.ravel())[0, 1] > 0.99


def test_multiframe_shows_first_frame_with_notice(stored12):
    frames = np.stack([stored12, 4095 - stored12, stored12 // 2])
    ds = make_dicom(frames, windows=[(2048.0, 4096.0)])
    study = load_study(dicom_bytes(ds))
    single = load_study(dicom_bytes(make_dicom(stored12, windows=[(2048.0, 4096.0)])))
    np.testing.assert_allclose(study.image, single.image)
    assert any("3 frames" in n for n in study.notices)


@pytest.mark.parametrize(
    "syntax", [uid.RLELossless, uid.JPEGLSLossless, uid.JPEG2000Lossless], ids=["RLE", "JPEG-LS", "JPEG2000"]
)
def test_compressed_dicom_decodes_to_the_same_pixels(stored12, syntax):
    plain = load_study(dicom_bytes(make_dicom(stored12, windows=[(2048.0, 4096.0)])))
    ds = make_dicom(stored12, windows=[(2048.0, 4096.0)])
    ds.compress(syntax, generate_instance_uid=False)
    study = load_study(dicom_bytes(ds))
    assert study.metadata["transfer_syntax"] == syntax.name
    np.testing.assert_array_equal(study.image, plain.image)
    assert study.study_id == plain.study_id


def test_non_radiograph_modality_loads_with_notice(stored12):
    study = load_study(dicom_bytes(make_dicom(stored12, modality="CT", windows=[(40.0, 400.0)])))
    assert study.modality == "CT"
    assert any("CT is not a plain radiograph" in n for n in study.notices)


def test_synthetic_marker_in_image_comments(stored12):
    marked = load_study(dicom_bytes(make_dicom(stored12, comments="SYNTHETIC PHANTOM seed=7")))
    assert marked.synthetic is True
    assert load_study(dicom_bytes(make_dicom(stored12))).synthetic is False


def test_dicom_detected_by_content_without_preamble(stored12):
    ds = make_dicom(stored12, windows=[(2048.0, 4096.0)])
    headerless = dicom_bytes(ds, preamble=False)
    assert headerless[128:132] != b"DICM"
    study = load_study(headerless, "looks_like.png")
    assert study.source_format == "dicom"
    np.testing.assert_allclose(study.raw, stored12)


def test_rgb_dicom_becomes_luminance():
    study = load_study(pydicom_file("SC_rgb.dcm"))
    assert study.image.ndim == 2 and study.raw is None
    assert any("luminance" in n for n in study.notices)


# ---------------------------------------------------------------- de-identification


def test_metadata_is_deidentified_unless_opted_in(stored12):
    data = dicom_bytes(make_dicom(stored12))
    study = load_study(data)
    text = json.dumps(study.to_dict())
    for identifier in ("DOE", "PID-0001", "19700101", "ACC123", "General Hospital", "WHO^DR", "1.2.826.0.1.3680043.8.498"):
        assert identifier not in text
    assert study.metadata["study_year"] == 2024
    assert len(study.metadata["study_uid_pseudonym"]) == 16
    opted = load_study(data, store_identifiers=True)
    assert opted.metadata["identifiers"] == {"patient_name": "DOE^JANE", "patient_id": "PID-0001"}


def test_deidentify_dataset_removes_basic_profile_identifiers(stored12):
    ds = make_dicom(stored12, comments="free text that may name the patient")
    ds.OtherPatientIDs = "X-99"
    ds.add_new(0x00091010, "LO", "private vendor data")
    person = Dataset()
    person.PerformingPhysicianName = "NESTED^DOCTOR"
    person.ReferencedSOPInstanceUID = "1.2.3.4.5"
    ds.ReferencedPerformedProcedureStepSequence = Sequence([person])
    ds.ProcedureCodeSequence = Sequence([Dataset()])
    ds.ProcedureCodeSequence[0].ScheduledPerformingPhysicianName = "SEQ^NAME"
    clean = deidentify_dataset(ds)
    assert ds.PatientName == "DOE^JANE"  # the input is not modified
    assert clean.PatientName == "" and clean.PatientID == "" and clean.PatientBirthDate == ""
    for keyword in ("OtherPatientIDs", "InstitutionName", "ImageComments", "ReferencedPerformedProcedureStepSequence"):
        assert keyword not in clean
    assert clean.AccessionNumber == "" and clean.StudyDate == ""
    assert 0x00091010 not in clean
    assert clean.ProcedureCodeSequence[0].ScheduledPerformingPhysicianName == ""  # any PN, nested
    assert clean.StudyInstanceUID != ds.StudyInstanceUID
    assert clean.StudyInstanceUID == deidentify_dataset(ds).StudyInstanceUID  # stable pseudonym
    assert clean.file_meta.MediaStorageSOPInstanceUID == clean.SOPInstanceUID != ds.SOPInstanceUID
    assert clean.PatientIdentityRemoved == "YES"
    # The de-identified copy still loads to identical pixels.
    np.testing.assert_array_equal(load_study(dicom_bytes(clean)).image, load_study(dicom_bytes(ds)).image)


# ---------------------------------------------------------------- pydicom's real files


def test_real_cr_chest_radiograph_monochrome1():
    study = load_study(pydicom_file("RG1_UNCI.dcm"))
    ds = pydicom.dcmread(pydicom_file("RG1_UNCI.dcm"))
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    assert study.modality == "CR" and study.original_size == (1955, 1841)
    assert study.notices == [] and study.window_used == (15000.0, 30000.0)
    # Displayed the right way round: the lungs (centre rows, left/right thirds) are darker than the spine.
    h, w = study.image.shape
    lungs = study.image[h // 3 : h // 2, w // 5 : w // 3].mean()
    spine = study.image[h // 3 : h // 2, w // 2 - 20 : w // 2 + 20].mean()
    assert lungs < spine


def test_real_jpeg2000_radiograph_matches_uncompressed():
    uncompressed = load_study(pydicom_file("RG1_UNCI.dcm"))
    j2k = load_study(pydicom_file("RG1_J2KR.dcm"))
    assert j2k.image.shape == uncompressed.image.shape
    assert np.abs(j2k.image - uncompressed.image).mean() < 0.01


@pytest.mark.parametrize(
    "name",
    [
        "MR_small_RLE.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
    ],
)
def test_real_lossless_encodings_give_identical_pixels(name):
    reference = load_study(pydicom_file("MR_small.dcm"))
    assert load_study(pydicom_file(name)).study_id == reference.study_id


@pytest.mark.parametrize(
    "name, syntax",
    [
        ("SC_rgb_jpeg_dcmtk.dcm", uid.JPEGBaseline8Bit),
        ("JPGExtended.dcm", uid.JPEGExtended12Bit),
        ("JPGLosslessP14SV1_1s_1f_8b.dcm", uid.JPEGLosslessSV1),
        ("image_dfl.dcm", uid.DeflatedExplicitVRLittleEndian),
    ],
)
def test_real_jpeg_family_and_deflate_decode(name, syntax):
    study = load_study(pydicom_file(name))
    assert study.metadata["transfer_syntax"] == syntax.name
    assert study.image.ndim == 2 and study.image.std() > 0.05  # a real picture, not a flat field


@pytest.mark.parametrize("name, modality", [("MR_small.dcm", "MR"), ("CT_small.dcm", "CT")])
def test_real_non_radiograph_files_load_with_notice(name, modality):
    study = load_study(pydicom_file(name))
    assert study.modality == modality and study.image.shape in {(64, 64), (128, 128)}
    assert any("not a plain radiograph" in n for n in study.notices)
    if modality == "CT":  # rescale to Hounsfield units applied
        ds = pydicom.dcmread(pydicom_file(name))
        np.testing.assert_allclose(study.raw, ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept))


@pytest.mark.parametrize("name", ["rtplan.dcm", "test-SR.dcm", "waveform_ecg.dcm"])
def test_dicom_without_pixel_data(name):
    with pytest.raises(IngestError, match="no image pixel data"):
        load_study(pydicom_file(name))


def test_dicomdir_is_refused_clearly():
    with pytest.raises(IngestError, match="DICOMDIR"):
        load_study(pydicom_file("DICOMDIR"))


# ---------------------------------------------------------------- bad input


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\nendobj\n", "PDF"),
        (b"Patient report: no image here.\nJust text.\n", "text file"),
        (b"PK\x03\x04" + b"\x00" * 40, "ZIP"),
        (b"GIF89a" + b"\x00" * 40, "GIF"),
        (bytes(range(256)) * 4, "not recognised"),
    ],
    ids=["empty", "pdf", "text", "zip", "gif", "binary"],
)
def test_not_an_image(data, message):
    with pytest.raises(IngestError, match=message):
        load_study(data)


def test_truncated_and_corrupt_raster(phantom):
    data = png_bytes(np.round(phantom * 255).astype(np.uint8))
    with pytest.raises(IngestError, match="PNG"):
        load_study(data[: len(data) // 2])
    corrupt = bytearray(data)
    corrupt[60:80] = b"\xff" * 20  # inside the compressed image data
    with pytest.raises(IngestError, match="PNG"):
        load_study(bytes(corrupt))
    jpeg = io.BytesIO()
    Image.fromarray(np.round(phantom * 255).astype(np.uint8)).save(jpeg, format="JPEG")
    with pytest.raises(IngestError, match="JPEG"):
        load_study(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])


def test_truncated_dicom_files(stored12):
    real = Path(pydicom_file("RG1_UNCI.dcm")).read_bytes()
    with pytest.raises(IngestError, match="truncated or corrupt"):
        load_study(real[: len(real) // 2])
    with pytest.raises(IngestError):
        load_study(real[:200])  # header cut inside the file meta
    built = dicom_bytes(make_dicom(stored12))
    with pytest.raises(IngestError, match="truncated or corrupt"):
        load_study(built[:-1000])


def test_decompression_bomb_and_absurd_sizes():
    with pytest.raises(IngestError, match="decompression bomb"):
        load_study(_png_header_only(60000, 60000))
    # Above Pillow's own bomb threshold (about 89 Mpx) but allowed by max_pixels: Pillow's warning still stops it.
    with pytest.raises(IngestError, match="decompression bomb"):
        load_study(_png_header_only(10_000, 10_000), max_pixels=200_000_000)
    with pytest.raises(IngestError, match="pixel limit"):
        load_study(_png_header_only(200, 200), max_pixels=10_000)
    with pytest.raises(IngestError, match="zero width or height|corrupt"):
        load_study(_png_header_only(0, 10))


def test_absurd_and_zero_dicom_dimensions(stored12):
    ds = make_dicom(stored12)
    ds.Rows, ds.Columns = 60000, 60000
    with pytest.raises(IngestError, match="pixel limit"):
        load_study(dicom_bytes(ds))
    ds = make_dicom(stored12)
    ds.Rows = 0
    with pytest.raises(IngestError, match="zero size"):
        load_study(dicom_bytes(ds))


def test_file_over_max_bytes(phantom, tmp_path):
    data = png_bytes(np.round(phantom * 255).astype(np.uint8))
    with pytest.raises(IngestError, match="limit"):
        load_study(data, max_bytes=100)
    path = tmp_path / "big.png"
    path.write_bytes(data)
    with pytest.raises(IngestError, match="limit"):
        load_study(path, max_bytes=100)
    with pytest.raises(IngestError, match="not found"):
        load_study(tmp_path / "missing.dcm")
    with pytest.raises(IngestError, match="folder"):
        load_study(tmp_path)


def test_unsupported_transfer_syntax(stored12):
    ds = make_dicom(stored12)
    ds.file_meta.TransferSyntaxUID = uid.MPEG2MPML  # video; no image decoder exists
    ds.PixelData = encapsulate([stored12.tobytes()])
    with pytest.raises(IngestError, match="not supported"):
        load_study(dicom_bytes(ds))


def test_missing_decoder_plugin_is_named(stored12, monkeypatch):
    import pydicom.pixels

    class Unavailable:
        is_available = False
        missing_dependencies = ["pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-openjpeg>=2.0"]

    ds = make_dicom(stored12)
    ds.compress(uid.JPEG2000Lossless, generate_instance_uid=False)
    monkeypatch.setattr(pydicom.pixels, "get_decoder", lambda tsuid: Unavailable())
    with pytest.raises(IngestError, match="pylibjpeg-openjpeg"):
        load_study(dicom_bytes(ds))


def test_invalid_options_are_ingest_errors(phantom):
    data = png_bytes(np.round(phantom * 255).astype(np.uint8))
    with pytest.raises(IngestError):
        load_study(data, window=("wide", None))
    with pytest.raises(IngestError):
        load_study(data, window_index=-1)
    with pytest.raises(IngestError):
        load_study(12345)
    with pytest.raises(IngestError):
        load_study(data).with_window(100, 0)


# ---------------------------------------------------------------- the phantom DICOM writer


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"photometric": "MONOCHROME1"},
        {"bits_stored": 16, "rescale_slope": 0.5, "rescale_intercept": -100.0},
        {"transfer_syntax": uid.RLELossless, "n_frames": 2},
        {"transfer_syntax": uid.JPEGLSLossless},
        {"transfer_syntax": uid.JPEG2000Lossless, "photometric": "MONOCHROME1"},
        {"voi_lut": True},
        {"modality": "DX", "bits_stored": 8},
    ],
    ids=["mono2", "mono1", "16bit-rescale", "rle-2frames", "jpegls", "j2k-mono1", "voi-lut", "dx-8bit"],
)
def test_synthetic_dicom_writer_variants(phantom, tmp_path, options):
    synthetic_dicom = pytest.importorskip("medsight.synthetic.dicom")
    path = synthetic_dicom.write_dicom(phantom, tmp_path / "phantom.dcm", **options)
    study = load_study(path)
    assert study.synthetic and study.source_format == "dicom"
    assert study.modality == options.get("modality", "CR") and study.view_position == "PA"
    assert study.pixel_spacing == (0.2, 0.2)
    # Whatever the encoding, the display comes back the right way round (bone bright).
    assert np.corrcoef(study.image.ravel(), phantom.ravel())[0, 1] > 0.95
    text = json.dumps(study.to_dict())
    assert "DOE" not in text and "PID-0001" not in text
    assert (options.get("n_frames", 1) > 1) == any("frames" in n for n in study.notices)


# ---------------------------------------------------------------- every pydicom test file


@pytest.mark.slow
def test_every_pydicom_test_file_loads_or_raises_ingest_error():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # offline: failed-download warnings for absent files
        files = pydicom.data.get_testdata_files()
    assert len(files) > 100
    loaded = 0
    for name in files:
        try:
            study = load_study(name)
        except IngestError as exc:
            assert str(exc), name
            continue
        assert isinstance(study, Study), name
        assert study.image.ndim == 2 and study.image.dtype == np.float32, name
        assert np.isfinite(study.image).all() and 0 <= study.image.min() <= study.image.max() <= 1, name
        json.dumps(study.to_dict())
        loaded += 1
    assert loaded > 100
