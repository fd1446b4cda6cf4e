"""Priors: link a patient's studies and give the interval change against the most recent prior analysis.

Linking. Studies link by the keyed patient pseudonym ingest stores in ``metadata["patient_pseudonym"]`` (an
HMAC of the Patient ID with this installation's secret, see :mod:`medsight.deid.keys`), or by the kept
Patient ID when identifiers are stored. A study without a patient identity (PNG/JPEG, an empty or placeholder
Patient ID such as "ANONYMOUS") never links, and a user only ever sees their own studies.

Order. The most recent prior is chosen by study date, else acquisition date, when both studies keep one
(only with the Retain Longitudinal Temporal Information option, `MEDSIGHT_DEID_RETAIN_DATES`); else by the
study year when the years differ; else by when each study was first opened on this workstation. The basis
used is part of the result and is shown with the date.

Interval change. Only scores that both analyses report are compared: a withheld, refused, skipped or missing
score in either study gives no change, with the reason, and so do scores from different model weights or
thresholds (not on one scale). A change within the tolerance is "no significant interval change"; the
tolerance is a tenth of the score's operating threshold, the scale on which each score is read. No
test-retest variability is known for these models, so this is a stated convention, not a measured limit;
a score without a threshold has no tolerance and its change is not called significant or not.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

TOLERANCE_FRACTION = 0.10
TOLERANCE_NOTE = (f"Tolerance for “no significant interval change”: ±{TOLERANCE_FRACTION:.0%} of each score's "
                  "operating threshold (a convention on the threshold's scale; no test-retest variability is "
                  "known for these models).")

# Patient IDs that name nobody: studies carrying them must not be linked to each other.
PLACEHOLDER_PATIENT_IDS = ("", "0", "-", "ANON", "ANONYMOUS", "ANONYMIZED", "ANONYMISED", "UNKNOWN", "NONE",
                           "N/A", "NA", "NULL", "PATIENT", "NOID", "NO ID")

BASIS_STUDY_DATE, BASIS_ACQUISITION_DATE = "study date", "acquisition date"
BASIS_STUDY_YEAR, BASIS_OPENED = "study year", "date opened"

INCREASE, DECREASE, STABLE = "interval increase", "interval decrease", "no significant interval change"

_SLOT_STAGES = {"anomaly.detector": "vision: anomaly detector", "pathology.classifier": "vision: pathology classifier"}
_SLOT_NAMES = {"anomaly.detector": "anomaly detector", "pathology.classifier": "pathology classifier"}


@functools.lru_cache(maxsize=4)
def _placeholder_keys(secret: bytes) -> frozenset[str]:
    from medsight.deid.keys import patient_pseudonym

    return frozenset(patient_pseudonym(value, secret) for value in PLACEHOLDER_PATIENT_IDS)


def patient_key(metadata: dict | None) -> str | None:
    """The key that links a study to its patient's other studies, or None when it carries no patient identity."""
    from medsight.deid.keys import installation_secret, patient_pseudonym

    meta = metadata or {}
    key = meta.get("patient_pseudonym")
    if not key:
        patient_id = str((meta.get("identifiers") or {}).get("patient_id") or "").strip()
        key = patient_pseudonym(patient_id) if patient_id else None
    if not key or str(key) in _placeholder_keys(installation_secret()):
        return None
    return str(key)


def linked(metadata_a: dict | None, metadata_b: dict | None) -> bool:
    """Whether two studies belong to the same patient (both must carry a patient identity)."""
    key = patient_key(metadata_a)
    return key is not None and key == patient_key(metadata_b)


@dataclass(frozen=True)
class StudyTime:
    """When a study was done, as far as this workstation knows it."""

    opened: str  # first opened on this workstation (History timestamp, UTC)
    row: int  # History row id: breaks ties between studies opened in the same millisecond
    study_date: str | None = None  # ISO date, kept only under the Retain Longitudinal Temporal Information option
    acquisition_date: str | None = None
    year: int | None = None
    dates_shifted: bool = False

    @classmethod
    def of(cls, metadata: dict | None, opened: str, row: int = 0) -> "StudyTime":
        meta = metadata or {}
        year = meta.get("study_year")
        return cls(opened=str(opened), row=int(row), study_date=meta.get("study_date") or None,
                   acquisition_date=meta.get("acquisition_date") or None,
                   year=int(year) if isinstance(year, (int, float)) else None,
                   dates_shifted=meta.get("dates_retained") == "modified")


def _common_date(a: StudyTime, b: StudyTime) -> tuple[str, str, str] | None:
    """(basis, date of a, date of b) on the best date both studies keep, or None."""
    if a.study_date and b.study_date:
        return BASIS_STUDY_DATE, a.study_date, b.study_date
    if a.acquisition_date and b.acquisition_date:
        return BASIS_ACQUISITION_DATE, a.acquisition_date, b.acquisition_date
    return None


def _before(candidate: StudyTime, current: StudyTime) -> str | None:
    """The basis on which `candidate` is earlier than `current`, or None when it is not earlier."""
    opened_first = (candidate.opened, candidate.row) < (current.opened, current.row)
    common = _common_date(candidate, current)
    if common:
        basis, then, now = common
        return basis if then < now or (then == now and opened_first) else None
    if candidate.year and current.year and candidate.year != current.year:
        return BASIS_STUDY_YEAR if candidate.year < current.year else None
    return BASIS_OPENED if opened_first else None


def _recency(when: StudyTime, basis: str, current: StudyTime) -> tuple:
    """Sort key among priors: later is more recent (dated priors by their date, the rest by year then opening)."""
    if basis in (BASIS_STUDY_DATE, BASIS_ACQUISITION_DATE):
        return (1, _common_date(when, current)[1], when.opened, when.row)
    return (0, str(when.year or current.year or 0), when.opened, when.row)


@dataclass
class PriorStudy:
    """The most recent prior study of the current study's patient, with its latest analysis (if any)."""

    study_id: str
    metadata: dict
    when: StudyTime
    current_when: StudyTime
    basis: str
    analysis: dict | None = None

    @property
    def date_text(self) -> str:
        """The prior's date on the basis used to choose it (the "DATE" of "compared with study of DATE")."""
        return _date_on(self.when, self.current_when, self.basis)

    @property
    def current_date_text(self) -> str:
        return _date_on(self.current_when, self.when, self.basis)

    @property
    def interval_days(self) -> int | None:
        """Days between the two studies, when both keep a date (real also under shifted dates)."""
        common = _common_date(self.when, self.current_when)
        if not common or self.basis not in (BASIS_STUDY_DATE, BASIS_ACQUISITION_DATE):
            return None
        return (date.fromisoformat(common[2]) - date.fromisoformat(common[1])).days

    @property
    def basis_note(self) -> str:
        """How the prior was chosen and what its date means, in words."""
        if self.basis in (BASIS_STUDY_DATE, BASIS_ACQUISITION_DATE):
            note = f"ordered by {self.basis}"
            if self.when.dates_shifted or self.current_when.dates_shifted:
                note += (" (dates shifted per patient by de-identification: the interval is real, "
                         "the calendar date is not)")
            return note
        missing = "the study dates are not kept (setting MEDSIGHT_DEID_RETAIN_DATES)"
        if self.basis == BASIS_STUDY_YEAR:
            return f"ordered by study year; {missing}"
        return f"ordered by when each study was first opened on this workstation; {missing}"


def _date_on(when: StudyTime, other: StudyTime, basis: str) -> str:
    if basis in (BASIS_STUDY_DATE, BASIS_ACQUISITION_DATE):
        common = _common_date(when, other)
        return common[1] if common else "—"
    if basis == BASIS_STUDY_YEAR:
        return str(when.year)
    return f"{when.opened[:10]} {when.opened[11:16]} UTC (opened)"


def _linked_rows(history: Any, user: str, key: str) -> list[dict]:
    """This user's stored studies of the patient `key` (metadata only, no images)."""
    return [row for row in history.studies.mentioning(user, key) if patient_key(row["metadata"]) == key]


def _latest_analysis(history: Any, user: str, study_id: str, metadata: dict) -> dict | None:
    """The latest analysis of a stored study, also when it was analysed in another display window."""
    payload = history.latest_payload(user, "analysis", study_id)
    if payload is not None:
        return payload
    instance = metadata.get("instance_uid_pseudonym")
    if not instance:
        return None
    for record in history.list_records(user, kind="analysis", text=instance, limit=5):
        stored = ((record.get("payload") or {}).get("study") or {}).get("metadata") or {}
        if stored.get("instance_uid_pseudonym") == instance:
            return record["payload"]
    return None


def find_prior(history: Any, user: str, study: Any) -> PriorStudy | None:
    """The most recent prior study of the same patient in this user's History, or None.

    Args:
        history: a `medsight.storage.History`.
        user: the signed-in account; other accounts' studies are never considered.
        study: the current `medsight.ingest.Study` (its `metadata` carries the patient pseudonym).

    Returns:
        The prior with its latest analysis (None when it was never analysed), or None when there is no
        earlier linked study or the study carries no patient identity.
    """
    from medsight.storage.database import timestamp

    metadata = dict(getattr(study, "metadata", None) or {})
    key = patient_key(metadata)
    if key is None or not user:
        return None
    rows = _linked_rows(history, user, key)
    instance, study_uid = metadata.get("instance_uid_pseudonym"), metadata.get("study_uid_pseudonym")
    mine = [r for r in rows if r["study_id"] == study.study_id
            or (instance and r["metadata"].get("instance_uid_pseudonym") == instance)]
    current = (StudyTime.of(metadata, mine[0]["created"], mine[0]["id"]) if mine
               else StudyTime.of(metadata, timestamp(), 1 << 62))  # not stored yet: opened now
    best: tuple | None = None
    for row in rows:
        if row in mine or (study_uid and row["metadata"].get("study_uid_pseudonym") == study_uid):
            continue  # the same study (another image or window of it) is not a prior
        when = StudyTime.of(row["metadata"], row["created"], row["id"])
        basis = _before(when, current)
        if basis is None:
            continue
        rank = _recency(when, basis, current)
        if best is None or rank > best[0]:
            best = (rank, row, when, basis)
    if best is None:
        return None
    _, row, when, basis = best
    return PriorStudy(study_id=row["study_id"], metadata=row["metadata"], when=when, current_when=current, basis=basis,
                      analysis=_latest_analysis(history, user, row["study_id"], row["metadata"]))


# --- interval change -------------------------------------------------------------------------------------------


@dataclass
class ScoreChange:
    """One score in the prior and the current analysis, and the interval change between them."""

    score: str
    name: str
    prior: float | None
    current: float | None
    threshold: float | None = None
    tolerance: float | None = None
    difference: float | None = None
    change: str = ""  # INCREASE / DECREASE / STABLE; "" when no change is given
    crossing: str = ""  # e.g. "newly above threshold"
    reason: str = ""  # why no change is given
    decimals: int = 2

    def text(self) -> str:
        """One line as a radiologist reads it: prior → current (difference), the change and any crossing."""
        f = f"{{:.{self.decimals}f}}"
        if self.difference is None:
            shown = " → ".join("—" if v is None else f.format(v) for v in (self.prior, self.current))
            return f"{self.name}: {shown}; no interval change given: {self.reason}."
        sign = "+" if self.difference > 0 else ("−" if self.difference < 0 else "±")
        line = (f"{self.name}: {f.format(self.prior)} → {f.format(self.current)} "
                f"({sign}{f.format(abs(self.difference))})")
        if self.change:
            line += f", {self.change}"
        else:
            line += ", " + ("higher" if self.difference > 0 else "lower" if self.difference < 0 else "unchanged") + \
                    " (no threshold, so no tolerance: significance not assessed)"
        if self.crossing:
            line += f"; {self.crossing} ({f.format(self.threshold)})"
        return line


def _scores(analysis: dict) -> dict[str, tuple[str, str, float | None, float | None, int]]:
    """score key → (slot, name, value, threshold, decimals) of every score the analysis shows."""
    found: dict[str, tuple[str, str, float | None, float | None, int]] = {}
    anomaly = analysis.get("anomaly") or {}
    if anomaly.get("fused_score") is not None:
        found["anomaly"] = ("anomaly.detector", "Anomaly score", anomaly["fused_score"], anomaly.get("threshold"), 3)
    if anomaly.get("peak_deviation") is not None:
        found["peak-deviation"] = ("anomaly.detector", "Peak deviation from normal", anomaly["peak_deviation"],
                                   anomaly.get("deviation_threshold"), 1)
    pathology = analysis.get("pathology") or {}
    thresholds = pathology.get("thresholds") or {}
    for label, value in (pathology.get("probabilities") or {}).items():
        if value is not None:
            found[f"pathology:{label}"] = ("pathology.classifier", f"{label} probability", value,
                                           thresholds.get(label), 2)
    return found


def _absent(analysis: dict | None, slot: str, which: str) -> str:
    """Why the `which` ("prior" / "current") analysis has no value for a score of `slot`."""
    if analysis is None:
        return f"the {which} study has not been analysed on this workstation"
    withheld = (analysis.get("withheld") or {}).get(slot)
    if withheld:
        why = withheld.get("reason") or "the weights cannot speak about that image"
        return f"withheld in the {which} study ({why})"
    gate = analysis.get("gate") or {}
    if analysis.get("status") == "REFUSED" or gate.get("decision") == "refused":
        return f"the {which} study was not analysed (input gate: {gate.get('reason') or 'refused'})"
    stage = next((s for s in analysis.get("stages") or [] if s.get("name") == _SLOT_STAGES.get(slot)), None)
    if stage and stage.get("status") in ("skipped", "failed"):
        why = stage.get("message") or "no reason given"
        return f"the {_SLOT_NAMES[slot]} {stage['status']} in the {which} analysis ({why})"
    return f"not scored in the {which} analysis"


def _not_comparable(prior: dict, current: dict, slot: str, prior_threshold: Any, threshold: Any) -> str:
    """Why two values of one score are not on one scale, or ""."""
    before = (prior.get("models") or {}).get(slot) or {}
    now = (current.get("models") or {}).get(slot) or {}
    if before.get("sha256") and now.get("sha256") and before["sha256"] != now["sha256"]:
        return (f"the {_SLOT_NAMES[slot]} weights differ ({before.get('version') or before['sha256'][:12]} in the "
                f"prior, {now.get('version') or now['sha256'][:12]} now), so the scores are not on one scale")
    if prior_threshold is not None and threshold is not None and abs(float(prior_threshold) - float(threshold)) > 1e-9:
        return f"the operating threshold changed ({float(prior_threshold):.3f} then, {float(threshold):.3f} now)"
    return ""


def _crossing(prior: float, current: float, threshold: float | None) -> str:
    if threshold is None:
        return ""
    was, now = prior >= threshold, current >= threshold
    if now and not was:
        return "newly above threshold"
    if was and not now:
        return "now below threshold"
    return "remains above threshold" if now else "remains below threshold"


def interval_changes(prior: dict | None, current: dict) -> list[ScoreChange]:
    """The interval change of every score either analysis shows; a change only where both have the score.

    Args:
        prior: the prior study's analysis (`AnalysisResult.to_dict()` as stored), or None if never analysed.
        current: the current analysis.

    Returns:
        One `ScoreChange` per score, in the order anomaly, peak deviation, pathology labels.
    """
    before, now = _scores(prior or {}), _scores(current)
    changes = []
    for key in [*now, *(k for k in before if k not in now)]:
        slot, name, value, threshold, decimals = now.get(key) or before[key]
        if key not in before or key not in now:
            reason = _absent(prior, slot, "prior") if key not in before else _absent(current, slot, "current")
            changes.append(ScoreChange(key, name, before[key][2] if key in before else None,
                                       value if key in now else None, threshold, reason=reason, decimals=decimals))
            continue
        old = before[key][2]
        reason = _not_comparable(prior, current, slot, before[key][3], threshold)
        if reason:
            changes.append(ScoreChange(key, name, old, value, threshold, reason=reason, decimals=decimals))
            continue
        difference = float(value) - float(old)
        tolerance = TOLERANCE_FRACTION * float(threshold) if threshold is not None and float(threshold) > 0 else None
        change = "" if tolerance is None else (
            INCREASE if difference > tolerance else DECREASE if difference < -tolerance else STABLE)
        changes.append(ScoreChange(key, name, float(old), float(value), threshold, tolerance, difference, change,
                                   _crossing(float(old), float(value), threshold), decimals=decimals))
    return changes


@dataclass
class Comparison:
    """The current analysis compared with the most recent prior study: what the page, PDF and SR print."""

    prior_study_id: str
    prior_date: str
    current_date: str
    basis: str
    basis_note: str
    interval_days: int | None
    prior_analysis_id: str | None
    changes: list[ScoreChange] = field(default_factory=list)
    tolerance_note: str = TOLERANCE_NOTE

    @property
    def title(self) -> str:
        return f"Compared with study of {self.prior_date}"

    def summary(self) -> str:
        """The heading line with the basis and interval."""
        interval = f"; interval {self.interval_days} days" if self.interval_days is not None else ""
        return f"{self.title} ({self.basis_note}{interval})."

    def lines(self) -> list[str]:
        """One line per score."""
        return [change.text() for change in self.changes]

    def to_dict(self) -> dict:
        data = asdict(self)
        data.update(title=self.title, summary=self.summary(), lines=self.lines())
        return data


def compare(prior: PriorStudy, current_analysis: dict) -> Comparison:
    """The comparison of `current_analysis` with the prior study's latest analysis."""
    return Comparison(
        prior_study_id=prior.study_id, prior_date=prior.date_text, current_date=prior.current_date_text,
        basis=prior.basis, basis_note=prior.basis_note, interval_days=prior.interval_days,
        prior_analysis_id=(prior.analysis or {}).get("analysis_id"),
        changes=interval_changes(prior.analysis, current_analysis),
    )
