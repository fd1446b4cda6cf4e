"""Streamlit custom components of the workstation (frontend code built into each component's `build/`)."""
