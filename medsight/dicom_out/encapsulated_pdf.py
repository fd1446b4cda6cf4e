"""The PDF report as an Encapsulated PDF instance (1.2.840.10008.5.1.4.1.1.104.1).

highdicom has no Encapsulated PDF class; its SOP base writes the patient, study, series, equipment and SOP
common modules, and the Encapsulated Document module is filled here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from medsight.dicom_out.common import (
    MANUFACTURER,
    NOT_FOR_DIAGNOSIS,
    SERIES_REPORT_PDF,
    Filing,
    ModelDescription,
    contributing_equipment,
    mark_derived,
)


def encapsulated_pdf(pdf: bytes, filing: Filing, source_header: Any, models: list[ModelDescription],
                     title: str = "MedSight analysis report") -> Any:
    """An Encapsulated PDF instance of `pdf` in the filing's study, referring to the analysed image."""
    from highdicom.base import SOPClass
    from pydicom.dataset import Dataset
    from pydicom.uid import EncapsulatedPDFStorage, generate_uid

    if not pdf.startswith(b"%PDF"):
        raise ValueError("the report is not a PDF document")
    ds = SOPClass(
        study_instance_uid=filing.study_instance_uid, series_instance_uid=str(generate_uid()),
        series_number=SERIES_REPORT_PDF, sop_instance_uid=str(generate_uid()), sop_class_uid=EncapsulatedPDFStorage,
        instance_number=1, modality="DOC", manufacturer=MANUFACTURER, **filing.identity_kwargs(),
    )
    # highdicom's base adds the equipment items through a protected hook its own IODs call.
    ds._add_contributing_equipment(contributing_equipment(models) or None)
    now = datetime.now()
    ds.ConversionType = "WSD"
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation = "YES"  # the PDF names the study and its findings in its pages
    ds.DocumentTitle = f"{title} - {NOT_FOR_DIAGNOSIS}"[:64]
    ds.ConceptNameCodeSequence = []
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocumentLength = len(pdf)
    ds.EncapsulatedDocument = pdf + (b"\x00" if len(pdf) % 2 else b"")
    source = Dataset()
    source.ReferencedSOPClassUID = source_header.SOPClassUID
    source.ReferencedSOPInstanceUID = source_header.SOPInstanceUID
    ds.SourceInstanceSequence = [source]
    mark_derived(ds, filing, f"MedSight report (PDF) - {NOT_FOR_DIAGNOSIS}", models)
    return ds


def pdf_bytes_of(ds: Any) -> bytes:
    """The PDF held by an Encapsulated PDF instance, without the padding byte."""
    data = bytes(ds.EncapsulatedDocument)
    length = ds.get("EncapsulatedDocumentLength")
    return data[: int(length)] if length else data.rstrip(b"\x00")
