"""Opening a study: upload or bundled sample, the study card, and the study becoming the current one."""

from __future__ import annotations

from typing import Any

import streamlit as st

from medsight import app_state, audit as audit_trail
from medsight.samples import sample_studies
from views import _shared as ui


def _saved_context(study_id: str) -> dict:
    try:
        return app_state.saved_context(ui.history(), ui.current_user(), study_id)
    except Exception as exc:  # History unreadable: open the study without its old context, say why
        ui.report_error(exc, "The study's saved context could not be read from History")
        return {}


def set_current_study(study: Any, *, save: bool = True, rewindowed: bool = False) -> None:
    """Make `study` the current one and store it in History.

    Opening another study puts this study's context, report, verification, chat and dictation aside and brings
    back the other study's own (this session's, else its latest saved analysis), or nothing: a patient's
    context never carries over to the next patient. A new display window of the same study (`rewindowed`)
    keeps its context.
    """
    if not rewindowed:
        app_state.switch_study(st.session_state, study.study_id, _saved_context)
    st.session_state["study"] = study
    if not save or not ui.current_user():
        return
    try:
        ui.history().save_study(ui.current_user(), study)
        ui.audit("study_opened", audit_trail.study_opened(study))
    except Exception as exc:
        ui.report_error(exc, "The study is open but could not be saved to History")


def read_study(source: Any, filename: str | None) -> Any | None:
    """Read an uploaded file or a sample into a `Study`; a refusal or failure is shown, and None returned."""
    try:
        from medsight.ingest import IngestError, load_study
    except ImportError as exc:
        ui.report_error(exc, "Image import is not available in this build")
        return None
    try:
        current = ui.settings()
        with st.spinner("Reading study…"):
            return load_study(source, filename=filename, max_bytes=current.max_upload_mb * 2**20,
                              store_identifiers=current.store_identifiers)
    except IngestError as exc:
        st.error(str(exc), icon=":material/broken_image:")
    except Exception as exc:
        ui.report_error(exc, "This file could not be read")
    return None


def study_card(study: Any) -> None:
    """Compact description of a study: file, modality, size, id, synthetic flag and notices."""
    from medsight.tier_labels import study_line

    st.markdown(study_line(study))
    if getattr(study, "synthetic", False):
        st.badge("SYNTHETIC PHANTOM — not a patient image", icon=":material/science:", color="violet")
    for notice in getattr(study, "notices", None) or []:
        st.info(notice, icon=":material/info:")


def _open_once(signature_key: str, signature: tuple, source: Any, filename: str) -> None:
    """Read and open a study the first time its widget shows it (reruns keep the study already open)."""
    if st.session_state.get(signature_key) == signature:
        return
    study = read_study(source, filename)
    if study is not None:
        set_current_study(study)
        st.session_state[signature_key] = signature


def study_picker(key: str = "study_picker") -> Any | None:
    """Open a study: upload PNG/JPEG/DICOM or choose a bundled synthetic sample (saved to History).

    Args:
        key: widget-key prefix, unique per page.

    Returns:
        The current `Study` (just opened or opened earlier in this session), or None.
    """
    ui.require_login()
    samples = sample_studies()
    options = ["Upload a file", "Sample study"]
    choice = st.radio("Study source", options, horizontal=True, key=f"{key}_source", label_visibility="collapsed")
    signature_key = f"{key}_opened"
    if choice == options[0]:
        upload = st.file_uploader(
            "Chest X-ray: PNG, JPEG or DICOM (files without extension are fine)",
            key=f"{key}_upload",
            help=f"Up to {ui.settings().max_upload_mb} MB. Files stay on this computer.",
        )
        if upload is not None:
            _open_once(signature_key, ("upload", upload.name, upload.size, getattr(upload, "file_id", "")),
                       upload.getvalue(), upload.name)
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
            _open_once(signature_key, ("sample", str(sample.path)), sample.path, sample.path.name)
    study = ui.current_study()
    if study is not None:
        study_card(study)
    return study
