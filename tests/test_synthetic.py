"""Synthetic chest phantoms: determinism, ground truth consistency, reports and DICOM round trips."""

from __future__ import annotations

import importlib.util
import time

import numpy as np
import pydicom
import pydicom.uid as uid
import pytest
from PIL import Image
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from scipy import ndimage

from medsight.synthetic import (
    FINDINGS,
    Phantom,
    cardiothoracic_ratio,
    generate_dataset,
    generate_phantom,
    write_jpeg,
    write_png,
)
from medsight.synthetic.dicom import available_compressed_syntaxes, write_dicom

SIZE = 160
LUNG_FINDINGS = ("consolidation", "nodule", "pneumothorax")
SIDE_WORDS = {"nodule": ("nodule", "mass"), "effusion": ("pleural effusion",)}


def _phantom(seed: int, findings=()) -> Phantom:
    return generate_phantom(seed, size=SIZE, findings=findings)


def test_same_seed_same_phantom_and_different_seed_differs():
    a, b = _phantom(11, ("nodule",)), _phantom(11, ("nodule",))
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.masks["nodule"], b.masks["nodule"])
    assert a.report == b.report and a.laterality == b.laterality
    c = _phantom(12, ("nodule",))
    assert np.abs(a.image - c.image).mean() > 0.01


@pytest.mark.parametrize("size", [64, 224])
@pytest.mark.parametrize("findings", [(), *[(f,) for f in FINDINGS]])
def test_shapes_dtypes_and_ranges(size, findings):
    p = generate_phantom(3, size=size, findings=findings)
    assert p.image.shape == (size, size) and p.image.dtype == np.float32
    assert 0.0 <= p.image.min() and p.image.max() <= 1.0 and np.isfinite(p.image).all()
    assert p.lung_mask.dtype == bool and p.lung_mask.shape == (size, size)
    assert 0.15 < p.lung_mask.mean() < 0.6
    assert p.labels == tuple(findings) and set(p.masks) == set(findings) == set(p.laterality)
    for m in p.masks.values():
        assert m.dtype == bool and m.shape == (size, size) and m.any()
    assert p.is_normal == (not findings)
    assert p.synthetic is True and p.to_dict()["synthetic"] is True


def test_image_looks_like_a_chest_radiograph():
    p = _phantom(4)
    lungs = p.image[p.lung_mask].mean()
    mediastinum = p.image[p.heart_mask].mean()
    outside = p.image[:, :3].mean()  # air beside the body at the film edge... or arm soft tissue
    assert lungs < mediastinum - 0.2, "aerated lungs must be darker than the heart"
    spine = p.image[int(SIZE * 0.15):int(SIZE * 0.3), SIZE // 2 - 2:SIZE // 2 + 2].mean()
    assert spine > lungs + 0.2
    assert outside < mediastinum


def test_normal_has_no_masks_and_normal_report():
    p = _phantom(5, ())
    assert p.masks == {} and p.labels == () and p.is_normal
    assert "FINDINGS:" in p.report and "IMPRESSION:" in p.report
    text = p.report.lower()
    assert "no pleural effusion" in text or "no pneumothorax or pleural effusion" in text
    assert "pneumothorax" in text  # stated as a negative


@pytest.mark.parametrize("finding", LUNG_FINDINGS)
def test_lung_findings_lie_inside_the_lungs(finding):
    for seed in range(4):
        p = _phantom(seed, (finding,))
        m = p.masks[finding]
        inside = (m & p.lung_mask).sum() / m.sum()
        assert inside > 0.95, (seed, inside)


def test_effusion_sits_at_the_lung_base():
    for seed in range(4):
        p = _phantom(seed, ("effusion",))
        m = p.masks["effusion"]
        near_lung = ndimage.binary_dilation(p.lung_mask, iterations=3)
        assert (m & near_lung).sum() / m.sum() > 0.95
        lung_rows = np.flatnonzero(p.lung_mask.any(axis=1))
        fluid_centre = ndimage.center_of_mass(m)[0]
        assert fluid_centre > lung_rows[0] + 0.6 * (lung_rows[-1] - lung_rows[0])


@pytest.mark.parametrize("finding", ["consolidation", "nodule", "effusion", "pneumothorax"])
def test_laterality_matches_mask_side(finding):
    seen = set()
    for seed in range(10):
        p = _phantom(seed, (finding,))
        m = p.masks[finding]
        left_half, right_half = m[:, : SIZE // 2].sum(), m[:, SIZE // 2 :].sum()
        side = p.laterality[finding]
        seen.add(side)
        # PA view: the patient's right is on the image left.
        if side == "right":
            assert left_half > 0 and right_half == 0
        elif side == "left":
            assert right_half > 0 and left_half == 0
        else:
            assert side == "bilateral" and left_half > 0 and right_half > 0
    assert {"left", "right"} <= seen


def test_finding_changes_only_its_own_region_and_is_visible():
    base = _phantom(21, ())
    for finding in ("consolidation", "nodule", "effusion", "pneumothorax"):
        p = _phantom(21, (finding,))
        m = p.masks[finding]
        diff = np.abs(p.image - base.image)
        near = ndimage.binary_dilation(m, iterations=4)
        assert diff[~near].max() < 0.05, finding
        assert diff[m].mean() > 0.04, finding


@pytest.mark.parametrize("finding", FINDINGS)
def test_same_seed_gives_the_same_patient_at_any_size(finding):
    small = generate_phantom(5, size=96, findings=(finding,))
    large = generate_phantom(5, size=192, findings=(finding,))
    assert small.laterality == large.laterality
    down = large.masks[finding].reshape(96, 2, 96, 2).mean(axis=(1, 3)) > 0.5
    a = small.masks[finding]
    iou = (a & down).sum() / (a | down).sum()
    assert iou > 0.7, iou
    image_down = large.image.reshape(96, 2, 96, 2).mean(axis=(1, 3))
    assert np.corrcoef(image_down.ravel(), small.image.ravel())[0, 1] > 0.95


def test_cardiomegaly_widens_the_heart():
    for seed in range(5):
        big = _phantom(seed, ("cardiomegaly",))
        normal = _phantom(seed, ())
        assert cardiothoracic_ratio(big.masks["cardiomegaly"], big.lung_mask) > 0.55
        assert np.array_equal(big.masks["cardiomegaly"], big.heart_mask)
        assert cardiothoracic_ratio(normal.heart_mask, normal.lung_mask) < 0.5
        assert big.laterality["cardiomegaly"] == "n/a"
        assert big.ctr == pytest.approx(cardiothoracic_ratio(big.heart_mask, big.lung_mask), abs=1e-3)


def test_findings_vary_in_size_and_intensity():
    areas = [_phantom(s, ("nodule",)).masks["nodule"].sum() for s in range(8)]
    assert max(areas) > 3 * min(areas)
    contrasts = []
    for s in range(6):
        p, base = _phantom(s, ("consolidation",)), _phantom(s, ())
        contrasts.append(float((p.image - base.image)[p.masks["consolidation"]].mean()))
    assert max(contrasts) - min(contrasts) > 0.03


def test_seed_chooses_about_half_normal_and_some_double_findings():
    ps = [generate_phantom(s, size=32) for s in range(120)]
    normal = sum(p.is_normal for p in ps) / len(ps)
    assert 0.35 < normal < 0.65
    assert any(len(p.labels) == 2 for p in ps)
    assert {lab for p in ps for lab in p.labels} == set(FINDINGS)


def test_dataset_has_exact_normal_fraction_and_all_findings():
    ds = generate_dataset(20, seed=1, size=48, normal_fraction=0.3)
    assert len(ds) == 20 and sum(p.is_normal for p in ds) == 6
    assert {lab for p in ds for lab in p.labels} == set(FINDINGS)
    again = generate_dataset(20, seed=1, size=48, normal_fraction=0.3)
    assert [p.seed for p in ds] == [p.seed for p in again]
    # Each phantom is reproducible from its own seed and labels.
    q = generate_phantom(ds[3].seed, size=48, findings=ds[3].labels)
    assert np.array_equal(q.image, ds[3].image)


def test_generation_is_fast_at_224():
    generate_phantom(0, size=224)
    # CPU time of this process, so a machine busy with other work does not make the test flaky.
    t = time.process_time()
    generate_dataset(10, seed=2, size=224)
    per = (time.process_time() - t) / 10
    assert per < 0.05, f"{per * 1000:.0f} ms CPU per phantom"  # ~18 ms measured


@pytest.mark.parametrize("finding", FINDINGS)
def test_report_mentions_each_label_and_side(finding):
    for seed in range(3):
        p = _phantom(seed, (finding,))
        text = p.report.lower()
        impression = text.split("impression:")[1]
        assert any(w in impression for w in SIDE_WORDS.get(finding, (finding,))), p.report
        side = p.laterality[finding]
        if side != "n/a":
            assert side in impression, p.report
        assert "synthetic" in text


def test_report_negates_absent_findings_and_varies():
    p = _phantom(2, ("nodule",))
    text = p.report.lower()
    assert "no pleural effusion or pneumothorax" in text or "no pneumothorax or pleural effusion" in text
    reports = {generate_phantom(s, size=32, findings=("effusion",)).report.split("IMPRESSION")[0] for s in range(8)}
    assert len(reports) > 2


def test_two_findings_reported_together():
    p = _phantom(7, ("effusion", "cardiomegaly"))
    assert p.labels == ("effusion", "cardiomegaly")
    imp = p.report.split("IMPRESSION:")[1].lower()
    assert "effusion" in imp and "cardiomegaly" in imp


def test_unknown_finding_is_rejected():
    with pytest.raises(ValueError, match="Unknown finding"):
        generate_phantom(0, size=32, findings=("fracture",))


@pytest.mark.parametrize("bits", [8, 16])
def test_png_round_trip(tmp_path, bits):
    p = _phantom(1, ("effusion",))
    path = write_png(p, tmp_path / f"x{bits}.png", bits=bits)
    arr = np.asarray(Image.open(path))
    scale = 2**bits - 1
    assert arr.shape == (SIZE, SIZE)
    assert np.abs(arr / scale - p.image).max() <= 0.5 / scale + 1e-6
    jpg = np.asarray(Image.open(write_jpeg(p, tmp_path / "x.jpg"))) / 255.0
    assert np.abs(jpg - p.image).mean() < 0.02


# ---------------------------------------------------------------- DICOM


def _expected_stored(image: np.ndarray, bits: int, photometric: str) -> np.ndarray:
    m = 2**bits - 1
    s = np.round(image.astype(np.float64) * m)
    return m - s if photometric == "MONOCHROME1" else s


@pytest.mark.parametrize("bits", [8, 12, 16])
@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_dicom_round_trip_recovers_modality_values(tmp_path, bits, photometric):
    p = _phantom(6, ("nodule",))
    slope, intercept = 0.5, -1024.0
    path = write_dicom(p, tmp_path / "a.dcm", bits_stored=bits, photometric=photometric,
                       rescale_slope=slope, rescale_intercept=intercept)
    ds = pydicom.dcmread(path)
    assert ds.BitsStored == bits and ds.PhotometricInterpretation == photometric
    stored = ds.pixel_array
    assert np.array_equal(stored, _expected_stored(p.image, bits, photometric))
    modality = apply_modality_lut(stored, ds)
    assert np.allclose(modality, stored * slope + intercept)
    # Undo the Modality LUT (and MONOCHROME1 inversion) to get the phantom back.
    m = 2**bits - 1
    back = (modality - intercept) / slope / m
    if photometric == "MONOCHROME1":
        back = 1.0 - back
    assert np.abs(back - p.image).max() <= 0.5 / m + 1e-6


def test_monochrome1_is_stored_inverted(tmp_path):
    p = _phantom(6)
    m1 = pydicom.dcmread(write_dicom(p, tmp_path / "m1.dcm", photometric="MONOCHROME1")).pixel_array
    m2 = pydicom.dcmread(write_dicom(p, tmp_path / "m2.dcm", photometric="MONOCHROME2")).pixel_array
    assert np.array_equal(m1.astype(int), 4095 - m2.astype(int))
    lungs, heart = p.lung_mask, p.heart_mask
    assert m1[lungs].mean() > m1[heart].mean()  # air is bright in MONOCHROME1 storage


def test_dicom_tags_windows_uids_and_fake_patient(tmp_path):
    p = _phantom(8, ("effusion",))
    windows = ((2000.0, 4000.0), (1500.0, 800.0), (2600.0, 1200.0))
    path = write_dicom(p, tmp_path / "w.dcm", modality="DX", windows=windows,
                       window_explanations=("FULL", "LUNG", "BONE"), patient_name="ROE^RICHARD",
                       patient_id="MRN-12345", pixel_spacing=(0.78, 0.78))
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == uid.ExplicitVRLittleEndian
    assert ds.SOPClassUID == uid.DigitalXRayImageStorageForPresentation == ds.file_meta.MediaStorageSOPClassUID
    assert [float(c) for c in ds.WindowCenter] == [c for c, _ in windows]
    assert [float(w) for w in ds.WindowWidth] == [w for _, w in windows]
    assert list(ds.WindowCenterWidthExplanation) == ["FULL", "LUNG", "BONE"]
    assert str(ds.PatientName) == "ROE^RICHARD" and ds.PatientID == "MRN-12345"
    for tag in ("PatientBirthDate", "InstitutionName", "ReferringPhysicianName", "AccessionNumber", "StudyDate"):
        assert str(ds.data_element(tag).value).strip(), tag
    assert ds.SeriesDescription == "SYNTHETIC PHANTOM" and "SYNTHETIC PHANTOM" in ds.ImageComments
    assert ds.ViewPosition == "PA" and [float(v) for v in ds.PixelSpacing] == [0.78, 0.78]
    for u in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID):
        assert u.is_valid
    # Deterministic UIDs from the content; different content gives different UIDs.
    again = pydicom.dcmread(write_dicom(p, tmp_path / "w2.dcm", modality="DX", windows=windows,
                                        window_explanations=("FULL", "LUNG", "BONE"),
                                        patient_name="ROE^RICHARD", patient_id="MRN-12345",
                                        pixel_spacing=(0.78, 0.78)))
    assert again.SOPInstanceUID == ds.SOPInstanceUID and again.StudyInstanceUID == ds.StudyInstanceUID
    other = pydicom.dcmread(write_dicom(_phantom(9), tmp_path / "o.dcm"))
    assert other.SOPInstanceUID != ds.SOPInstanceUID and other.SOPClassUID == uid.ComputedRadiographyImageStorage


def test_default_window_reproduces_the_phantom(tmp_path):
    p = _phantom(10)
    ds = pydicom.dcmread(write_dicom(p, tmp_path / "d.dcm", rescale_slope=2.0, rescale_intercept=-500.0))
    shown = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)
    shown = (shown - shown.min()) / (shown.max() - shown.min())
    assert np.corrcoef(shown.ravel(), p.image.ravel())[0, 1] > 0.999


def test_voi_lut_sequence_is_applied(tmp_path):
    p = _phantom(10)
    ds = pydicom.dcmread(write_dicom(p, tmp_path / "v.dcm", bits_stored=12, voi_lut=True))
    assert "VOILUTSequence" in ds and ds.VOILUTSequence[0].LUTDescriptor[0] == 4096
    out = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds).astype(np.int64), ds, prefer_lut=True)
    lut = np.frombuffer(ds.VOILUTSequence[0].LUTData, dtype="<u2") if isinstance(
        ds.VOILUTSequence[0].LUTData, bytes) else np.asarray(ds.VOILUTSequence[0].LUTData)
    assert np.array_equal(out, lut[ds.pixel_array])
    assert np.all(np.diff(lut.astype(int)) >= 0) and lut[0] < lut[-1]


def test_multiframe_frame_count(tmp_path):
    p = _phantom(12)
    ds = pydicom.dcmread(write_dicom(p, tmp_path / "mf.dcm", n_frames=3, transfer_syntax=uid.RLELossless))
    assert ds.NumberOfFrames == 3
    arr = ds.pixel_array
    assert arr.shape == (3, SIZE, SIZE)
    assert np.array_equal(arr[0], _expected_stored(p.image, 12, "MONOCHROME2"))
    assert not np.array_equal(arr[0], arr[1])


def test_expected_encoders_are_available():
    syntaxes = available_compressed_syntaxes()
    assert uid.RLELossless in syntaxes
    if importlib.util.find_spec("jpeg_ls"):
        assert uid.JPEGLSLossless in syntaxes
    if importlib.util.find_spec("openjpeg"):
        assert uid.JPEG2000Lossless in syntaxes


@pytest.mark.parametrize("ts", available_compressed_syntaxes() + [uid.ImplicitVRLittleEndian,
                                                                   uid.DeflatedExplicitVRLittleEndian,
                                                                   uid.ExplicitVRBigEndian])
@pytest.mark.parametrize("bits,photometric", [(8, "MONOCHROME2"), (12, "MONOCHROME1"), (16, "MONOCHROME2")])
def test_transfer_syntaxes_decode_losslessly(tmp_path, ts, bits, photometric):
    p = _phantom(13, ("pneumothorax",))
    path = write_dicom(p, tmp_path / "c.dcm", bits_stored=bits, photometric=photometric, transfer_syntax=ts)
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == ts
    assert np.array_equal(ds.pixel_array, _expected_stored(p.image, bits, photometric))


def test_bad_dicom_arguments_are_rejected(tmp_path):
    p = _phantom(1)
    with pytest.raises(ValueError, match="bits_stored"):
        write_dicom(p, tmp_path / "x.dcm", bits_stored=7)
    with pytest.raises(ValueError, match="photometric"):
        write_dicom(p, tmp_path / "x.dcm", photometric="RGB")
    with pytest.raises(ValueError, match="transfer syntax"):
        write_dicom(p, tmp_path / "x.dcm", transfer_syntax=uid.JPEGBaseline8Bit)
    with pytest.raises(ValueError, match="width"):
        write_dicom(p, tmp_path / "x.dcm", windows=((100, 0),))
