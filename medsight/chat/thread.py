"""A chat thread on the page: the line saying what is in context, and saving the thread to History."""

from __future__ import annotations

from typing import Any


def context_line(analysis: dict | None, study_id: str | None, verified: bool = False) -> str:
    """What the chat knows about the current study, in one line.

    Args:
        analysis: `AnalysisResult.to_dict()` of the current study (or None).
        study_id: the open study's ID (or None when no study is open).
        verified: a report verification is in context too.
    """
    if analysis:
        parts = [f"study `{(analysis.get('study') or {}).get('study_id') or study_id or '?'}`"]
        anomaly = analysis.get("anomaly") or {}
        if "fused_score" in anomaly:
            parts.append(f"anomaly score {float(anomaly['fused_score']):.3f} "
                         f"({'above' if anomaly.get('is_anomalous') else 'below'} threshold)")
        positives = (analysis.get("pathology") or {}).get("positives") or []
        parts.append("flagged: " + (", ".join(positives) if positives else "none"))
        risk = ((analysis.get("fusion") or {}).get("risk") or {})
        if isinstance(risk, dict) and risk.get("level"):
            parts.append(f"risk {risk['level']}")
        if verified:
            parts.append("report verification")
        return ":material/radiology: In context: " + " · ".join(parts)
    if study_id is not None:
        return (f":material/radiology: Study `{study_id}` is open but not analysed: answers are general. "
                "Run Analyze for study-specific answers.")
    return ":material/radiology: No study in context: answers are general. Open and analyse a study on Analyze."


def save_thread(history: Any, user: str, messages: list[dict], analysis: dict | None, study_id: str | None,
                record_id: int | None) -> int:
    """Save the thread to History (a new "chat" record, or an update of `record_id`); returns the record's ID.

    Args:
        history: the `medsight.storage.History` store.
        study_id: the open study's ID; the analysed study's ID wins when an analysis is in context.
    """
    if analysis:
        study_id = (analysis.get("study") or {}).get("study_id")
    payload = {"messages": messages, "study_id": study_id, "analysis_id": (analysis or {}).get("analysis_id")}
    if record_id is None:
        title = next((m["text"] for m in messages if m["role"] == "user"), "Chat")[:80]
        return history.save_record(user, "chat", study_id, title, payload)
    history.update_record(user, record_id, payload=payload)
    return record_id
