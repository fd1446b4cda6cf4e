"""The "Comparison with prior" block on the Analyze page: the prior and the current film side by side, and the
interval change of each score both analyses have."""

from __future__ import annotations

from typing import Any

import streamlit as st

from medsight import priors
from components.viewer import viewer
from views import _shared as ui

_CHANGE_ICONS = {priors.INCREASE: "↑", priors.DECREASE: "↓", priors.STABLE: "="}


def _change_rows(comparison: priors.Comparison) -> list[dict]:
    rows = []
    for change in comparison.changes:
        f = f"{{:.{change.decimals}f}}"
        rows.append({
            "Score": change.name,
            "Prior": "—" if change.prior is None else f.format(change.prior),
            "Current": "—" if change.current is None else f.format(change.current),
            "Difference": "—" if change.difference is None else f"{change.difference:+.{change.decimals}f}",
            "Interval change": (f"{_CHANGE_ICONS.get(change.change, '')} {change.change}".strip()
                                if change.difference is not None else "not given: " + change.reason),
            "Threshold": change.crossing or "—",
        })
    return rows


def prior_comparison_block(analysis: dict, study: Any) -> None:
    """Show the most recent prior of this patient beside the current film, with the interval changes.

    Puts the comparison into `analysis["comparison"]` so the PDF and the DICOM SR built afterwards carry it
    (and removes a stale one when there is no prior).
    """
    analysis.pop("comparison", None)
    user = ui.current_user()
    if priors.patient_key(getattr(study, "metadata", None)) is None:
        st.caption(":material/link_off: No comparison with priors: this study carries no patient identity "
                   "(no Patient ID), so it is never linked to other studies.")
        return
    try:
        prior = priors.find_prior(ui.history(), user, study)
    except Exception as exc:
        ui.report_error(exc, "Earlier studies of this patient could not be read from History")
        return
    if prior is None:
        st.caption(":material/history: No earlier study of this patient in your History.")
        return
    comparison = priors.compare(prior, analysis)
    analysis["comparison"] = comparison.to_dict()
    st.subheader(comparison.title, anchor=False)
    st.caption(comparison.summary())
    before, now = st.columns(2, gap="large")
    with before:
        st.caption(f"Prior: study of {comparison.prior_date}")
        prior_study = ui.history().load_study(user, prior.study_id)
        if prior_study is not None:
            viewer(prior_study, key="prior_viewer", link_group="priors")
    with now:
        st.caption(f"Current: study of {comparison.current_date}")
        viewer(study, key="current_beside_prior_viewer", link_group="priors")
    if prior.analysis is None:
        st.info("The prior study has not been analysed on this workstation, so no interval change is given. "
                "Open it from History and analyse it to compare.", icon=":material/info:")
    if comparison.changes:
        st.dataframe(_change_rows(comparison), hide_index=True, width="stretch")
    st.caption(comparison.tolerance_note + " Only scores both analyses show are compared; a withheld or missing "
               "score gives no change.")
