"""Per-code tables: ingest and the phantom-domain test give exactly the numbers of the per-pixel formulas.

A film of 8- or 16-bit samples is rescaled, windowed, hashed and byte-converted once per stored value and looked
up (`medsight.ingest.study.CodedImage`). Each test here compares that with the formula computed over every pixel,
on pydicom's real chest films, generated 16-bit films (MONOCHROME1, rescale slope/intercept, VOI LUT sequence,
SIGMOID, automatic window, Modality LUT sequence), a signed CT slice and PNG/JPEG files.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut

from medsight import domain
from medsight.ingest import apply_window, load_study, pixel_hash
from medsight.ingest import dicom as dicom_ingest
from medsight.synthetic import generate_phantom
from medsight.synthetic.dicom import write_dicom


def _pydicom_file(name: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.data.get_testdata_file(name)


def _edited(path, edit) -> bytes:
    ds = pydicom.dcmread(path)
    edit(ds)
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


def _without_window(ds: Dataset) -> None:
    del ds.WindowCenter, ds.WindowWidth


def _modality_lut(ds: Dataset) -> None:
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.add_new(0x00283006, "US", [(i * 37) % 65536 for i in range(4096)])  # not monotonic
    item.ModalityLUTType = "US"
    ds.ModalityLUTSequence = [item]
    del ds.RescaleSlope, ds.RescaleIntercept
    ds.WindowCenter, ds.WindowWidth = 30000, 40000


@pytest.fixture(scope="module")
def films(tmp_path_factory) -> dict[str, object]:
    """Name → DICOM source (path or bytes) covering every step of the greyscale display pipeline."""
    folder = tmp_path_factory.mktemp("coded")
    phantom = generate_phantom(3, size=200, findings=("effusion",))
    made = {
        "16-bit": write_dicom(phantom, folder / "a.dcm", bits_stored=16),
        "MONOCHROME1": write_dicom(phantom, folder / "b.dcm", bits_stored=12, photometric="MONOCHROME1"),
        "rescale": write_dicom(phantom, folder / "c.dcm", bits_stored=12, rescale_slope=0.37,
                               rescale_intercept=-1024.5, windows=[(100.0, 900.0)]),
        "whole-number intercept": write_dicom(phantom, folder / "d.dcm", bits_stored=12, rescale_intercept=-1024),
        "VOI LUT sequence": write_dicom(phantom, folder / "e.dcm", bits_stored=12, voi_lut=True),
        "8-bit": write_dicom(phantom, folder / "f.dcm", bits_stored=8),
    }
    windows = write_dicom(phantom, folder / "g.dcm", bits_stored=14, windows=[(5000, 3000), (8000, 1200)])
    made["SIGMOID"] = _edited(windows, lambda ds: setattr(ds, "VOILUTFunction", "SIGMOID"))
    made["LINEAR_EXACT"] = _edited(windows, lambda ds: setattr(ds, "VOILUTFunction", "LINEAR_EXACT"))
    made["automatic window"] = _edited(made["16-bit"], _without_window)
    made["Modality LUT sequence"] = _edited(made["MONOCHROME1"], _modality_lut)
    for name in ("RG1_UNCR.dcm", "RG1_UNCI.dcm", "CT_small.dcm", "MR_small.dcm"):
        made[name] = _pydicom_file(name)
    return made


CASES = ["16-bit", "MONOCHROME1", "rescale", "whole-number intercept", "VOI LUT sequence", "8-bit", "SIGMOID",
         "LINEAR_EXACT", "automatic window", "Modality LUT sequence", "RG1_UNCR.dcm", "RG1_UNCI.dcm", "CT_small.dcm",
         "MR_small.dcm"]


def _per_pixel(source, monkeypatch, **kwargs):
    """The study as computed over every pixel (the per-code tables switched off)."""
    with monkeypatch.context() as patch:
        patch.setattr(dicom_ingest, "_stored_codes", lambda arr: None)
        return load_study(source, **kwargs)


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("window", [None, (1500.0, 900.0)])
def test_coded_dicom_equals_the_per_pixel_pipeline(films, monkeypatch, name, window):
    coded = load_study(films[name], window=window)
    plain = _per_pixel(films[name], monkeypatch, window=window)
    assert coded.coded_image is not None and plain.coded_image is None
    assert coded.image.dtype == plain.image.dtype == np.float32
    assert np.array_equal(coded.image, plain.image)
    assert coded.raw.dtype == plain.raw.dtype and np.array_equal(coded.raw, plain.raw)
    assert coded.study_id == plain.study_id == pixel_hash(coded.image)
    assert coded.to_dict() == plain.to_dict()
    assert coded.value_range == plain.value_range
    rewindowed, reference = coded.with_window(40.0, 300.0), plain.with_window(40.0, 300.0)
    assert rewindowed.study_id == reference.study_id and rewindowed.coded_image is None


@pytest.mark.parametrize("name", ["RG1_UNCR.dcm", "RG1_UNCI.dcm", "rescale", "MONOCHROME1", "CT_small.dcm"])
def test_coded_dicom_equals_pydicom_formulas(films, name):
    """Independent of ingest's own code: pydicom's Modality LUT and the DICOM window over every pixel."""
    study = load_study(films[name])
    source = films[name] if not isinstance(films[name], bytes) else io.BytesIO(films[name])
    ds = pydicom.dcmread(source)
    raw = np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=np.float32)
    assert np.array_equal(study.raw, raw)
    image = apply_window(raw, *study.window_used, study._voi_function)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        image = 1.0 - image
    assert np.array_equal(study.image, image)
    assert study.study_id == pixel_hash(image)


def test_signed_samples_are_coded_from_the_lowest_value():
    arr = np.array([[-32768, -1], [0, 32767]], dtype=np.int16)
    codes, stored = dicom_ingest._stored_codes(arr)
    assert codes.dtype == np.uint16 and codes.tolist() == [[0, 32767], [32768, 65535]]
    assert np.array_equal(stored[codes], arr)
    assert dicom_ingest._stored_codes(arr.astype(np.int32)) is None
    assert dicom_ingest._stored_codes(arr.astype(np.float32)) is None


def _raster(tmp_path, name: str, arr: np.ndarray, orientation: int | None = None) -> str:
    path = tmp_path / name
    im = Image.fromarray(arr)
    if orientation is None:
        im.save(path)
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        im.save(path, exif=exif, quality=90)
    return str(path)


def test_coded_png_and_jpeg_equal_the_per_pixel_scaling(tmp_path):
    grey = generate_phantom(4, size=160).image
    files = [
        (_raster(tmp_path, "a.jpg", np.round(grey * 255).astype(np.uint8), orientation=6), 255.0),
        (_raster(tmp_path, "b.png", np.round(grey * 255).astype(np.uint8)), 255.0),
        (_raster(tmp_path, "c.png", np.round(grey * 4095).astype(np.uint16)), 4095.0),  # 12 significant bits
        (_raster(tmp_path, "d.png", np.round(grey * 65535).astype(np.uint16)), 65535.0),
    ]
    for path, full_scale in files:
        study = load_study(path)
        assert study.coded_image is not None
        image = np.clip(study._levels / full_scale, 0.0, 1.0).astype(np.float32)
        assert np.array_equal(study.image, image)
        assert study.study_id == pixel_hash(image)
        assert np.array_equal(study.coded_image.values[study.coded_image.codes], study.image)


def _reference_bytes(image: np.ndarray) -> np.ndarray:
    """FEATURE_VERSION 1 bytes as first written: percentile rescale over the whole image in one go."""
    a = np.asarray(image, dtype=np.float32)
    step = max(1, int(np.sqrt(a.size / 250_000)))
    lo, hi = np.percentile(a[::step, ::step], [1, 99])
    return np.round(np.clip((a - lo) / max(float(hi - lo), 1e-6), 0.0, 1.0) * 255).astype(np.uint8)


@pytest.mark.parametrize("name", ["16-bit", "MONOCHROME1", "VOI LUT sequence", "RG1_UNCR.dcm", "RG1_UNCI.dcm",
                                  "CT_small.dcm"])
def test_domain_bytes_and_features_are_the_same_with_and_without_codes(films, name):
    study = load_study(films[name])
    coded = study.coded_image
    assert coded is not None
    reference = _reference_bytes(study.image)
    assert np.array_equal(domain.normalised_bytes(study.image, coded), reference)
    assert np.array_equal(domain.normalised_bytes(study.image), reference)
    assert np.array_equal(domain.domain_features(study.image, coded), domain.domain_features(study.image))
    assert (domain.phantom_verdict(study.image, coded=coded)
            == domain.phantom_verdict(study.image))


def test_domain_bytes_of_an_uncoded_image_match_the_formula():
    rng = np.random.default_rng(5)
    image = rng.normal(0.4, 0.3, size=(333, 517)).astype(np.float32)  # values outside [0, 1] and odd shape
    assert np.array_equal(domain.normalised_bytes(image), _reference_bytes(image))


def test_a_replaced_image_is_not_described_by_the_old_codes(films):
    study = load_study(films["16-bit"])
    coded = study.coded_image
    assert coded.describes(study.image)
    study.image = study.image.copy()
    assert study.coded_image is None
    assert not coded.describes(study.image)
    # Codes that no longer describe the image are ignored, not trusted.
    assert np.array_equal(domain.normalised_bytes(study.image, coded), _reference_bytes(study.image))
