"""System page panel: this workstation as a DICOM node (receiver start/stop and status, C-ECHO of remote nodes)."""

from __future__ import annotations

from typing import Any

import streamlit as st

from views import _shared as ui


@st.cache_resource(show_spinner=False)
def _running(db_path: str) -> dict:
    """The receiver of this app process (one per data directory), kept across reruns and sessions."""
    return {"node": None}


def running_node() -> Any | None:
    """The DICOM node running inside the app, or None."""
    node = _running(str(ui.settings().db_path))["node"]
    return node if node is not None and node.running else None


def _start(ae_title: str, port: int, bind: str, user: str, auto: bool) -> None:
    from medsight.node import DicomNode, NodeSettings

    current = ui.settings()
    try:
        node_settings = NodeSettings.from_settings(current, ae_title=ae_title, port=int(port), bind=bind.strip(),
                                                   user=user.strip(), auto_analyse=auto)
        node = DicomNode(current, ui.history(), node_settings).start()
    except (ValueError, RuntimeError) as exc:  # their messages are written for the reader
        st.error(str(exc), icon=":material/error:")
        return
    except Exception as exc:
        ui.report_error(exc, "The DICOM receiver could not start")
        return
    _running(str(current.db_path))["node"] = node
    ui.audit("dicom_receiver_started", {"address": node.receiver.status.address, "ae_title": node_settings.ae_title,
                                        "receiving_account": node.user, "auto_analyse": auto})
    st.rerun()


def _status(node: Any) -> None:
    status = node.status()
    st.success(f"Receiving as **{status['ae_title']}** on `{status['address']}` for account **{status['user']}**; "
               f"automatic analysis {'on' if status['auto_analyse'] else 'off'}.", icon=":material/podcasts:")
    for warning in status["warnings"]:
        st.warning(warning, icon=":material/warning:")
    cols = st.columns(5)
    cols[0].metric("Received", status["received"])
    cols[1].metric("Duplicates ignored", status["duplicates"])
    cols[2].metric("Failed", status["failed"])
    cols[3].metric("Waiting", status["waiting"])
    cols[4].metric("Analysed", status["analysed"])
    if status["last_error"]:
        st.caption(f"Last storage problem: {status['last_error']}")


def _echo_remotes() -> None:
    from medsight.node import RemoteNode, echo, parse_remotes

    current = ui.settings()
    try:
        remotes = [str(r) for r in parse_remotes(current.node_remotes)]
    except ValueError as exc:
        st.warning(f"MEDSIGHT_NODE_REMOTES: {exc}", icon=":material/warning:")
        remotes = []
    st.caption("Remote nodes (PACS) come from `MEDSIGHT_NODE_REMOTES` (e.g. `PACS@10.0.0.5:104`); the PACS must "
               f"know this workstation as AE title `{current.node_ae_title}`.")
    if len(remotes) > 1:
        st.caption("Configured: " + ", ".join(f"`{r}`" for r in remotes))
    chosen = st.text_input("Remote node", value=remotes[0] if remotes else "", key="dicom_remote",
                           placeholder="AE@host:port").strip()
    if st.button("Test connection (C-ECHO)", icon=":material/network_check:", key="dicom_echo") and chosen:
        try:
            result = echo(RemoteNode.parse(chosen), current.node_ae_title)
        except ValueError as exc:
            st.error(str(exc), icon=":material/error:")
            return
        (st.success if result.ok else st.error)(result.message)


def dicom_node_panel(user: str) -> None:
    """The DICOM node: receiver settings, start/stop and counts (administrators), and a C-ECHO test of remote nodes."""
    st.subheader("DICOM node", anchor=False)
    st.caption("Receive studies from a PACS or modality (C-STORE) into the Worklist, and check remote nodes. "
               "Received instances are de-identified before they are written (unless identifiers are kept), "
               "stored before they are acknowledged, then checked by the input gate.")
    node = running_node()
    if node is not None:
        _status(node)
        if ui.is_admin() and st.button("Stop receiver", icon=":material/stop_circle:", key="dicom_stop"):
            node.stop()
            ui.audit("dicom_receiver_stopped", {"received": node.receiver.status.received})
            st.rerun()
    elif not ui.is_admin():
        st.info("The DICOM receiver is not running in this app. An administrator can start it here, or run "
                "`python -m medsight.node`.", icon=":material/info:")
    else:
        current = ui.settings()
        with st.form("dicom_node_start", border=False):
            left, middle, right = st.columns(3)
            ae_title = left.text_input("AE title", value=current.node_ae_title, max_chars=16)
            port = middle.number_input("Port", min_value=1, max_value=65535, value=current.node_port)
            bind = right.text_input("Listen on", value=current.node_bind,
                                    help="127.0.0.1 accepts studies from this computer only.")
            account = st.text_input("Account that owns received studies", value=current.node_user,
                                    placeholder="the first administrator")
            auto = st.checkbox("Analyse studies as they arrive", value=current.node_auto_analyse)
            if st.form_submit_button("Start receiver", icon=":material/play_circle:"):
                from medsight.node import bind_warning

                if bind_warning(bind):
                    st.warning(bind_warning(bind), icon=":material/warning:")
                _start(ae_title, port, bind, account, auto)
    _echo_remotes()
