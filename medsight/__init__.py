"""MedSight Workstation: local chest X-ray analysis library.

The package reads in pipeline order: ingest → models → explain → nlp → fusion → pipeline →
retrieval → llm → verify → voice → chat → report → storage. Every part imports without Streamlit.
"""

__version__ = "0.1.0"

# torch reads PYTORCH_ENABLE_MPS_FALLBACK and OpenMP its wait policy once, when torch loads: set them
# before anything imports torch.
from medsight.device import configure_cpu_threads as _configure_cpu_threads  # noqa: E402
from medsight.device import enable_mps_fallback as _enable_mps_fallback  # noqa: E402

MPS_FALLBACK = _enable_mps_fallback()
CPU_THREADS = _configure_cpu_threads()
