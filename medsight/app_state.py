"""Per-study working state of a reading session: what belongs to one study never carries over to another.

Clinical context, report draft, verification, chat thread and dictation are bound to the study they were
written for. When the reader opens another study, `switch_study` puts the current study's values aside and
brings back the new study's own (from earlier in this session, else from its most recent saved analysis in
History), or nothing. A different patient's symptoms can therefore never feed the next analysis.

The state is any mutable mapping (Streamlit's `st.session_state` in the app, a dict in tests); this module does
not import Streamlit.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, Callable

# Session keys whose values belong to the current study. Widget keys are not listed: each page re-syncs its
# widgets from these (e.g. the symptoms box from "symptoms"), so they follow on the next run.
STUDY_BOUND_KEYS = (
    "analysis", "analysis_objects",  # the analysis and its live objects
    "symptoms",  # clinical context typed or dictated for this patient
    "report_text", "verification", "verification_result", "verify_applied", "verify_reopened",
    "chat_messages", "chat_record_id", "chat_thread",
    "voice_transcript", "voice_text",
)
CURRENT = "_bound_study_id"
PARKED = "_per_study_state"
# Studies whose context is kept aside per session; older ones are dropped (they remain in History).
MAX_PARKED = 20

SavedContext = Callable[[str], "dict[str, Any] | None"]


def switch_study(state: MutableMapping, study_id: str, saved_context: SavedContext | None = None) -> bool:
    """Bind the session's study-bound values to `study_id`. Returns True when the study changed.

    Args:
        state: the session state.
        study_id: the study now open.
        saved_context: called with the study id when this session has nothing of that study; returns the values
            to restore (e.g. {"symptoms": ...} from its most recent saved analysis) or None.
    """
    current = state.get(CURRENT)
    if current == study_id:
        return False
    parked: dict[str, dict] = state.setdefault(PARKED, {})
    if current is not None:
        parked[current] = {key: state[key] for key in STUDY_BOUND_KEYS if key in state}
        while len(parked) > MAX_PARKED:
            parked.pop(next(iter(parked)))
    for key in STUDY_BOUND_KEYS:
        state.pop(key, None)
    restored = parked.pop(study_id, None)
    if restored is None and saved_context is not None:
        restored = {k: v for k, v in (saved_context(study_id) or {}).items() if k in STUDY_BOUND_KEYS}
    state.update(restored or {})
    state[CURRENT] = study_id
    return True


def context_from_analysis(payload: dict | None) -> dict[str, Any]:
    """The study-bound values a saved analysis gives back: its clinical context and the analysis itself."""
    if not payload:
        return {}
    restored: dict[str, Any] = {"symptoms": payload.get("symptoms") or ""}
    if payload.get("study_id") or (payload.get("study") or {}).get("study_id"):
        restored["analysis"] = payload
    return restored


def saved_context(history: Any, user: str | None, study_id: str) -> dict[str, Any]:
    """What History holds for a study this session has not seen yet: its latest analysis and context."""
    if not user:
        return {}
    return context_from_analysis(history.latest_payload(user, "analysis", study_id))


# --- the input gate's decision, once per study, with the reader's override -------------------------------
def gate_decision(state: MutableMapping, study: Any, remember: Callable[[str, dict], None] | None = None) -> dict:
    """The input gate's decision for `study` (computed once per study), with the user's override applied.

    `remember(study_id, decision)` is called when the decision is first computed (the pages keep it with the
    stored study).
    """
    from medsight.gate import GateDecision, check_study

    decisions = state.setdefault("gate_decisions", {})
    if study.study_id not in decisions:
        decisions.clear()  # only the current study's decision is kept
        decisions[study.study_id] = check_study(study).to_dict()
        if remember is not None:
            remember(study.study_id, dict(decisions[study.study_id]))
    by = state.get("gate_overrides", {}).get(study.study_id)
    if not by:
        return dict(decisions[study.study_id])
    return GateDecision.from_dict(decisions[study.study_id]).overridden(by).to_dict()


def override_gate(state: MutableMapping, study: Any, user: str) -> dict:
    """Record the reader's "analyse anyway" for a refused study; returns the audit detail of the override."""
    decision = gate_decision(state, study)
    state.setdefault("gate_overrides", {})[study.study_id] = user
    return {"study_id": study.study_id, "code": decision.get("code"), "reason": decision.get("reason")}
