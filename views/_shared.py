"""Streamlit helpers shared by every page: settings, History, the signed-in user, models, study picker.

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
import json
import logging
import secrets
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import streamlit as st
from streamlit.errors import StreamlitAPIException

from medsight import webguard
from medsight.app_state import context_from_analysis, switch_study
from medsight.auth import Authenticator, Session
from medsight.domain import HOW_TO_GET_REAL
from medsight.config import SHIPPED_MODELS_DIR, Settings, get_settings
from medsight.registry import DOMAIN_DESCRIPTIONS, TIER_BADGES, Domain, Tier
from medsight.storage import History

log = logging.getLogger("medsight.app")

SAMPLES_DIR = SHIPPED_MODELS_DIR / "samples"

# Page files, so pages can `st.switch_page(PAGES["analyze"])`.
PAGES = {
    "analyze": "views/analyze.py",
    "heatmap": "views/heatmap.py",
    "verify": "views/verify.py",
    "voice": "views/voice.py",
    "chat": "views/chat.py",
    "history": "views/history.py",
    "system": "views/system.py",
}

_TIER_STYLE = {
    "real": (TIER_BADGES[Tier.REAL], "green", ":material/verified:"),
    "user": (TIER_BADGES[Tier.USER], "violet", ":material/help:"),
    "demo": ("DEMO — trained on synthetic phantoms", "orange", ":material/science:"),
    "rules": (TIER_BADGES[Tier.RULES], "gray", ":material/rule:"),
}


# --- settings, database, user ------------------------------------------------------------------
def settings() -> Settings:
    """Current settings (read from the environment)."""
    return get_settings()


@st.cache_resource(show_spinner=False)
def _history(db_path: str) -> History:
    return History(db_path)


def history() -> History:
    """The History database of the current data directory (one shared instance per process)."""
    current = settings().ensure_dirs()
    return _history(str(current.db_path))


def authenticator() -> Authenticator:
    """Password checks, lockout and session bookkeeping bound to the current data directory."""
    return Authenticator(settings(), history())


def current_user() -> str | None:
    """Signed-in account name, or None before sign-in."""
    return st.session_state.get("username")


def current_session() -> Session | None:
    return st.session_state.get("auth_session")


def require_login() -> Session:
    """Stop the page unless a signed-in, unexpired session exists. Call it first on every page.

    app.py already gates every page through `st.navigation`; this second check keeps a page safe if it is
    ever run some other way (a session that expired between two reruns, a page opened from a test).

    Returns:
        The current session.
    """
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


# --- media of the signed-in session (served only to its browser; see medsight/webguard.py) ----------
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
    """A download button whose file is built only when it is clicked, and served only to this session.

    Nothing is generated (or given an address) while the page is just shown. A failure is logged with a
    reference, without the exception message, which can quote patient data.
    """
    sid = _streamlit_session_id()

    def generate() -> bytes:
        try:
            data = build()
        except Exception as exc:
            ref = secrets.token_hex(4).upper()
            log.error("error ref %s: %s could not be built (%s.%s)", ref, file_name.rsplit(".", 1)[-1].upper(),
                      type(exc).__module__, type(exc).__qualname__)
            raise RuntimeError(f"download could not be built (reference {ref})") from None
        if sid is not None:
            webguard.MEDIA_ACCESS.remember_download(sid, data)
        return data

    st.download_button(label, generate, file_name, mime, on_click="ignore", **kwargs)


def current_study() -> Any | None:
    """The study the user is working on (a `medsight.ingest.Study`), or None."""
    return st.session_state.get("study")


def audit(event: str, detail: Any = None) -> None:
    """Record an event for the signed-in user (never pass passwords or patient identifiers)."""
    try:
        history().audit(current_user(), event, detail if detail is not None else {})
    except Exception as exc:  # auditing must not break the page; the failure itself is logged
        log.warning("audit write failed for event %s: %s", event, type(exc).__name__)


# --- errors ------------------------------------------------------------------------------------
def report_error(exc: BaseException, message: str = "Something went wrong on this page") -> str:
    """Show a short error with a reference id; the code path goes to the server log only.

    The log keeps the stack and the exception type but not its message, which may quote file
    contents or names that identify a patient.

    Returns:
        The reference id shown to the user.
    """
    ref = secrets.token_hex(4).upper()
    stack = "".join(traceback.format_tb(exc.__traceback__))
    log.error("error ref %s: %s\n%sException type: %s.%s", ref, message, stack,
              type(exc).__module__, type(exc).__qualname__)
    st.error(f"{message}. Reference **{ref}** — the details are in the server log.", icon=":material/error:")
    return ref


def safe_page(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator: run a page function and turn any unexpected exception into `report_error`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        require_login()
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # st.stop / st.rerun are BaseException and pass through
            report_error(exc)
            return None

    return wrapper


# --- layout ------------------------------------------------------------------------------------
def page_header(title: str, caption: str = "") -> None:
    """Uniform page title with a one-line explanation (and the sign-in check, see `require_login`)."""
    require_login()
    st.title(title, anchor=False)
    if caption:
        st.caption(caption)


def tier_badge(provenance: Any, *, details: bool = False) -> str:
    """Coloured badge of a model's tier: real green, demo amber, rules grey.

    Args:
        provenance: a `registry.Provenance`, its `to_dict()`, or a tier string.
        details: also print slot title, source and device under the badge.

    Returns:
        The badge text.
    """
    if isinstance(provenance, str):
        tier, info = provenance, {}
    elif isinstance(provenance, dict):
        tier, info = str(provenance.get("tier", "")), provenance
    else:
        tier = str(getattr(provenance, "tier", ""))
        info = provenance.to_dict() if hasattr(provenance, "to_dict") else {}
    label, color, icon = _TIER_STYLE.get(tier.lower(), ("UNKNOWN SOURCE — treat output with caution", "red", ":material/help:"))
    st.badge(label, icon=icon, color=color)
    if details and info:
        parts = [info.get("title"), info.get("source_label"), info.get("device") and f"device {info['device']}"]
        if info.get("domain"):
            parts.append(f"trained on {DOMAIN_DESCRIPTIONS.get(Domain(info['domain']), info['domain'])}")
        st.caption(" · ".join(str(p) for p in parts if p))
    return label


# --- models ------------------------------------------------------------------------------------
@st.cache_resource(show_spinner=False, max_entries=64)
def _load_model(slot_name: str, home: str, device: str, allow_network: bool) -> Any:
    from medsight import registry

    return registry.load(slot_name, settings=get_settings(), device=device)


_seen_install_stamp: dict[str, str] = {}


def refresh_if_weights_changed() -> bool:
    """Forget every loaded model when weights were installed since this process last looked (e.g. by
    `python -m medsight.weights` in a terminal), so they are used without restarting the app."""
    from medsight import registry, weights

    current = settings()
    stamp = weights.install_stamp(current)
    home = str(current.home)
    previous = _seen_install_stamp.setdefault(home, stamp)
    if stamp == previous:
        return False
    _seen_install_stamp[home] = stamp
    registry.clear_cache()
    _load_model.clear()
    return True


def get_model(slot_name: str) -> Any:
    """Load a model slot once per process.

    Returns:
        `registry.LoadedModel` (model + provenance).

    Raises:
        registry.ModelUnavailable: when no source could provide the model (message lists what was tried).
    """
    from medsight.device import pick_device

    refresh_if_weights_changed()
    current = settings()
    device = pick_device(current.device).torch_device
    with st.spinner(f"Loading model {slot_name}…"):
        return _load_model(slot_name, str(current.home), device, current.allow_network)


def reload_model(slot_name: str) -> list[str]:
    """Forget a slot (and the slots built on it) in the registry and in this app's model cache.

    The next `get_model` reads the weights files again, so newly installed weights are used without a restart.
    Returns the slot names forgotten.
    """
    from medsight import registry

    names = registry.forget_slot(slot_name)
    _load_model.clear()
    _seen_install_stamp[str(settings().home)] = weights_stamp()
    return names


def weights_stamp() -> str:
    from medsight import weights

    return weights.install_stamp(settings())


# --- studies -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SampleStudy:
    title: str
    path: Path
    description: str = ""


def sample_studies(samples_dir: Path | None = None) -> list[SampleStudy]:
    """Bundled synthetic sample studies listed in `models/samples/manifest.json` (empty if none)."""
    samples_dir = Path(samples_dir or SAMPLES_DIR)
    manifest = samples_dir / "manifest.json"
    if not manifest.is_file():
        return []
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("sample manifest unreadable: %s", type(exc).__name__)
        return []
    entries = data.get("samples", data.get("studies", [])) if isinstance(data, dict) else data
    samples: list[SampleStudy] = []
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, str):
            entry = {"file": entry}
        if not isinstance(entry, dict):
            continue
        name = entry.get("file") or entry.get("path") or entry.get("filename")
        if not name:
            continue
        path = (samples_dir / str(name)).resolve()
        if samples_dir.resolve() not in path.parents or not path.is_file():
            continue  # only files inside the samples folder
        title = str(entry.get("title") or entry.get("name") or entry.get("label") or path.name)
        samples.append(SampleStudy(title, path, str(entry.get("description") or "")))
    return samples


def gate_decision(study: Any) -> dict:
    """The input gate's decision for `study` (computed once per study), with the user's override applied."""
    from medsight.gate import GateDecision, check_study

    decisions = st.session_state.setdefault("gate_decisions", {})
    if study.study_id not in decisions:
        decisions.clear()  # only the current study's decision is kept
        decisions[study.study_id] = check_study(study).to_dict()
    by = st.session_state.get("gate_overrides", {}).get(study.study_id)
    if not by:
        return dict(decisions[study.study_id])
    return GateDecision.from_dict(decisions[study.study_id]).overridden(by).to_dict()


def withheld_notice(entries: list[dict]) -> None:
    """What the domain rule withheld and why (`domain.withheld_entry` dicts), and the one step to real weights."""
    for entry in entries:
        st.warning(f"**Withheld: {entry.get('what')}** ({str(entry.get('tier', '')).upper()} weights). "
                   f"{str(entry.get('reason', '')).capitalize()}.", icon=":material/visibility_off:")
    st.info(f"To read real chest films: {HOW_TO_GET_REAL}.", icon=":material/download:")
    st.page_link(PAGES["system"], label="Install real weights on the System page", icon=":material/settings:")


def override_gate(study: Any) -> None:
    """Record the radiologist's "analyse anyway" for a refused study (session and audit log)."""
    decision = gate_decision(study)
    user = current_user() or "radiologist"
    st.session_state.setdefault("gate_overrides", {})[study.study_id] = user
    audit("gate_override", {"study_id": study.study_id, "code": decision.get("code"), "reason": decision.get("reason")})


def _saved_context(study_id: str) -> dict:
    """What History holds for a study this session has not seen yet: its latest analysis and context."""
    user = current_user()
    if not user:
        return {}
    try:
        return context_from_analysis(history().latest_payload(user, "analysis", study_id))
    except Exception as exc:  # History unreadable: open the study without its old context, say why
        report_error(exc, "The study's saved context could not be read from History")
        return {}


def set_current_study(study: Any, *, save: bool = True, rewindowed: bool = False) -> None:
    """Make `study` the current one and store it in History.

    Opening another study puts this study's context, report, verification, chat and dictation aside and brings
    back the other study's own (this session's, else its latest saved analysis), or nothing: a patient's
    context never carries over to the next patient. A new display window of the same study (`rewindowed`)
    keeps its context.
    """
    if not rewindowed:
        switch_study(st.session_state, study.study_id, _saved_context)
    st.session_state["study"] = study
    if not save or not current_user():
        return
    try:
        history().save_study(current_user(), study)
        audit("study_opened", {"study_id": study.study_id, "format": getattr(study, "source_format", None),
                               "modality": getattr(study, "modality", None),
                               "synthetic": bool(getattr(study, "synthetic", False))})
    except Exception as exc:
        report_error(exc, "The study is open but could not be saved to History")


def _ingest(source: Any, filename: str | None) -> Any | None:
    try:
        from medsight.ingest import IngestError, load_study
    except ImportError as exc:
        report_error(exc, "Image import is not available in this build")
        return None
    try:
        current = settings()
        with st.spinner("Reading study…"):
            return load_study(source, filename=filename, max_bytes=current.max_upload_mb * 2**20,
                              store_identifiers=current.store_identifiers)
    except IngestError as exc:
        st.error(str(exc), icon=":material/broken_image:")
    except Exception as exc:
        report_error(exc, "This file could not be read")
    return None


def study_card(study: Any) -> None:
    """Compact description of a study: file, modality, size, id, synthetic flag and notices."""
    height, width = (tuple(study.image.shape[:2]) if getattr(study, "image", None) is not None else ("?", "?"))
    parts = [
        f"**{study.filename or 'unnamed study'}**",
        (study.source_format or "").upper(),
        study.modality or "",
        study.view_position or "",
        f"{width}×{height} px",
        f"study `{study.study_id}`",
    ]
    st.markdown(" · ".join(p for p in parts if p))
    if getattr(study, "synthetic", False):
        st.badge("SYNTHETIC PHANTOM — not a patient image", icon=":material/science:", color="violet")
    for notice in getattr(study, "notices", None) or []:
        st.info(notice, icon=":material/info:")


def study_picker(key: str = "study_picker") -> Any | None:
    """Open a study: upload PNG/JPEG/DICOM or choose a bundled synthetic sample.

    A newly opened study becomes `st.session_state["study"]` and is saved to History.

    Args:
        key: widget-key prefix, unique per page.

    Returns:
        The current `Study` (just opened or opened earlier in this session), or None.
    """
    require_login()
    samples = sample_studies()
    options = ["Upload a file", "Sample study"]
    choice = st.radio("Study source", options, horizontal=True, key=f"{key}_source", label_visibility="collapsed")
    signature_key = f"{key}_opened"
    if choice == options[0]:
        upload = st.file_uploader(
            "Chest X-ray: PNG, JPEG or DICOM (files without extension are fine)",
            key=f"{key}_upload",
            help=f"Up to {settings().max_upload_mb} MB. Files stay on this computer.",
        )
        if upload is not None:
            signature = ("upload", upload.name, upload.size, getattr(upload, "file_id", ""))
            if st.session_state.get(signature_key) != signature:
                study = _ingest(upload.getvalue(), upload.name)
                if study is not None:
                    set_current_study(study)
                    st.session_state[signature_key] = signature
    elif not samples:
        st.info("No sample studies are installed in this build (models/samples/).", icon=":material/info:")
    else:
        titles = [s.title for s in samples]
        picked = st.selectbox("Sample study (synthetic phantoms for demonstration)", titles, index=None,
                              placeholder="Choose a sample…", key=f"{key}_sample")
        if picked is not None:
            sample = samples[titles.index(picked)]
            if sample.description:
                st.caption(sample.description)
            signature = ("sample", str(sample.path))
            if st.session_state.get(signature_key) != signature:
                study = _ingest(sample.path, sample.path.name)
                if study is not None:
                    set_current_study(study)
                    st.session_state[signature_key] = signature
    study = current_study()
    if study is not None:
        study_card(study)
    return study


def placeholder(title: str, caption: str, coming: list[str], icon: str = ":material/construction:") -> None:
    """An honest 'not built yet' page: what the page will do, and nothing pretending to do it."""
    require_login()
    page_header(title, caption)
    st.info("This part of the workstation is not available in this build yet.", icon=icon)
    st.markdown("**What this page will provide:**\n" + "\n".join(f"- {item}" for item in coming))
