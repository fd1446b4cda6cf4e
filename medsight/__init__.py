"""MedSight Workstation: local chest X-ray analysis library.

The package reads in pipeline order: ingest → models → explain → nlp → fusion → pipeline →
retrieval → llm → verify → voice → chat → report → storage. Every part imports without Streamlit.
"""

__version__ = "0.1.0"
