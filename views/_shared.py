"""Streamlit helpers shared by every page: the signed-in user, page frame, errors, badges, models, input gate.

The logic behind them lives in `medsight` (errors, audit, app_state, tier_labels, model_cache); these wrappers bind
it to the Streamlit session. Studies are opened with `views._study`; media access is in `views._media`.

Session-state keys used across pages:
    "username"      signed-in account name (str)
    "auth_session"  `medsight.auth.Session` of the signed-in user
    "study"         current `medsight.ingest.Study`
    "analysis"      dict from AnalysisResult.to_dict(), live objects under "analysis_objects"
    "symptoms"      free-text clinical context (str)
    "report_text"   report under verification (str)
    "verification"  a stored verification payload reopened from History (dict)
    "chat_thread"   a stored chat payload reopened from History (dict, with "record_id")
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import streamlit as st
from streamlit.errors import StreamlitAPIException

from medsight import app_state, audit as audit_trail, errors, model_cache, registry, tier_labels
from medsight.auth import Authenticator, Session
from medsight.config import Settings, get_settings
from medsight.domain import HOW_TO_GET_REAL
from medsight.model_cache import WeightsWatch
from medsight.storage import History

# Page files, so pages can `st.switch_page(PAGES["analyze"])`.
PAGES = {name: f"views/{name}.py" for name in ("analyze", "heatmap", "verify", "voice", "chat", "worklist", "history",
                                                  "system")}


# --- settings, database, user ------------------------------------------------------------------
def settings() -> Settings:
    """Current settings (read from the environment)."""
    return get_settings()


@st.cache_resource(show_spinner=False)
def _history(db_path: str) -> History:
    return History(db_path)


def history() -> History:
    """The History database of the current data directory (one shared instance per process)."""
    return _history(str(settings().ensure_dirs().db_path))


def authenticator() -> Authenticator:
    """Password checks, lockout and session bookkeeping bound to the current data directory."""
    return Authenticator(settings(), history())


def current_user() -> str | None:
    """Signed-in account name, or None before sign-in."""
    return st.session_state.get("username")


def current_session() -> Session | None:
    return st.session_state.get("auth_session")


def require_login() -> Session:
    """Stop the page unless a signed-in, unexpired session exists (app.py's gate, checked again per page)."""
    session = current_session()
    if session is not None and not session.is_expired():
        return session
    try:
        st.switch_page("app.py")  # back through the sign-in gate
    except StreamlitAPIException:
        pass  # not reachable as a page (e.g. the file was run on its own)
    st.warning("Please sign in to use MedSight Workstation.", icon=":material/lock:")
    st.stop()
    raise AssertionError("unreachable")  # st.stop() raises


def is_admin() -> bool:
    """True when the signed-in user has the admin role."""
    session = current_session()
    return bool(session is not None and session.is_admin)


def current_study() -> Any | None:
    """The study the user is working on (a `medsight.ingest.Study`), or None."""
    return st.session_state.get("study")


def audit(event: str, detail: Any = None) -> None:
    """Record an event for the signed-in user (never pass passwords or patient identifiers)."""
    audit_trail.record(history, current_user(), event, detail)


# --- the page frame ----------------------------------------------------------------------------
def report_error(exc: BaseException, message: str = "Something went wrong on this page") -> str:
    """Show a short error with a reference id (the code path goes to the server log only); return the id."""
    ref = errors.log_failure(exc, message)
    st.error(f"{message}. Reference **{ref}** — the details are in the server log.", icon=":material/error:")
    return ref


def safe_page(fn: Callable[..., Any] | None = None, *, sign_in: bool = True) -> Any:
    """Decorator of a page's `main()`: check the sign-in (unless `sign_in=False`, for the sign-in page itself)
    and turn any unexpected exception into `report_error`."""
    if fn is None:
        return functools.partial(safe_page, sign_in=sign_in)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if sign_in:
            require_login()
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # st.stop / st.rerun are BaseException and pass through
            report_error(exc)
            return None

    return wrapper


def page_header(title: str, caption: str = "") -> None:
    """Uniform page title with a one-line explanation (and the sign-in check, see `require_login`)."""
    require_login()
    st.title(title, anchor=False)
    if caption:
        st.caption(caption)


def tier_badge(provenance: Any, *, details: bool = False) -> str:
    """Coloured badge of a model's tier (`registry.Provenance`, its dict or a tier string); returns its text."""
    tier, info = tier_labels.tier_of(provenance)
    label, color, icon = tier_labels.tier_style(tier)
    st.badge(label, icon=icon, color=color)
    if details and info:
        st.caption(tier_labels.provenance_line(info))
    return label


# --- models ------------------------------------------------------------------------------------
@st.cache_resource(show_spinner=False, max_entries=64)
def _load_model(slot_name: str, home: str, device: str, allow_network: bool) -> Any:
    return model_cache.long_lived(registry.load(slot_name, settings=get_settings(), device=device))


_weights_watch = WeightsWatch()


def refresh_if_weights_changed() -> bool:
    """Forget every loaded model when weights were installed since this process last looked."""
    if not _weights_watch.changed(settings()):
        return False
    model_cache.release_long_lived()
    registry.clear_cache()
    _load_model.clear()
    return True


def get_model(slot_name: str) -> Any:
    """Load a model slot once per process: a `registry.LoadedModel`, or `registry.ModelUnavailable` raised."""
    from medsight.device import pick_device

    refresh_if_weights_changed()
    current = settings()
    device = pick_device(current.device).torch_device
    with st.spinner(f"Loading model {slot_name}…"):
        return _load_model(slot_name, str(current.home), device, current.allow_network)


def reload_model(slot_name: str) -> list[str]:
    """Forget a slot (and the slots built on it) so the next `get_model` reads its files again; returns them."""
    model_cache.release_long_lived()
    names = registry.forget_slot(slot_name)
    _load_model.clear()
    _weights_watch.mark_seen(settings())
    return names


# --- input gate and domain rule ----------------------------------------------------------------
def gate_decision(study: Any) -> dict:
    """The input gate's decision for `study` (computed once per study), with the user's override applied."""
    user = current_user()
    return app_state.gate_decision(st.session_state, study, remember=(
        lambda study_id, decision: history().studies.note_gate(user, study_id, decision)) if user else None)


def override_gate(study: Any) -> None:
    """Record the radiologist's "analyse anyway" for a refused study (session and audit log)."""
    audit("gate_override", app_state.override_gate(st.session_state, study, current_user() or "radiologist"))


def withheld_notice(entries: list[dict]) -> None:
    """What the domain rule withheld and why (`domain.withheld_entry` dicts), and the one step to real weights."""
    for entry in entries:
        st.warning(f"**Withheld: {entry.get('what')}** ({str(entry.get('tier', '')).upper()} weights). "
                   f"{str(entry.get('reason', '')).capitalize()}.", icon=":material/visibility_off:")
    st.info(f"To read real chest films: {HOW_TO_GET_REAL}.", icon=":material/download:")
    st.page_link(PAGES["system"], label="Install real weights on the System page", icon=":material/settings:")
