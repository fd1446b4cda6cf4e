"""System page, models part: one card per model slot with tier and provenance, and the weights controls."""

from __future__ import annotations

import streamlit as st

from medsight import registry, system_report as report, weights
from medsight.config import Settings
from views import _shared as ui


def facts(items: list[tuple[str, str]]) -> None:
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
            errors[slot.name] = report.NOT_INSTALLED + str(exc)
        except Exception as exc:
            ref = ui.report_error(exc, f"{slot.title} could not be loaded")
            errors[slot.name] = f"Unexpected error (reference {ref})."
    missing = sum(e.startswith(report.NOT_INSTALLED) for e in errors.values())
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
            facts([("Source", p.source), ("Device", p.device), ("Load time", f"{p.load_seconds:.2f} s"),
                   ("Memory", f"{p.rss_delta_mb:.0f} MB")])
            st.caption("  \n".join(report.provenance_facts(p) + report.runtime_facts(loaded)))
            with st.expander("Sources tried"):
                st.markdown("\n".join(f"{i}. {step}" for i, step in enumerate(p.tried, start=1)))
        else:
            if error and error.startswith(report.NOT_INSTALLED):
                st.badge("Not installed", icon=":material/cloud_off:", color="gray")
                with st.expander("What was looked for"):
                    st.text(error.removeprefix(report.NOT_INSTALLED))
            elif error:
                st.error(error, icon=":material/error:")
            st.caption("Sources, in order: " + " → ".join(f"{s.label} ({s.kind}, {s.tier})" for s in slot.sources))
        outputs = report.outputs_line(slot, loaded)
        if outputs:
            st.caption(outputs)
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
        st.dataframe(report.weights_rows(rows), hide_index=True, width="stretch")
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
                return
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


def models_section() -> None:
    """Every model slot: which modules are missing, tiers at a glance, one card per slot (admins: Load all)."""
    st.subheader("Models", anchor=False)
    if ui.refresh_if_weights_changed():
        st.info("Weights were installed since the models were loaded; they load again from the new files.",
                icon=":material/autorenew:")
    with st.spinner("Reading the model registry…"):
        status = registry.slot_module_status()
        slots = report.known_slots()
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
    st.caption(report.tier_counts(slots, loaded))
    for slot in slots:
        _slot_card(slot, loaded.get(slot.name), errors.get(slot.name))
