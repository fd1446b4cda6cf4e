"""The de-identifier: PS3.15 Annex E Basic Application Level Confidentiality Profile on a pydicom dataset.

Every attribute of Table E.1-1 gets the action the table gives it, at every nesting level:

- X remove; Z empty (a sequence keeps no items); D a dummy value of the attribute's VR (a sequence
  keeps its items, every text, date, name and binary value inside replaced); U a UID pseudonym that
  is the same wherever the original UID occurs (so ReferencedSOPInstanceUID follows SOPInstanceUID);
  K keep.
- Combinations are resolved as the standard allows when the IOD does not need more: X/Z, X/D and
  X/Z/D remove; Z/D empties, except Content Date/Time of structured reports and encapsulated
  documents, where they are Type 1 and get a dummy; X/Z/U* keeps the reference sequence with every
  UID inside replaced, so references survive.
- Person names are emptied rather than removed, wherever they occur and whatever their keyword.
- Private attributes, curve groups (50xx) and overlay data/comments (60xx,3000/4000) are removed.

With the Retain Longitudinal Temporal Information option ("full" or "modified" in the settings)
the rows the table marks for it keep their dates, or have them moved back by a per-patient
number of days, so intervals between a patient's studies stay real. Times are kept as they are
under the modified-dates option (whole days move, the time of day does not).

Pixel data is not inspected: BurnedInAnnotation is kept so that callers can warn about it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from medsight.deid.keys import date_offset_days, installation_fingerprint, installation_secret, patient_pseudonym, uid_pseudonym
from medsight.deid.table import ProfileRow, actions_by_tag

TEXT_VRS = {"AE", "AS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"}
DATE_VRS = {"DA", "DT", "TM"}
BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
NUMBER_VRS = {"DS", "FD", "FL", "IS", "SL", "SS", "SV", "UL", "US", "UV"}

DUMMY_TEXT = "ANONYMIZED"
DUMMY: dict[str, Any] = {
    "AE": "ANONYMIZED", "AS": "000D", "CS": "ANONYMIZED", "DA": "19000101", "DT": "19000101000000",
    "TM": "000000", "DS": "0", "IS": "0", "UR": "urn:anonymized",
}

RETAIN_DATE_CODES = {
    "full": ("113106", "Retain Longitudinal Temporal Information Full Dates Option"),
    "modified": ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
}
BASIC_PROFILE_CODE = ("113100", "Basic Application Confidentiality Profile")
LONGITUDINAL_STATE = {"off": "REMOVED", "modified": "MODIFIED", "full": "UNMODIFIED"}

# SOP classes whose Content Date/Time are Type 1: structured reports (…88.x) and encapsulated documents (…104.x).
_CONTENT_DATE_TYPE1_PREFIXES = ("1.2.840.10008.5.1.4.1.1.88.", "1.2.840.10008.5.1.4.1.1.104.")
_CONTENT_DATE_TIME = {0x00080023, 0x00080033}

# File meta information that names the sending or receiving node.
_FILE_META_NODE_TAGS = (0x00020016, 0x00020017, 0x00020018, 0x00020026, 0x00020027, 0x00020028, 0x00020100, 0x00020102)


@dataclass(frozen=True)
class _Run:
    secret: bytes
    retain_dates: str
    offset_days: int
    keep_uids: bool
    content_date_type1: bool


def _vr(elem: Any) -> str:
    return str(elem.VR).split(" or ")[0]


def _resolve(row: ProfileRow, elem: Any, run: _Run) -> str:
    """The single action for this element, after the enabled options and the combination rules."""
    if run.retain_dates == "full" and row.options.get("rtnLongFullDatesOpt") == "K":
        return "K"
    if run.retain_dates == "modified" and row.options.get("rtnLongModifDatesOpt") == "C":
        return "C"
    action = row.basic
    if action == "X/Z/U*":
        return "U*"
    if action == "Z/D":
        return "D" if run.content_date_type1 and int(elem.tag) in _CONTENT_DATE_TIME else "Z"
    if action in ("X/Z", "X/D", "X/Z/D"):
        action = "X"
    if action == "X" and _vr(elem) == "PN":
        return "Z"
    return action


def _is_graphics_group(tag: Any) -> bool:
    group = tag.group
    return (0x5000 <= group <= 0x50FF) or (0x6000 <= group <= 0x60FF and tag.element in (0x3000, 0x4000))


def _empty(elem: Any) -> None:
    from pydicom.sequence import Sequence

    vr = _vr(elem)
    if vr == "SQ":
        elem.value = Sequence()
    elif vr in BINARY_VRS:
        elem.value = b""
    elif vr in NUMBER_VRS - {"DS", "IS"} or vr == "AT":
        elem.value = None
    else:
        elem.value = ""


def _replace_uids(elem: Any, run: _Run) -> None:
    if run.keep_uids or _vr(elem) != "UI" or elem.value in (None, ""):
        return
    if elem.VM > 1:
        elem.value = [uid_pseudonym(v, run.secret) for v in elem.value]
    else:
        elem.value = uid_pseudonym(elem.value, run.secret)


def _dummy(elem: Any, run: _Run) -> None:
    """A non-empty value of the element's VR that carries nothing of the original."""
    vr = _vr(elem)
    if vr == "SQ":
        for item in elem.value:
            _apply(item, run, inside_dummy=True)
    elif vr == "UI":
        _replace_uids(elem, run)
    elif vr in BINARY_VRS:
        elem.value = b"\x00\x00"
    elif vr in NUMBER_VRS - {"DS", "IS"}:
        elem.value = 0
    elif vr == "AT":
        elem.value = 0
    else:
        elem.value = DUMMY.get(vr, DUMMY_TEXT)


def _shift_date(text: str, days: int) -> str | None:
    if len(text) < 8 or not text[:8].isdigit():
        return None
    try:
        moved = date(int(text[:4]), int(text[4:6]), int(text[6:8])) - timedelta(days=days)
    except ValueError:
        return None
    return moved.strftime("%Y%m%d") + text[8:]


def _shift(elem: Any, run: _Run) -> None:
    """Modified-dates option: dates and date-times move back by the patient's offset; times stay."""
    vr = _vr(elem)
    if vr == "TM" or elem.value in (None, ""):
        return
    if vr not in ("DA", "DT"):
        _dummy(elem, run)
        return
    values = list(elem.value) if elem.VM > 1 else [elem.value]
    shifted = []
    for value in values:
        parts = [_shift_date(part, run.offset_days) if part else "" for part in str(value).split("-")] if vr == "DA" \
            else [_shift_date(str(value), run.offset_days)]
        if any(part is None for part in parts):
            shifted.append(DUMMY[vr])
        else:
            shifted.append("-".join(parts))
    elem.value = shifted if len(shifted) > 1 else shifted[0]


def _apply(dataset: Any, run: _Run, inside_dummy: bool = False) -> None:
    """Apply the profile to one dataset level and, through sequences, to every level below it."""
    table = actions_by_tag()
    for elem in list(dataset):
        tag = elem.tag
        if tag.is_private or _is_graphics_group(tag):
            del dataset[tag]
            continue
        row = table.get(int(tag))
        vr = _vr(elem)
        if row is None:
            if vr == "SQ":
                for item in elem.value:
                    _apply(item, run, inside_dummy)
            elif vr == "PN":
                elem.value = ""
            elif inside_dummy and vr in TEXT_VRS | DATE_VRS | BINARY_VRS:
                _dummy(elem, run)  # inside a dummied sequence, free text of any keyword goes too
            continue
        action = _resolve(row, elem, run)
        if action == "X":
            del dataset[tag]
        elif action == "Z":
            _empty(elem)
        elif action == "D":
            _dummy(elem, run)
        elif action == "U":
            _replace_uids(elem, run)
        elif action == "C":
            _shift(elem, run)
        elif vr == "SQ":  # K and U*: the sequence stays, cleaned inside
            for item in elem.value:
                _apply(item, run, inside_dummy)


def _method_values(ds: Any) -> list[str]:
    elem = ds.get((0x0012, 0x0063))
    if elem is None or elem.value in (None, ""):
        return []
    return [str(v) for v in elem.value] if elem.VM > 1 else [str(elem.value)]


def _record(out: Any, run: _Run, fingerprint: str, previous_methods: list[str], previous_codes: list[Any]) -> None:
    """PatientIdentityRemoved, DeidentificationMethod (+ code sequence, CID 7050) and what happened to dates."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    methods = list(previous_methods)
    ours = ["PS3.15 E.1 Basic Application Confidentiality Profile"]
    if run.retain_dates in RETAIN_DATE_CODES:
        ours.append(RETAIN_DATE_CODES[run.retain_dates][1])
    ours.append(f"MedSight {fingerprint}")
    methods += [m for m in ours if m not in methods]
    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = methods if len(methods) > 1 else methods[0]
    codes = [BASIC_PROFILE_CODE] + ([RETAIN_DATE_CODES[run.retain_dates]] if run.retain_dates in RETAIN_DATE_CODES else [])
    items = list(previous_codes)
    present = {str(item.get("CodeValue", "")) for item in items}
    for value, meaning in codes:
        if value in present:
            continue
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        items.append(item)
    out.DeidentificationMethodCodeSequence = Sequence(items)
    if "LongitudinalTemporalInformationModified" not in out or not run.keep_uids:
        out.LongitudinalTemporalInformationModified = LONGITUDINAL_STATE[run.retain_dates]


def deidentify_dataset(
    ds: Any,
    *,
    retain_dates: str | None = None,
    pseudonymous_patient_id: bool = False,
    secret: bytes | None = None,
) -> Any:
    """Return a de-identified copy of a DICOM dataset (PS3.15 Basic Profile, Table E.1-1).

    Args:
        ds: pydicom Dataset (not modified).
        retain_dates: "off", "modified" or "full" (Retain Longitudinal Temporal Information
            option); default from the settings (`MEDSIGHT_DEID_RETAIN_DATES`, "off").
        pseudonymous_patient_id: put this installation's keyed pseudonym of the Patient ID in
            PatientID (a D action the table allows) instead of leaving it empty, so priors link.
        secret: the installation secret; default the one in the data directory.

    Returns:
        A new pydicom Dataset. A dataset this installation has already de-identified keeps its
        UIDs and dates, so applying the function twice changes nothing more.
    """
    from medsight.config import RETAIN_DATES_CHOICES, get_settings

    if retain_dates is None:
        retain_dates = get_settings().deid_retain_dates
    if retain_dates not in RETAIN_DATES_CHOICES:
        raise ValueError(f"retain_dates must be one of {', '.join(RETAIN_DATES_CHOICES)}")
    secret = secret if secret is not None else installation_secret()
    fingerprint = installation_fingerprint(secret)
    previous_methods = _method_values(ds)
    already_ours = f"MedSight {fingerprint}" in previous_methods
    patient_id = str(ds.get("PatientID", "") or "").strip()
    sop_class = str(ds.get("SOPClassUID", "") or "")
    run = _Run(
        secret=secret,
        retain_dates=retain_dates,
        offset_days=0 if already_ours else date_offset_days(patient_id, secret),
        keep_uids=already_ours,
        content_date_type1=sop_class.startswith(_CONTENT_DATE_TYPE1_PREFIXES),
    )
    previous_codes = [copy.deepcopy(item) for item in ds.get("DeidentificationMethodCodeSequence") or []]

    out = copy.deepcopy(ds)
    out.remove_private_tags()
    _apply(out, run)
    if pseudonymous_patient_id and patient_id and not already_ours:
        out.PatientID = patient_pseudonym(patient_id, secret)
    file_meta = getattr(out, "file_meta", None)
    if file_meta is not None:
        for tag in _FILE_META_NODE_TAGS:
            if tag in file_meta:
                del file_meta[tag]
        if "MediaStorageSOPInstanceUID" in file_meta:
            file_meta.MediaStorageSOPInstanceUID = out.get("SOPInstanceUID") or uid_pseudonym(
                file_meta.MediaStorageSOPInstanceUID, secret)
    _record(out, run, fingerprint, previous_methods, previous_codes)
    return out
