"""Peak memory, read from the cold-start process (no measurement of its own)."""

from __future__ import annotations

from benchmarks.context import Context

NAME = "memory"
NEEDS = ("cold_start",)
#: Derived from the cold-start record, so it is refreshed whenever cold start is measured and not timed.
TIMED = False


def run(context: Context) -> dict:
    """Peak RSS with the analysis models and with every local model, and each model's load record."""
    cold = context.results["cold_start"]
    if "error" in cold:
        return {"error": "cold-start process failed; see cold_start"}
    return {
        "peak_rss_mb_analysis": cold.get("peak_rss_mb_analysis"), "peak_rss_mb_all": cold.get("peak_rss_mb_all"),
        "rss_mb_all": cold.get("rss_mb_all"), "models": {**cold.get("models", {}), **cold.get("other_models", {})},
        "measured_in": "the cold-start process: analysis models + first analysis, then every other locally "
                       "available model slot",
    }
