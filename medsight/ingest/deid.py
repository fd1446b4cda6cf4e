"""De-identification: technical metadata for a Study and de-identified copies of DICOM datasets.

Follows the DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile: identifying
attributes are removed (X), emptied (Z) or, for UIDs, replaced (U) by pseudonyms that are stable
for the same original UID, so series and studies still link together. Private tags and overlay /
curve groups are removed. Pixel data is not inspected: when a file says it carries burned-in
annotation the caller is told so.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

# PS3.15 Table E.1-1, Basic Profile actions for the attributes that occur in radiographs and
# their common companions. X = remove, Z = keep empty, U = replace UID. Any other element with
# a PN (person name) VR is emptied as well, whatever its keyword.
BASIC_PROFILE: dict[str, str] = {
    # Patient
    "PatientName": "Z",
    "PatientID": "Z",
    "PatientBirthDate": "Z",
    "PatientSex": "Z",
    "PatientBirthTime": "X",
    "PatientBirthName": "X",
    "PatientMotherBirthName": "X",
    "PatientAge": "X",
    "PatientSize": "X",
    "PatientWeight": "X",
    "PatientAddress": "X",
    "PatientTelephoneNumbers": "X",
    "PatientComments": "X",
    "PatientReligiousPreference": "X",
    "PatientState": "X",
    "PatientInsurancePlanCodeSequence": "X",
    "PatientPrimaryLanguageCodeSequence": "X",
    "IssuerOfPatientID": "X",
    "IssuerOfPatientIDQualifiersSequence": "X",
    "OtherPatientIDs": "X",
    "OtherPatientIDsSequence": "X",
    "OtherPatientNames": "X",
    "EthnicGroup": "X",
    "Occupation": "X",
    "MilitaryRank": "X",
    "BranchOfService": "X",
    "CountryOfResidence": "X",
    "RegionOfResidence": "X",
    "MedicalRecordLocator": "X",
    "MedicalAlerts": "X",
    "Allergies": "X",
    "SmokingStatus": "X",
    "PregnancyStatus": "X",
    "LastMenstrualDate": "X",
    "AdditionalPatientHistory": "X",
    "ResponsiblePerson": "X",
    "ResponsibleOrganization": "X",
    "PatientTransportArrangements": "X",
    "CurrentPatientLocation": "X",
    "AdmissionID": "X",
    "AdmittingDiagnosesDescription": "X",
    "AdmittingDiagnosesCodeSequence": "X",
    "VisitComments": "X",
    "ReferencedPatientSequence": "X",
    "ReferencedPatientPhotoSequence": "X",
    # Study / visit / request
    "AccessionNumber": "Z",
    "StudyID": "Z",
    "StudyDate": "Z",
    "StudyTime": "Z",
    "ContentDate": "Z",
    "ContentTime": "Z",
    "SeriesDate": "X",
    "SeriesTime": "X",
    "AcquisitionDate": "X",
    "AcquisitionTime": "X",
    "AcquisitionDateTime": "X",
    "InstanceCreationDate": "X",
    "InstanceCreationTime": "X",
    "OverlayDate": "X",
    "OverlayTime": "X",
    "CurveDate": "X",
    "CurveTime": "X",
    "StudyDescription": "X",
    "SeriesDescription": "X",
    "ProtocolName": "X",
    "ImageComments": "X",
    "FrameComments": "X",
    "AcquisitionComments": "X",
    "DerivationDescription": "X",
    "TextComments": "X",
    "TextString": "X",
    "RequestAttributesSequence": "X",
    "RequestedProcedureDescription": "X",
    "RequestedProcedureID": "X",
    "RequestingService": "X",
    "RequestingPhysician": "X",
    "ReasonForStudy": "X",
    "ReasonForTheRequestedProcedure": "X",
    "RequestedContrastAgent": "X",
    "ScheduledProcedureStepDescription": "X",
    "ScheduledProcedureStepID": "X",
    "PerformedProcedureStepDescription": "X",
    "PerformedProcedureStepID": "X",
    "PerformedProcedureStepStartDate": "X",
    "PerformedProcedureStepStartTime": "X",
    "PerformedProcedureStepEndDate": "X",
    "PerformedProcedureStepEndTime": "X",
    "PerformedLocation": "X",
    "PerformedStationName": "X",
    "PlacerOrderNumberImagingServiceRequest": "X",
    "FillerOrderNumberImagingServiceRequest": "X",
    "ReferencedStudySequence": "X",
    "ReferencedPerformedProcedureStepSequence": "X",
    "ReferencedImageSequence": "X",
    "SourceImageSequence": "X",
    "AcquisitionContextSequence": "X",
    "ModifiedAttributesSequence": "X",
    "OriginalAttributesSequence": "X",
    "DigitalSignaturesSequence": "X",
    "ContentSequence": "X",
    # People and places
    "ReferringPhysicianName": "Z",
    "ReferringPhysicianAddress": "X",
    "ReferringPhysicianTelephoneNumbers": "X",
    "ReferringPhysicianIdentificationSequence": "X",
    "PhysiciansOfRecord": "X",
    "PhysiciansOfRecordIdentificationSequence": "X",
    "PerformingPhysicianName": "X",
    "PerformingPhysicianIdentificationSequence": "X",
    "NameOfPhysiciansReadingStudy": "X",
    "PhysiciansReadingStudyIdentificationSequence": "X",
    "OperatorsName": "X",
    "OperatorIdentificationSequence": "X",
    "ContentCreatorName": "Z",
    "ContentCreatorIdentificationCodeSequence": "X",
    "VerifyingObserverName": "X",
    "PersonName": "X",
    "InstitutionName": "X",
    "InstitutionAddress": "X",
    "InstitutionalDepartmentName": "X",
    "InstitutionCodeSequence": "X",
    "StationName": "X",
    "DeviceSerialNumber": "X",
    "PlateID": "X",
    "DetectorID": "X",
    "GantryID": "X",
    "CassetteID": "X",
    # UIDs (replaced by stable pseudonymous UIDs)
    "StudyInstanceUID": "U",
    "SeriesInstanceUID": "U",
    "SOPInstanceUID": "U",
    "FrameOfReferenceUID": "U",
    "SynchronizationFrameOfReferenceUID": "U",
    "ReferencedSOPInstanceUID": "U",
    "ReferencedFrameOfReferenceUID": "U",
    "IrradiationEventUID": "U",
    "ConcatenationUID": "U",
    "DimensionOrganizationUID": "U",
    "InstanceCreatorUID": "U",
    "DeviceUID": "U",
    "StorageMediaFileSetUID": "U",
    "TransactionUID": "U",
    "UID": "U",
}

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


def pseudonym(value: str) -> str:
    """Stable, non-reversible 16-hex-digit pseudonym for an identifier such as a UID."""
    return hashlib.sha256(f"medsight-pseudonym:{value}".encode()).hexdigest()[:16]


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


def technical_metadata(ds: Any, *, store_identifiers: bool = False) -> dict[str, Any]:
    """De-identified, JSON-serialisable metadata of a DICOM dataset.

    Keeps technical attributes only (modality, geometry, exposure, device model, transfer
    syntax ...), the study year instead of the date, and hashed pseudonyms of the study/series/
    instance UIDs.

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
    for keyword, key in (
        ("StudyInstanceUID", "study_uid_pseudonym"),
        ("SeriesInstanceUID", "series_uid_pseudonym"),
        ("SOPInstanceUID", "instance_uid_pseudonym"),
    ):
        uid = _get(ds, keyword)
        if uid:
            meta[key] = pseudonym(str(uid))
    if store_identifiers:
        meta["identifiers"] = {
            "patient_name": _get(ds, "PatientName") or "",
            "patient_id": _get(ds, "PatientID") or "",
        }
    return meta


def _replacement_uid(original: str) -> str:
    """Deterministic new UID for ``original`` (same input, same output), via pydicom."""
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=["medsight-deid", str(original)]))


def deidentify_dataset(ds: Any) -> Any:
    """Return a de-identified copy of a DICOM dataset (PS3.15 Basic Profile).

    Identifying attributes listed in :data:`BASIC_PROFILE` are removed or emptied at every
    nesting level, every remaining person-name (PN) element is emptied, UIDs are replaced by
    stable pseudonymous UIDs (the file meta Media Storage SOP Instance UID follows the new
    SOP Instance UID), private tags and overlay/curve groups are removed, and Patient Identity
    Removed / De-identification Method are recorded. Pixel data is copied unchanged.

    Args:
        ds: pydicom Dataset (not modified).

    Returns:
        A new pydicom Dataset.
    """
    from pydicom.datadict import keyword_for_tag
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    out = copy.deepcopy(ds)
    out.remove_private_tags()

    def scrub(dataset: Dataset) -> None:
        for elem in list(dataset):
            group = elem.tag.group
            if 0x5000 <= group <= 0x50FF or (0x6000 <= group <= 0x60FF and elem.tag.element in (0x3000, 0x4000)):
                # Curve data and overlay pixel data/comments can carry burned-in identifiers.
                del dataset[elem.tag]
                continue
            action = BASIC_PROFILE.get(keyword_for_tag(elem.tag) or "")
            if action == "X":
                del dataset[elem.tag]
            elif action == "Z" or (action is None and elem.VR == "PN"):
                elem.value = Sequence() if elem.VR == "SQ" else ""
            elif action == "U" and elem.value:
                if elem.VM > 1:
                    elem.value = [_replacement_uid(v) for v in elem.value]
                else:
                    elem.value = _replacement_uid(elem.value)
            elif elem.VR == "SQ":
                for item in elem.value:
                    scrub(item)

    scrub(out)
    if getattr(out, "file_meta", None) is not None:
        if "MediaStorageSOPInstanceUID" in out.file_meta:
            new_uid = out.get("SOPInstanceUID") or _replacement_uid(out.file_meta.MediaStorageSOPInstanceUID)
            out.file_meta.MediaStorageSOPInstanceUID = new_uid
    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = "PS3.15 Basic Application Confidentiality Profile"
    code = Dataset()
    code.CodeValue = "113100"
    code.CodingSchemeDesignator = "DCM"
    code.CodeMeaning = "Basic Application Confidentiality Profile"
    out.DeidentificationMethodCodeSequence = Sequence([code])
    return out
