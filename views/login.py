"""Sign-in screen: the only page reachable before authentication."""

from __future__ import annotations

import streamlit as st

from medsight import webguard
from views import _shared as ui


def _browser_id() -> str | None:
    """The browser's cookie, or this tab's session id: failed sign-ins are also counted per browser."""
    try:
        cookie = st.context.cookies.get(webguard.CLIENT_COOKIE)
    except Exception:
        cookie = None
    if webguard.is_client_token(cookie):
        return cookie
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return f"session:{ctx.session_id}" if ctx is not None else None


def _sign_in(username: str, password: str) -> None:
    auth = ui.authenticator()
    result = auth.login(username, password, client=_browser_id())
    if not result.ok:
        st.session_state["login_error"] = result.message
        return
    st.session_state.pop("login_error", None)
    st.session_state.pop("login_notice", None)
    st.session_state["auth_session"] = auth.start_session(result)
    st.session_state["username"] = result.username
    st.rerun()


@ui.safe_page(sign_in=False)
def main() -> None:
    # Before sign-in there is nothing for the sidebar to show; after a sign-out the browser may keep the signed-in
    # run's sidebar (last user and study) until it is told to hide it.
    st.markdown('<style>[data-testid="stSidebar"], [data-testid="stSidebarCollapsedControl"] {display: none}</style>',
                unsafe_allow_html=True)
    _, centre, _ = st.columns([1, 1.25, 1])
    with centre:
        st.markdown('<div style="height: 6vh"></div>', unsafe_allow_html=True)
        st.markdown('<span class="medsight-brand">MEDSIGHT WORKSTATION</span>', unsafe_allow_html=True)
        st.title("Sign in", anchor=False)
        st.caption("Chest X-ray decision support running on this computer. Images and results stay local.")

        notice = st.session_state.pop("login_notice", None)
        if notice:
            st.info(notice, icon=":material/info:")

        # Cleared on submit so the password never lingers in the session.
        with st.form("login_form", clear_on_submit=True, border=True):
            username = st.text_input("User name", key="login_username", autocomplete="username")
            password = st.text_input("Password", type="password", key="login_password", autocomplete="current-password")
            submitted = st.form_submit_button("Sign in", type="primary", icon=":material/login:", width="stretch")
        if submitted:
            _sign_in(username, password)
        error = st.session_state.get("login_error")
        if error:
            st.error(error, icon=":material/lock:")

        current = ui.settings()
        st.caption(
            f"Accounts are managed with `python -m medsight.users`. After {current.lockout_attempts} failed attempts "
            f"sign-in to an account pauses, for longer after each further failure (up to {current.lockout_minutes} "
            "minutes); an administrator can lift the pause. Sessions end after "
            f"{current.session_minutes} minute{'s' if current.session_minutes != 1 else ''} without activity."
        )
        st.caption(":material/warning: Decision support, not a diagnosis.")


main()
