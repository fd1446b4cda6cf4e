"""MedSight Workstation: entry point, sign-in gate and frame around every page.

Run with `streamlit run app.py` (settings in .streamlit/config.toml; data in $MEDSIGHT_HOME).
"""

from __future__ import annotations

import datetime as _dt
import logging
import sys

import streamlit as st

from medsight.auth import ensure_first_account, first_account_created_here, minutes_text
from medsight.storage import utc_now
from views import _media as media
from views import _shared as ui

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
def _first_account(users_path: str) -> dict:
    """Create the first account once per process and data directory (password printed to stderr only).

    Returns:
        {"created": bool, "shown": bool}; "shown" turns True once the first administrator saw the notice.
    """
    current = ui.settings().ensure_dirs()
    created = ensure_first_account(current) is not None or first_account_created_here(current)
    return {"created": created, "shown": False}


def _first_start_notice(session, first: dict) -> None:
    """Tell the first administrator, once, where the generated password went and how to change it."""
    if not first["created"] or first["shown"] or not session.is_admin:
        return
    first["shown"] = True
    st.session_state["first_start_notice"] = (
        f"First start: the account **{session.username}** was created with a random password, printed once in "
        f"the terminal where MedSight Workstation was started. Change it with "
        f"`python -m medsight.users reset {session.username}`.")


def _active_session():
    """The signed-in session, refreshed; None (with a notice) when there is none or it expired."""
    session = ui.current_session()
    if session is None:
        return None
    live = ui.authenticator().check_session(session)
    if live is None:
        media.release_media_access()
        st.session_state.clear()
        st.session_state["login_notice"] = (
            f"Your session ended after {minutes_text(session.idle_minutes)} without activity. Please sign in again."
        )
        return None
    media.bind_media_access(live)
    return live


def _logout() -> None:
    ui.authenticator().logout(ui.current_session())
    media.release_media_access()
    st.session_state.clear()  # drop the study and results along with the sign-in
    st.session_state["login_notice"] = "You have signed out."


def _expiry_watch(session) -> None:
    """Re-check the session in the background, so an idle expiry clears the screen when it happens.

    The check does not count as activity: it only reruns the whole app once the session has run out,
    and the sign-in gate then clears the study and results.
    """
    seconds_left = (session.expires - utc_now()).total_seconds()

    @st.fragment(run_every=max(1.0, min(seconds_left + 1.0, 15.0)))
    def _watch() -> None:
        if session.is_expired():
            st.rerun(scope="app")

    _watch()


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
    st.set_page_config(
        page_title="MedSight Workstation",
        # An emoji favicon is drawn locally; a Material icon favicon would be fetched from Google's servers.
        page_icon="🩻",
        layout="wide",
        initial_sidebar_state="expanded",
        menu_items={"About": "MedSight Workstation — local chest X-ray decision support. Not a diagnosis."},
    )
    _configure_logging()
    st.markdown(_STYLE, unsafe_allow_html=True)
    current = ui.settings().ensure_dirs()
    _reference_data(str(current.home))
    first = _first_account(str(current.users_path))

    session = _active_session()
    if session is None:
        login = st.Page("views/login.py", title="Sign in", icon=":material/login:", url_path="login", default=True)
        _run_page(st.navigation([login], position="hidden"))
        return
    _first_start_notice(session, first)

    pages = {
        "Analysis": [
            st.Page(ui.PAGES["analyze"], title="Analyze", icon=":material/radiology:", default=True),
            st.Page(ui.PAGES["heatmap"], title="Heatmap", icon=":material/blur_on:"),
            st.Page(ui.PAGES["verify"], title="Report Verification", icon=":material/fact_check:"),
            st.Page(ui.PAGES["voice"], title="Voice Entry", icon=":material/mic:"),
            st.Page(ui.PAGES["chat"], title="Chat", icon=":material/forum:"),
        ],
        "Records": [st.Page(ui.PAGES["worklist"], title="Worklist", icon=":material/format_list_numbered:"),
                    st.Page(ui.PAGES["history"], title="History", icon=":material/history:")],
        # Everyone sees the models and their own audit trail there; the admin parts are for admins only.
        ("Admin" if session.is_admin else "Workstation"): [
            st.Page(ui.PAGES["system"], title="System", icon=":material/memory:")],
    }
    page = st.navigation(pages, position="sidebar", expanded=True)
    sidebar = st.sidebar.container()
    notice = st.session_state.pop("first_start_notice", None)
    if notice:
        st.info(notice, icon=":material/key:")
    try:
        _run_page(page)
        st.markdown(f'<div class="medsight-footer">{DISCLAIMER}</div>', unsafe_allow_html=True)
    finally:
        # Filled after the page ran, so a study opened on this run already shows.
        _sidebar(session, sidebar)
        _reference_progress(sidebar)
        _expiry_watch(session)
        media.remember_shown_media()


if __name__ == "__main__":
    # Streamlit runs this file as `__main__` for every browser session: the pages.
    main()
else:
    # `streamlit run app.py` finds this ASGI app and serves it with uvicorn; uvicorn imports this file as a
    # module (`app`), so this branch builds the server and the branch above runs the pages. The guard wraps
    # every HTTP response: security headers, the browser cookie, and media only for the signed-in session
    # that showed it (medsight/webguard.py).
    from starlette.middleware import Middleware
    from starlette.routing import Mount

    from medsight.api import create_app as create_api
    from medsight.config import get_settings
    from medsight.webguard import WorkstationGuard

    # On a fresh data directory the first account's password goes to this terminal now, not to a browser.
    ensure_first_account(get_settings().ensure_dirs())
    # The local HTTP API (medsight/api) in this same process, so it uses the models the pages have loaded.
    app = st.App(__file__, routes=[Mount("/api", app=create_api())], middleware=[Middleware(WorkstationGuard)])
