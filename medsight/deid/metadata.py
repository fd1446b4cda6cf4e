"""De-identified technical metadata of a DICOM dataset, as stored with a Study in History.

Only an allow-list of technical attributes is kept, the study year instead of its date, and keyed
pseudonyms (see :mod:`medsight.deid.keys`) of the UIDs and the Patient ID, so priors of one patient
link inside this installation without any identifier being stored.
"""

from __future__ import annotations

from typing import Any

from medsight.deid.keys import date_offset_days, patient_pseudonym, pseudonym

BURNED_IN_WARNING = "The file states that text is burned into the pixels; it may show identifiers."

# Technical attributes copied into Study.metadata: keyword → metadata key.
TECHNICAL_TAGS: dict[str, str] = {
    "Modality": "modality",
    "ViewPosition": "view_position",
    "BodyPartExamined": "body_part",
    "ImageLaterality": "image_laterality",
    "ImageType": "image_type",
    "SOPClassUID": "sop_class_uid",
    "ConversionType": "conversion_type",
    "PatientOrientation": "patient_orientation",
    "Rows": "rows",
    "Columns": "columns",
    "NumberOfFrames": "number_of_frames",
    "SamplesPerPixel": "samples_per_pixel",
    "PhotometricInterpretation": "photometric",
    "BitsAllocated": "bits_allocated",
    "BitsStored": "bits_stored",
    "HighBit": "high_bit",
    "PixelRepresentation": "pixel_representation",
    "PixelSpacing": "pixel_spacing",
    "ImagerPixelSpacing": "imager_pixel_spacing",
    "PixelSpacingCalibrationType": "pixel_spacing_calibration_type",
    "PixelSpacingCalibrationDescription": "pixel_spacing_calibration_description",
    "EstimatedRadiographicMagnificationFactor": "estimated_magnification",
    "RescaleSlope": "rescale_slope",
    "RescaleIntercept": "rescale_intercept",
    "RescaleType": "rescale_type",
    "VOILUTFunction": "voi_lut_function",
    "WindowCenterWidthExplanation": "window_explanations",
    "PresentationLUTShape": "presentation_lut_shape",
    "LossyImageCompression": "lossy_compression",
    "BurnedInAnnotation": "burned_in_annotation",
    "Manufacturer": "manufacturer",
    "ManufacturerModelName": "manufacturer_model",
    "SoftwareVersions": "software_versions",
    "KVP": "kvp",
    "Exposure": "exposure_mas",
    "ExposureTime": "exposure_time_ms",
    "XRayTubeCurrent": "tube_current_ma",
    "DistanceSourceToDetector": "source_detector_distance_mm",
    "DistanceSourceToPatient": "source_patient_distance_mm",
    "Grid": "grid",
    "SliceThickness": "slice_thickness_mm",
}


def _plain(value: Any) -> Any:
    """pydicom values (DS, IS, MultiValue, PersonName, UID) → plain Python types."""
    from pydicom.multival import MultiValue
    from pydicom.valuerep import DSfloat, IS

    if isinstance(value, (list, tuple, MultiValue)):
        return [_plain(v) for v in value]
    if isinstance(value, IS):
        return int(value)
    if isinstance(value, (DSfloat, float)):
        return float(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, bytes):
        return None
    return str(value).strip()


def _get(ds: Any, keyword: str) -> Any:
    """Value of ``keyword`` or None; a malformed element never stops ingest."""
    try:
        elem = ds.get(keyword)
    except Exception:
        return None
    if elem is None or elem == "":
        return None
    try:
        return _plain(elem)
    except Exception:
        return None


def _code_meaning(ds: Any, keyword: str) -> str | None:
    """Code Meaning of the first item of a code sequence (e.g. ViewCodeSequence), or None."""
    try:
        seq = ds.get(keyword)
        if not seq:
            return None
        meaning = seq[0].get("CodeMeaning")
        return str(meaning).strip() or None if meaning is not None else None
    except Exception:
        return None


def _iso_date(text: Any, shift_days: int) -> str | None:
    """YYYYMMDD → ISO date moved back by ``shift_days``; None for anything that is not a valid date."""
    from medsight.deid.profile import _shift_date

    moved = _shift_date(str(text or ""), shift_days)
    return f"{moved[:4]}-{moved[4:6]}-{moved[6:8]}" if moved else None


def _retained_dates(ds: Any, retain_dates: str | None) -> dict[str, Any]:
    """Study and acquisition dates under the Retain Longitudinal Temporal Information option, else nothing.

    "modified" moves them back by the patient's keyed offset (as the de-identifier does), so intervals
    between a patient's studies stay real while the calendar dates do not.
    """
    if retain_dates is None:
        from medsight.config import get_settings

        retain_dates = get_settings().deid_retain_dates
    if retain_dates not in ("full", "modified"):
        return {}
    shift = date_offset_days(str(_get(ds, "PatientID") or "")) if retain_dates == "modified" else 0
    kept = {key: _iso_date(_get(ds, keyword), shift)
            for keyword, key in (("StudyDate", "study_date"), ("AcquisitionDate", "acquisition_date"))}
    kept = {key: value for key, value in kept.items() if value}
    if kept:
        kept["dates_retained"] = retain_dates
    if retain_dates == "modified" and kept.get("study_date"):
        kept["study_year"] = int(kept["study_date"][:4])  # the real year would give the shift away
    return kept


def technical_metadata(ds: Any, *, store_identifiers: bool = False, retain_dates: str | None = None) -> dict[str, Any]:
    """De-identified, JSON-serialisable metadata of a DICOM dataset.

    Keeps technical attributes only (modality, geometry, exposure, device model, transfer
    syntax ...), the study year instead of the date, and hashed pseudonyms of the study/series/
    instance UIDs and of the Patient ID.

    Args:
        ds: A pydicom Dataset.
        store_identifiers: Also keep patient name and ID under ``"identifiers"`` (opt-in).

    Returns:
        Metadata dict.
    """
    from pydicom.uid import UID

    meta: dict[str, Any] = {}
    for keyword, key in TECHNICAL_TAGS.items():
        value = _get(ds, keyword)
        if value not in (None, "", []):
            meta[key] = value
    view_code = _code_meaning(ds, "ViewCodeSequence")
    if view_code:
        meta["view_code"] = view_code
    sop_class = _get(ds, "SOPClassUID")
    if sop_class:
        meta["sop_class"] = UID(sop_class).name
    file_meta = getattr(ds, "file_meta", None)
    tsuid = _get(file_meta, "TransferSyntaxUID") if file_meta is not None else None
    if tsuid:
        meta["transfer_syntax"] = UID(tsuid).name
    study_date = _get(ds, "StudyDate")
    if isinstance(study_date, str) and len(study_date) >= 4 and study_date[:4].isdigit():
        meta["study_year"] = int(study_date[:4])
    meta.update(_retained_dates(ds, retain_dates))
    for keyword, key in (
        ("StudyInstanceUID", "study_uid_pseudonym"),
        ("SeriesInstanceUID", "series_uid_pseudonym"),
        ("SOPInstanceUID", "instance_uid_pseudonym"),
    ):
        uid = _get(ds, keyword)
        if uid:
            meta[key] = pseudonym(str(uid))
    patient_id = _get(ds, "PatientID")
    if patient_id not in (None, "", []):
        meta["patient_pseudonym"] = patient_pseudonym(str(patient_id))
    if store_identifiers:
        meta["identifiers"] = {
            "patient_name": _get(ds, "PatientName") or "",
            "patient_id": _get(ds, "PatientID") or "",
        }
    return meta


def burned_in_warning(metadata: dict | None) -> str | None:
    """The warning to print when a study's file says text is burned into its pixels, else None."""
    value = (metadata or {}).get("burned_in_annotation")
    return BURNED_IN_WARNING if str(value or "").strip().upper() == "YES" else None
