"""Media of the signed-in session: served only to its own browser (see medsight/webguard.py), downloads built on click."""

from __future__ import annotations

from typing import Any, Callable

import streamlit as st

from medsight import errors, webguard
from medsight.auth import Session


def _streamlit_session_id() -> str | None:
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else None


def bind_media_access(session: Session) -> None:
    """Let this browser fetch the media this signed-in session shows, until the session expires."""
    sid = _streamlit_session_id()
    if sid is None:
        return
    try:
        client = st.context.cookies.get(webguard.CLIENT_COOKIE)
    except Exception:  # no browser behind this run (e.g. a test harness)
        client = None
    webguard.MEDIA_ACCESS.grant(sid, client, session.username, session.expires)


def release_media_access() -> None:
    """Stop serving this session's media (sign-out, expiry); Streamlit drops the files on the next run."""
    sid = _streamlit_session_id()
    if sid is not None:
        webguard.MEDIA_ACCESS.revoke(sid)


def remember_shown_media() -> None:
    """Keep the media of the page just shown servable while the next run rebuilds it."""
    sid = _streamlit_session_id()
    if sid is not None:
        webguard.MEDIA_ACCESS.remember_shown(sid, webguard.session_media_ids(sid))


def download_on_request(label: str, build: Callable[[], bytes], file_name: str, mime: str, **kwargs: Any) -> None:
    """A download button whose file is built only when it is clicked, and served only to this session."""
    sid = _streamlit_session_id()

    def generate() -> bytes:
        try:
            data = build()
        except Exception as exc:
            ref = errors.log_build_failure(file_name, exc)
            raise RuntimeError(f"download could not be built (reference {ref})") from None
        if sid is not None:
            webguard.MEDIA_ACCESS.remember_download(sid, data)
        return data

    st.download_button(label, generate, file_name, mime, on_click="ignore", **kwargs)
