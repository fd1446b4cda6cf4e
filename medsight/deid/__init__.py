"""De-identification to DICOM PS3.15 Annex E before any DICOM is stored or leaves the workstation.

- :func:`deidentify_dataset`: the Basic Application Level Confidentiality Profile (Table E.1-1,
  edition in :func:`load_table`), with the Retain Longitudinal Temporal Information option.
- :mod:`medsight.deid.keys`: the per-installation secret and the keyed UID, Patient ID and date
  pseudonyms built from it.
- :mod:`medsight.deid.identity_map`: the encrypted local map back to the source PACS's identifiers.
- :func:`technical_metadata`: the allow-listed, de-identified metadata kept with a Study.
"""

from medsight.deid.identity_map import IdentityMap, forget, original_identifiers, purge, reidentify, remember
from medsight.deid.keys import installation_secret, patient_pseudonym, pseudonym, uid_pseudonym
from medsight.deid.metadata import BURNED_IN_WARNING, TECHNICAL_TAGS, burned_in_warning, technical_metadata
from medsight.deid.profile import deidentify_dataset
from medsight.deid.table import load_table

__all__ = [
    "BURNED_IN_WARNING", "IdentityMap", "TECHNICAL_TAGS", "burned_in_warning", "deidentify_dataset", "forget",
    "installation_secret", "load_table", "original_identifiers", "patient_pseudonym", "pseudonym", "purge",
    "reidentify", "remember", "technical_metadata", "uid_pseudonym",
]
