"""History: the signed-in user's saved results and studies; filter them and reopen one."""

from __future__ import annotations

import datetime as _dt

import streamlit as st

from medsight.storage import RECORD_KINDS
from views import _shared as ui
from views import _study as studies

KIND_LABELS = {"analysis": "Analysis", "report": "Report", "verification": "Verification", "chat": "Chat"}
KIND_ICONS = {"analysis": ":material/radiology:", "report": ":material/description:",
              "verification": ":material/fact_check:", "chat": ":material/forum:"}
# Which page continues the work on each kind of record.
TARGET_PAGE = {"analysis": "analyze", "report": "verify", "verification": "verify", "chat": "chat"}


def _when(iso: str) -> str:
    try:
        return _dt.datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M")
    except (TypeError, ValueError):
        return str(iso)


def _restore_study(user: str, study_id: str | None) -> bool:
    """Make the stored study current again. Returns False (with a message) when it cannot be loaded."""
    if not study_id:
        return True
    current = ui.current_study()
    if current is not None and current.study_id == study_id:
        return True
    try:
        study = ui.history().load_study(user, study_id)
    except Exception as exc:
        ui.report_error(exc, "The stored study could not be reopened")
        return False
    if study is None:
        st.warning(f"Study `{study_id}` is no longer stored; the result opens without its image.")
        return True
    studies.set_current_study(study, save=False)
    return True


def _reopen(user: str, record: dict) -> None:
    kind, payload = record["kind"], record["payload"]
    if not _restore_study(user, record["study_id"]):
        return
    if kind == "analysis":
        st.session_state["analysis"] = payload
    elif kind == "report":
        st.session_state["report_text"] = str(payload.get("report_text") or payload.get("text") or "")
    elif kind == "verification":
        st.session_state["verification"] = payload
        if payload.get("report_text"):
            st.session_state["report_text"] = str(payload["report_text"])
    elif kind == "chat":
        st.session_state["chat_thread"] = dict(payload, record_id=record["id"])
    ui.audit("record_reopened", {"record_id": record["id"], "kind": kind})
    st.switch_page(ui.PAGES[TARGET_PAGE[kind]])


def _records(user: str) -> None:
    left, right = st.columns([1, 2])
    kind = left.selectbox("Kind", ["All", *RECORD_KINDS], key="history_kind",
                          format_func=lambda k: KIND_LABELS.get(k, k))
    text = right.text_input("Search titles, study ids and contents", key="history_text",
                            placeholder="e.g. effusion, a study id…")
    records = ui.history().list_records(user, kind=None if kind == "All" else kind, text=text or None, limit=100)
    if not records:
        st.info("No saved results match." if (text or kind != "All") else
                "No saved results yet. Analyses, reports, verifications and chats appear here once saved.",
                icon=":material/inbox:")
        return
    st.caption(f"{len(records)} result{'s' if len(records) != 1 else ''} (newest first, at most 100).")
    for record in records:
        with st.container(border=True):
            info, action = st.columns([6, 1], vertical_alignment="center")
            kind_label = KIND_LABELS.get(record["kind"], record["kind"])
            info.markdown(f"{KIND_ICONS.get(record['kind'], '')} **{record['title'] or kind_label}**")
            meta = [kind_label, _when(record["created"])]
            if record["study_id"]:
                meta.append(f"study `{record['study_id']}`")
            info.caption(" · ".join(meta))
            if action.button("Open", key=f"history_open_{record['id']}", icon=":material/open_in_new:",
                             width="stretch"):
                _reopen(user, record)
            with info.expander("Stored content"):
                st.json(record["payload"], expanded=False)


def _studies(user: str) -> None:
    studies = ui.history().list_studies(user, limit=60)
    if not studies:
        st.info("No studies yet. Studies you open on the Analyze page are kept here.", icon=":material/inbox:")
        return
    columns = st.columns(4)
    for index, study in enumerate(studies):
        with columns[index % 4].container(border=True):
            if study["thumbnail"]:
                st.image(study["thumbnail"], width="stretch")
            title = study["filename"] or "unnamed study"
            st.markdown(f"**{title}**")
            st.caption(" · ".join(p for p in (study["modality"] or "", _when(study["created"]),
                                               f"`{study['study_id']}`") if p))
            if st.button("Open", key=f"history_study_{study['id']}", icon=":material/open_in_new:", width="stretch"):
                if _restore_study(user, study["study_id"]):
                    ui.audit("study_reopened", {"study_id": study["study_id"]})
                    st.switch_page(ui.PAGES["analyze"])


@ui.safe_page
def main() -> None:
    ui.page_header("History", "Your saved results and studies on this workstation. Only your own records are listed.")
    user = ui.current_user()
    results_tab, studies_tab = st.tabs([":material/list: Results", ":material/photo_library: Studies"])
    with results_tab:
        _records(user)
    with studies_tab:
        _studies(user)


main()
