"""Fuzzing ingest: mutated PNG/JPEG/DICOM bytes give a Study or an IngestError, never anything else."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset

from medsight.ingest import IngestError, Study, load_study
from medsight.synthetic import generate_phantom


def _seeds() -> dict[str, bytes]:
    """Small valid files of every supported kind, built from one synthetic phantom."""
    image = generate_phantom(3, size=32).image
    grey8 = np.round(image * 255).astype(np.uint8)
    seeds: dict[str, bytes] = {}

    out = io.BytesIO()
    Image.fromarray(grey8).save(out, format="PNG")
    seeds["png8"] = out.getvalue()
    out = io.BytesIO()
    Image.fromarray(np.round(image * 65535).astype(np.uint16)).save(out, format="PNG")
    seeds["png16"] = out.getvalue()
    out = io.BytesIO()
    Image.fromarray(np.dstack([grey8] * 3)).save(out, format="JPEG", quality=80)
    seeds["jpeg"] = out.getvalue()

    def dicom(syntax: str, preamble: bool = True) -> bytes:
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
        ds.SOPClassUID = uid.ComputedRadiographyImageStorage
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.Modality = "CR"
        ds.PatientName = "DOE^JANE"
        ds.set_pixel_data(np.round(image * 4095).astype(np.uint16), "MONOCHROME1", 12)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.RescaleSlope, ds.RescaleIntercept = 1.0, -10.0
        ds.WindowCenter, ds.WindowWidth = [2000.0, 1000.0], [4000.0, 500.0]
        if syntax != uid.ExplicitVRLittleEndian:
            ds.compress(syntax, generate_instance_uid=False)
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=preamble)
        return buf.getvalue()

    seeds["dicom"] = dicom(uid.ExplicitVRLittleEndian)
    seeds["dicom_headerless"] = dicom(uid.ExplicitVRLittleEndian, preamble=False)
    seeds["dicom_rle"] = dicom(uid.RLELossless)
    seeds["dicom_j2k"] = dicom(uid.JPEG2000Lossless)
    return seeds


SEEDS = _seeds()


@st.composite
def mutated_file(draw) -> bytes:
    name = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[name])
    # Headers decide most code paths, so aim half of the edits at the first 400 bytes.
    for _ in range(draw(st.integers(1, 8))):
        limit = min(len(data), 400) if draw(st.booleans()) else len(data)
        if limit == 0:
            break
        pos = draw(st.integers(0, limit - 1))
        kind = draw(st.sampled_from(["set", "insert", "delete", "zero-run"]))
        if kind == "set":
            data[pos] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
        else:
            run = draw(st.integers(1, 64))
            data[pos : pos + run] = bytes([draw(st.sampled_from([0x00, 0xFF]))]) * len(data[pos : pos + run])
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


def _check(data: bytes) -> None:
    try:
        study = load_study(data, "fuzz.bin", max_pixels=4_000_000)
    except IngestError as exc:
        assert str(exc)
        return
    assert isinstance(study, Study)
    assert study.image.ndim == 2 and study.image.dtype == np.float32
    assert np.isfinite(study.image).all()
    assert 0.0 <= float(study.image.min()) <= float(study.image.max()) <= 1.0
    assert len(study.study_id) == 16
    json.dumps(study.to_dict())


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seed_files_are_valid(name):
    assert isinstance(load_study(SEEDS[name]), Study)


@settings(
    max_examples=250,
    deadline=None,
    derandomize=True,  # the same examples on every run, so CI failures reproduce
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutated_file())
def test_mutated_files_give_study_or_ingest_error(data):
    _check(data)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.binary(max_size=2048))
def test_random_bytes_give_study_or_ingest_error(data):
    _check(data)
