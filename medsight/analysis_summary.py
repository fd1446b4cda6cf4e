"""What the Analyze page shows of an analysis, as plain rows and text (no Streamlit)."""

from __future__ import annotations

import textwrap
from typing import Any


def record_title(filename: str | None, data: dict, status: str) -> str:
    """History title of an analysis: the file, then its first two headline findings (at most 200 characters)."""
    headline = "; ".join(data["summary"].get("headline", [])[:2]) or status
    return textwrap.shorten(f"{filename or 'unnamed study'} — {headline}", 200, placeholder=" …")


def anomaly_caption(anomaly: dict) -> str:
    """Score against threshold, in or outside the normal range, with the margin."""
    verdict = "outside the normal range" if anomaly.get("is_anomalous") else "within the normal range"
    return (f"Score {anomaly['fused_score']:.3f} vs threshold {anomaly['threshold']:.3f}: {verdict} "
            f"(margin {anomaly.get('margin', anomaly['fused_score'] - anomaly['threshold']):+.3f}).")


def withheld_output_caption(slot: str, output: dict) -> str:
    """A withheld model's numbers, each marked as not meaningful for this image ("" when there are none)."""
    if not output:
        return ""
    if slot == "anomaly.detector":
        return (f"Anomaly score {float(output.get('fused_score', 0)):.3f} (threshold "
                f"{float(output.get('threshold', 0)):.3f}) — not meaningful for this image.")
    probs = output.get("probabilities") or {}
    return ("Pathology probabilities — not meaningful for this image: "
            + ", ".join(f"{k} {float(v):.2f}" for k, v in probs.items()))


def entity_rows(nlp: dict) -> list[dict]:
    """The clinical-text entities as table rows."""
    return [{"Text": e.get("text"), "Type": e.get("label"), "Negated": bool(e.get("negated")),
             "Uncertain": bool(e.get("uncertain")), "Side": e.get("laterality") or ""}
            for e in nlp.get("entities") or []]


def condition_lines(nlp: dict) -> list[str]:
    """One markdown line per condition the text suggests, with up to three quoted phrases."""
    lines = []
    for c in nlp.get("conditions") or []:
        evidence = "; ".join(f"“{p}”" for p in (c.get("evidence") or [])[:3])
        lines.append(f"- **{c.get('name')}** — {c.get('status')} (score {float(c.get('score', 0)):.2f}) {evidence}")
    return lines


def risk_of(fusion: dict) -> tuple[str | None, list[str], str]:
    """(risk level, reasons, rule) of the fusion result."""
    risk = fusion.get("risk") or {}
    if not isinstance(risk, dict):
        return str(risk), [], ""
    reasons = [r if isinstance(r, str) else r.get("text", r) for r in risk.get("reasons") or []]
    return risk.get("level"), reasons, risk.get("rule") or ""


def item_text(item: Any) -> str:
    """The message of an agreement or contradiction (a string or a dict)."""
    return item if isinstance(item, str) else item.get("message") or item.get("text") or str(item)


def differential_lines(reasoning: dict) -> list[str]:
    """The ranked differential as numbered markdown lines."""
    lines = []
    for i, item in enumerate(reasoning.get("differential") or [], start=1):
        why = "; ".join(item.get("supporting") or [])
        hedge = " (uncertain)" if item.get("uncertain") else ""
        lines.append(f"{i}. **{item.get('condition')}**{hedge} — ranking weight {float(item.get('score', 0)):.2f}"
                     + (f"; supported by {why}" if why else ""))
    return lines


def stage_rows(analysis: dict) -> list[dict]:
    """Processing stages with status, time, tier, runtime (image models) and note."""
    return [{"Stage": s["name"], "Status": s["status"], "Time (s)": round(s["seconds"], 3),
             "Tier": s.get("tier", ""), "Runtime": s.get("runtime", ""), "Note": s.get("message", "")}
            for s in analysis.get("stages", [])]


def window_options(study: Any) -> tuple[list[tuple[float, float]], list[str], tuple[float, float]]:
    """(stored windows, their labels plus "Custom", value range) of a study that keeps its modality values."""
    import numpy as np

    windows = list(getattr(study, "windows", None) or [])
    low, high = (float(v) for v in (study.value_range or (float(np.min(study.raw)), float(np.max(study.raw)))))
    options = [f"Window {i + 1}: centre {c:g}, width {w:g}" for i, (c, w) in enumerate(windows)] + ["Custom"]
    return windows, options, (low, high)
