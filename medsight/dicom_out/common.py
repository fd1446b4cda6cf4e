"""What every derived object shares: where it is filed (study, patient), who made it, and which models.

Results go back into the source study only when the caller hands over the original identifiers
(`SourceReference`): ingest keeps hashed pseudonyms of the UIDs, never the UIDs themselves, so a study
opened without them is written as a new, anonymous study that says what it was derived from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from medsight import __version__

MANUFACTURER = "MedSight"
DEVICE_NAME = "MedSight Workstation"
NOT_FOR_DIAGNOSIS = "NOT FOR DIAGNOSTIC USE"

# Series numbers high enough not to collide with the modality's own series in the same study.
SERIES_ANALYSED_IMAGE = 9900
SERIES_MAPS = 9901
SERIES_REPORT_SR = 9902
SERIES_REPORT_PDF = 9903

# The maps each image-model slot draws (the pipeline withholds them together with that slot's scores).
ANOMALY_MAPS = ("patch_deviation", "spatial_anomaly", "paper_attention")

# Patient and study attributes a PACS files a result by; copied from the source study as they are.
PATIENT_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex")
STUDY_KEYWORDS = ("AccessionNumber", "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName")
# Technical attributes of the source image that the SR's image library describes.
IMAGE_KEYWORDS = ("Modality", "Rows", "Columns", "PatientOrientation", "ImagerPixelSpacing", "PixelSpacing",
                  "BodyPartExamined")


def device_uid() -> str:
    """A fixed UID naming this software as the SR observer device (not derived from any patient data)."""
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=[DEVICE_NAME, "observer device"]))


@dataclass(frozen=True)
class SourceReference:
    """The original identifiers of the analysed DICOM instance, so results file into its study.

    Attributes:
        study_instance_uid, series_instance_uid, sop_instance_uid, sop_class_uid: the source instance.
        patient: patient-module values (PatientName, PatientID, PatientBirthDate, PatientSex).
        study: study-module values (AccessionNumber, StudyID, StudyDate, StudyTime, ReferringPhysicianName).
        image: technical values of the source image (Modality, Rows, Columns, PatientOrientation, ...).
    """

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    patient: dict[str, Any] = field(default_factory=dict)
    study: dict[str, Any] = field(default_factory=dict)
    image: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dataset(cls, ds: Any) -> "SourceReference":
        """The reference of a pydicom dataset (the original header, as received or uploaded)."""
        def values(keywords: tuple[str, ...]) -> dict[str, Any]:
            return {k: ds.get(k) for k in keywords if k in ds and ds.get(k) is not None}

        missing = [k for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID") if not ds.get(k)]
        if missing:
            raise ValueError("the source DICOM header lacks " + ", ".join(missing))
        return cls(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID), str(ds.SOPClassUID),
                   patient=values(PATIENT_KEYWORDS), study=values(STUDY_KEYWORDS), image=values(IMAGE_KEYWORDS))

    def header(self) -> Any:
        """A pydicom dataset holding only what a reference to the source instance needs."""
        from pydicom.dataset import Dataset

        ds = Dataset()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = self.study_instance_uid, self.series_instance_uid
        ds.SOPInstanceUID, ds.SOPClassUID = self.sop_instance_uid, self.sop_class_uid
        for keyword in PATIENT_KEYWORDS + STUDY_KEYWORDS:
            setattr(ds, keyword, self.patient.get(keyword, self.study.get(keyword, "")) or "")
        for keyword, value in self.image.items():
            setattr(ds, keyword, value)
        return ds


@dataclass
class Filing:
    """Where the derived objects go: the study, its patient and study attributes, and what they come from."""

    study_instance_uid: str
    patient: dict[str, Any]
    study: dict[str, Any]
    source: SourceReference | None
    derived_from: str  # one sentence for SeriesDescription / DerivationDescription / ImageComments
    new_study: bool
    body_part: str = ""  # as the source says, or CHEST when the gate took the image for a chest film
    origin: str = ""  # a new study's origin in a few words, for the 64-character description attributes

    def identity_kwargs(self) -> dict[str, Any]:
        """Patient and study keyword arguments for a highdicom SOP class constructor."""
        p, s = self.patient, self.study
        return {
            "patient_id": p.get("PatientID") or None, "patient_name": p.get("PatientName") or None,
            "patient_birth_date": p.get("PatientBirthDate") or None, "patient_sex": p.get("PatientSex") or None,
            "accession_number": s.get("AccessionNumber") or None, "study_id": s.get("StudyID") or None,
            "study_date": s.get("StudyDate") or None, "study_time": s.get("StudyTime") or None,
            "referring_physician_name": s.get("ReferringPhysicianName") or None,
        }


def filing_for(study: Any, analysis: dict, source: Any = None) -> Filing:
    """Into the source study when its original identifiers are given, else a new anonymous study."""
    from pydicom.uid import generate_uid

    metadata = getattr(study, "metadata", None) or {}
    chest = (analysis.get("gate") or {}).get("decision") in ("accepted", "overridden")
    body_part = str(metadata.get("body_part") or ("CHEST" if chest else ""))

    if source is not None and not isinstance(source, SourceReference):
        source = SourceReference.from_dataset(source)
    if source is not None:
        return Filing(source.study_instance_uid, dict(source.patient), dict(source.study), source,
                      "Derived by MedSight Workstation from the source image of this study", new_study=False,
                      body_part=body_part)
    fmt = str(getattr(study, "source_format", "") or "").upper() or "unknown"
    if fmt == "DICOM":
        origin = "DICOM source, its identifiers not kept"
        derived = ("Derived from a DICOM image whose original identifiers were not kept by MedSight Workstation "
                   "(new, anonymous study)")
    else:
        origin = f"derived from a non-DICOM file ({fmt})"
        derived = f"Derived from a non-DICOM file ({fmt}) by MedSight Workstation (new, anonymous study)"
    now = datetime.now()
    study_values = {"StudyDate": now.strftime("%Y%m%d"), "StudyTime": now.strftime("%H%M%S"), "StudyID": "MEDSIGHT"}
    return Filing(str(generate_uid()), {"PatientName": "ANONYMOUS^"}, study_values, None, derived, new_study=True,
                  body_part=body_part, origin=origin)


@dataclass(frozen=True)
class ModelDescription:
    """A model slot as the header names it: title, version and tier (never its local file path)."""

    slot: str
    title: str
    version: str
    tier: str
    source_label: str = ""

    @property
    def line(self) -> str:
        """One line for burned-in captions and descriptions."""
        return f"{self.title} {self.version} ({self.tier.upper()} tier)".strip()


def model_description(analysis: dict, slot: str) -> ModelDescription:
    """Title, version and tier of the model in `slot`, from the analysis' provenance records."""
    prov = (analysis.get("models") or {}).get(slot) or (analysis.get("withheld") or {}).get(slot) or {}
    return ModelDescription(slot, str(prov.get("title") or slot), str(prov.get("version") or "unknown version"),
                            str(prov.get("tier") or "unknown"), str(prov.get("source_label") or ""))


def map_slot(key: str) -> str:
    """The image-model slot whose weights drew a map."""
    return "anomaly.detector" if key in ANOMALY_MAPS else "pathology.classifier"


def contributing_equipment(models: list[ModelDescription]) -> list[Any]:
    """One Contributing Equipment item per model that contributed (name, version and tier)."""
    from highdicom import ContributingEquipment
    from pydicom.sr.codedict import codes

    return [
        ContributingEquipment(
            manufacturer=MANUFACTURER, purpose_of_reference=codes.DCM.ProcessingEquipment,
            manufacturer_model_name=_lo(m.title), software_versions=_lo(m.version),
            contribution_description=_lo(f"{m.slot}: {m.tier.upper()} tier weights. {NOT_FOR_DIAGNOSIS}."),
        )
        for m in models
    ]


def software_versions(models: list[ModelDescription]) -> list[str]:
    """SoftwareVersions: the workstation's version, then each model's version with its tier."""
    return [f"MedSight {__version__}"] + [_lo(f"{m.slot} {m.version} {m.tier.upper()}") for m in models]


def _fit(text: str, limit: int) -> str:
    """Text cut to `limit` bytes of UTF-8 (the written character set), marked "..." where cut."""
    if len(text.encode("utf-8")) <= limit:
        return text
    while len(text.encode("utf-8")) > limit - 3:
        text = text[:-1]
    return text + "..."


def _lo(text: str, limit: int = 64) -> str:
    """Text fitted to a LO element."""
    return _fit(" ".join(str(text).split()), limit)


def lt(text: str, limit: int = 10240) -> str:
    """Text fitted to an LT/ST element."""
    return _fit(str(text), limit)


def mark_derived(ds: Any, filing: Filing, description: str, models: list[ModelDescription]) -> None:
    """The header every derived object carries: series text, derivation, equipment and de-identification marks."""
    ds.SpecificCharacterSet = "ISO_IR 192"  # model titles and captions are not plain ASCII (→, ×)
    ds.SeriesDescription = _lo(description)
    ds.ManufacturerModelName = DEVICE_NAME
    ds.SoftwareVersions = software_versions(models)
    if filing.new_study:
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = _lo("No identifiers: " + filing.origin)
        ds.StudyDescription = _lo("MedSight results " + filing.origin)
    if "InstitutionName" in ds:
        del ds.InstitutionName
