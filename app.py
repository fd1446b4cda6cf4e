"""MedSight Workstation: entry point, sign-in gate and frame around every page.

Run with `streamlit run app.py` (settings in .streamlit/config.toml; data in $MEDSIGHT_HOME).
"""

from __future__ import annotations

import datetime as _dt
import logging
import sys
from pathlib import Path

import streamlit as st

from medsight.auth import ensure_first_account
from views import _shared as ui

# A file served by the app itself: a ":material/...:" page icon makes the browser fetch the favicon from
# Google's font host, and nothing is to leave the machine.
ICON = Path(__file__).resolve().parent / "assets" / "medsight-icon.png"

st.set_page_config(
    page_title="MedSight Workstation",
    page_icon=str(ICON),
    layout="wide",
    initial_sidebar_state="expanded",
    menu_items={"About": "MedSight Workstation — local chest X-ray decision support. Not a diagnosis."},
)

DISCLAIMER = "Decision support, not a diagnosis. Every finding needs review by a qualified radiologist."

_STYLE = """
<style>
/* Tighter, calmer frame: a reading-room workstation, not a web page. */
.block-container {padding-top: 2.2rem; padding-bottom: 3rem;}
[data-testid="stSidebar"] [data-testid="stCaptionContainer"] {line-height: 1.35;}
.medsight-footer {margin-top: 2.5rem; padding-top: .6rem; border-top: 1px solid #2b333e;
  color: #8b96a3; font-size: .82rem; letter-spacing: .01em;}
.medsight-brand {font-weight: 650; letter-spacing: .04em; color: #2bb3c4; font-size: .95rem;}
</style>
"""


class _ServerLogHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time (the server's terminal / log)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _configure_logging() -> None:
    logger = logging.getLogger("medsight")
    # app.py is re-executed on every rerun, so the class object differs each time: match it by name.
    if not any(type(h).__name__ == _ServerLogHandler.__name__ for h in logger.handlers):
        handler = _ServerLogHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


@st.cache_resource(show_spinner=False)
def _first_account(users_path: str) -> bool:
    """Create the first account once per process and data directory (password printed to stderr)."""
    return ensure_first_account(ui.settings().ensure_dirs()) is not None


def _active_session():
    """The signed-in session, refreshed; None (with a notice) when there is none or it expired."""
    session = ui.current_session()
    if session is None:
        return None
    live = ui.authenticator().check_session(session)
    if live is None:
        st.session_state.clear()
        st.session_state["login_notice"] = (
            f"Your session ended after {session.idle_minutes} minutes without activity. Please sign in again."
        )
        return None
    return live


def _logout() -> None:
    ui.authenticator().logout(ui.current_session())
    st.session_state.clear()  # drop the study and results along with the sign-in
    st.session_state["login_notice"] = "You have signed out."


def _local_time(moment: _dt.datetime) -> str:
    return moment.astimezone().strftime("%H:%M")


def _sidebar(session, container) -> None:
    with container:
        st.markdown(f":material/account_circle: **{session.display_name}**  \n`{session.username}`")
        st.caption(f"Session ends at {_local_time(session.expires)} if idle "
                   f"({session.idle_minutes} min without activity).")
        study = ui.current_study()
        if study is not None:
            name = study.filename or "unnamed study"
            st.caption(f":material/radiology: Current study  \n**{name}**  \nid `{study.study_id}`")
        else:
            st.caption(":material/radiology: No study open")
        st.button("Sign out", icon=":material/logout:", on_click=_logout, key="logout", width="stretch")
        st.caption(f":material/warning: {DISCLAIMER}")


@st.cache_resource(show_spinner=False)
def _reference_data(home: str) -> str:
    """Corpus and case base for this data directory: copied from the setup build, or built in the background."""
    from medsight import reference

    outcome = reference.ensure_ready(ui.settings())
    if outcome != "off":
        reference.warm_up(ui.settings())  # the chat's embedder loads while the user signs in
    return outcome


def _reference_progress(container) -> None:
    from medsight import reference

    state = reference.status(ui.settings())
    if state.running:
        share = f" {state.done / state.total:.0%}" if state.total else ""
        container.caption(f":material/hourglass_top: Preparing reference data{share}: {state.message}")
    elif state.error:
        container.caption(f":material/error: Reference data could not be prepared: {state.error}")


def _run_page(page) -> None:
    try:
        page.run()
    except Exception as exc:  # st.stop / st.rerun / st.switch_page are BaseException and pass through
        ui.report_error(exc, f"The {page.title} page stopped because of an unexpected error")


def main() -> None:
    _configure_logging()
    st.markdown(_STYLE, unsafe_allow_html=True)
    current = ui.settings().ensure_dirs()
    _reference_data(str(current.home))
    if _first_account(str(current.users_path)):
        st.session_state.setdefault(
            "login_first_start",
            "First start: the account **radiologist** was created. Its password was printed once in the "
            "terminal where MedSight Workstation was started.",
        )

    session = _active_session()
    if session is None:
        login = st.Page("views/login.py", title="Sign in", icon=":material/login:", url_path="login", default=True)
        _run_page(st.navigation([login], position="hidden"))
        return

    pages = {
        "Analysis": [
            st.Page(ui.PAGES["analyze"], title="Analyze", icon=":material/radiology:", default=True),
            st.Page(ui.PAGES["heatmap"], title="Heatmap", icon=":material/blur_on:"),
            st.Page(ui.PAGES["verify"], title="Report Verification", icon=":material/fact_check:"),
            st.Page(ui.PAGES["voice"], title="Voice Entry", icon=":material/mic:"),
            st.Page(ui.PAGES["chat"], title="Chat", icon=":material/forum:"),
        ],
        "Records": [st.Page(ui.PAGES["history"], title="History", icon=":material/history:")],
        "Admin": [st.Page(ui.PAGES["system"], title="System", icon=":material/memory:")],
    }
    page = st.navigation(pages, position="sidebar", expanded=True)
    sidebar = st.sidebar.container()
    try:
        _run_page(page)
        st.markdown(f'<div class="medsight-footer">{DISCLAIMER}</div>', unsafe_allow_html=True)
    finally:
        # Filled after the page ran, so a study opened on this run already shows.
        _sidebar(session, sidebar)
        _reference_progress(sidebar)


main()
