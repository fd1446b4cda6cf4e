"""Worklist: received and uploaded studies, most urgent first by the AI's risk; open one in Analyze."""

from __future__ import annotations

import datetime as _dt

import streamlit as st

from views import _shared as ui
from views import _study as studies
from views._dicom_node import running_node

BAND_COLOURS = {"high": "red", "moderate": "orange", "waiting": "blue", "low": "green", "failed": "gray",
                "withheld": "violet", "refused": "gray", "not_image": "gray", "unreadable": "gray"}
BAND_ICONS = {"high": ":material/priority_high:", "moderate": ":material/warning:", "waiting": ":material/schedule:",
              "low": ":material/check_circle:", "failed": ":material/error:", "withheld": ":material/block:",
              "refused": ":material/do_not_disturb_on:", "not_image": ":material/description:",
              "unreadable": ":material/broken_image:"}
STATUS_LABELS = {"new": "New", "analysed": "Analysed", "reported": "Reported", "sent": "Sent to PACS"}
SOURCE_LABELS = {"received": "received over DICOM", "uploaded": "opened on this workstation"}


def _when(iso: str) -> str:
    try:
        return _dt.datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M")
    except (TypeError, ValueError):
        return str(iso)


def _open(user: str, study_id: str) -> None:
    """Make the study current (with its saved analysis, if any) and go to Analyze."""
    try:
        study = ui.history().load_study(user, study_id)
    except Exception as exc:
        ui.report_error(exc, "The study could not be opened")
        return
    if study is None:
        st.warning("This study is no longer stored.", icon=":material/warning:")
        return
    studies.set_current_study(study, save=False)
    ui.audit("worklist_opened", {"study_id": study_id})
    st.switch_page(ui.PAGES["analyze"])


def _analyse_later(user: str, study_id: str) -> None:
    queued = ui.history().worklist.queue_analysis(user, study_id)
    node = running_node()
    if queued and node is not None:
        node.worker.wake()
    ui.audit("worklist_analysis_queued", {"study_id": study_id})
    st.toast("Queued for analysis in the background." if node is not None else
             "Queued: it is analysed when the DICOM receiver (with its worker) runs.", icon=":material/schedule:")


def _send(user: str, study_id: str, remote_text: str) -> None:
    """Send the study's DICOM results (SR, maps, PDF from `medsight.dicom_out`) to the chosen remote node."""
    from medsight.node import RemoteNode, send_results
    from medsight.node.service import results_for_pacs

    try:
        with st.spinner("Sending to PACS…"):
            objects = results_for_pacs(ui.history(), ui.settings(), user, study_id)
            result = send_results(ui.history(), user, study_id, objects, RemoteNode.parse(remote_text),
                                  ui.settings().node_ae_title)
    except Exception as exc:
        ui.report_error(exc, "The results could not be sent")
        return
    (st.toast if result.ok else st.error)(result.message)


def _remotes() -> list[str]:
    """Configured remote nodes; none (so no send button) when the setting is empty or unreadable."""
    from medsight.node import parse_remotes

    try:
        return [str(r) for r in parse_remotes(ui.settings().node_remotes)]
    except ValueError:
        return []


def _caption(entry: dict) -> str:
    parts = [STATUS_LABELS.get(entry["status"], entry["status"]), SOURCE_LABELS.get(entry["source"], ""),
             _when(entry["arrived"])]
    if entry["modality"]:
        parts.insert(1, entry["modality"])
    if entry["latency"]:
        parts.append(f"analysed {entry['latency']:.0f} s after arrival")
    if entry["analysis"] == "queued":
        parts.append("analysis queued")
    return " · ".join(p for p in parts if p)


def _row(user: str, entry: dict, remotes: list[str]) -> None:
    with st.container(border=True):
        info, action = st.columns([6, 1], vertical_alignment="center")
        band = entry["band"]
        info.badge(entry["priority"], icon=BAND_ICONS.get(band), color=BAND_COLOURS.get(band, "gray"))
        info.markdown(f"**{entry['title']}**")
        info.caption(_caption(entry))
        if band == "refused" and entry["gate_reason"]:
            info.caption(f"Input gate: {entry['gate_reason']}")
        elif band == "withheld":
            info.caption("The installed weights cannot speak about this image: install real weights on the "
                         "System page to analyse it.")
        if not entry["study_id"]:
            return
        if action.button("Open", key=f"worklist_open_{entry['key']}", icon=":material/open_in_new:", width="stretch"):
            _open(user, entry["study_id"])
        if entry["source"] == "received" and band == "waiting" and entry["analysis"] != "queued" \
                and action.button("Analyse", key=f"worklist_analyse_{entry['key']}", icon=":material/play_arrow:",
                                  width="stretch", help="Analyse in the background"):
            _analyse_later(user, entry["study_id"])
            st.rerun()
        if remotes and entry["status"] in ("analysed", "reported", "sent") and action.button(
                "Send", key=f"worklist_send_{entry['key']}", icon=":material/send:", width="stretch",
                help=f"Send the DICOM results to {remotes[0]}"):
            _send(user, entry["study_id"], remotes[0])


def _summary(entries: list[dict]) -> None:
    counts = {band: sum(e["band"] == band for e in entries) for band in ("high", "moderate", "waiting")}
    cols = st.columns(4)
    cols[0].metric("Studies", len(entries))
    cols[1].metric("High risk", counts["high"])
    cols[2].metric("Moderate risk", counts["moderate"])
    cols[3].metric("Awaiting analysis", counts["waiting"])


@ui.safe_page
def main() -> None:
    ui.page_header("Worklist", "Every study received over DICOM or opened here, most urgent first by the AI's risk "
                               "level. Studies the models cannot speak about never rank as urgent.")
    user = ui.current_user()
    node = running_node()
    left, right = st.columns([4, 1], vertical_alignment="center")
    if node is not None:
        status = node.status()
        left.caption(f"DICOM receiver on `{status['address']}` (AE `{status['ae_title']}`): {status['received']} "
                     f"received, {status['waiting']} waiting.")
    else:
        left.caption("The DICOM receiver is not running in this app; start it on the System page or with "
                     "`python -m medsight.node`.")
    right.button("Refresh", icon=":material/refresh:", key="worklist_refresh", width="stretch")
    show = st.segmented_control("Show", ["To read", "All"], default="To read", key="worklist_show")
    entries = ui.history().worklist.entries(user)
    if show != "All":
        entries = [e for e in entries if e["status"] in ("new", "analysed")]
    if not entries:
        st.info("Nothing to read. Studies sent to this workstation's DICOM receiver and studies opened on the "
                "Analyze page appear here." if show != "All" else "No studies yet.", icon=":material/inbox:")
        return
    _summary(entries)
    remotes = _remotes()
    for entry in entries:
        _row(user, entry, remotes)


main()
