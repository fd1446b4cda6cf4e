"""System page panel: the signed-in user's tokens for the local HTTP API (create, list, revoke)."""

from __future__ import annotations

import streamlit as st

from views import _shared as ui

NEW_TOKEN = "api_token_new"  # the secret just created: shown on this run and the next one only


def _when(iso: str | None) -> str:
    return (iso or "")[:16].replace("T", " ") or "—"


def token_panel(user: str) -> None:
    """Tokens of `user` for `python -m medsight.api` and `/api/v1/...`: shown once, stored hashed, revocable."""
    store = ui.history().api_tokens
    st.subheader("API tokens", anchor=False)
    st.caption("Scripts and hospital systems on this machine call the analysis over HTTP with a token: "
               "`Authorization: Bearer <token>` to `http://127.0.0.1:8501/api/v1/analyze` (this app) or to "
               "`python -m medsight.api` (port 8502). Every call is recorded in your audit log and its results go "
               "to your History. Only a hash of each token is kept.")
    fresh = st.session_state.pop(NEW_TOKEN, None)
    if fresh:
        st.success("Token created. Copy it now: it is shown only this once.", icon=":material/key:")
        st.code(fresh, language=None)
    with st.form("api_token_create", clear_on_submit=True, border=False):
        label = st.text_input("Name of the new token", max_chars=80, placeholder="e.g. PACS export script")
        if st.form_submit_button("Create token", icon=":material/add:"):
            secret, token = store.create(user, label)
            ui.audit("api_token_created", {"token_id": token.id})
            st.session_state[NEW_TOKEN] = secret
            st.rerun()
    tokens = store.list(user)
    if not tokens:
        st.caption("You have no API tokens.")
        return
    st.dataframe([{"Name": t.label or "—", "Token": t.hint, "Created": _when(t.created),
                   "Last used": _when(t.last_used), "Status": "active" if t.active else f"revoked {_when(t.revoked)}"}
                  for t in tokens], hide_index=True, width="stretch")
    active = {f"{t.label or 'unnamed'} ({t.hint})": t.id for t in tokens if t.active}
    if not active:
        return
    chosen = st.selectbox("Token to revoke", list(active), index=None, placeholder="Choose a token…",
                          key="api_token_revoke_choice")
    if st.button("Revoke", icon=":material/block:", disabled=chosen is None, key="api_token_revoke"):
        if store.revoke(user, active[chosen]):
            ui.audit("api_token_revoked", {"token_id": active[chosen]})
        st.rerun()
