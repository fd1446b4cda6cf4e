"""One-click PDF of an analysis (fpdf2), with Unicode text and the images the reader chose.

No patient identifiers are printed unless the user opted in; the study is named by its pixel hash.
"""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

from fpdf import FPDF
from fpdf.enums import XPos, YPos

from medsight.deid.metadata import burned_in_warning

DISCLAIMER = (
    "Decision support, not a diagnosis. Findings must be confirmed by a qualified radiologist. "
    "Models marked DEMO were trained on synthetic phantoms and are for demonstration only."
)

ACCENT = (0, 128, 140)
GREY = (90, 90, 90)
RISK_COLOURS = {"High": (190, 30, 45), "Moderate": (215, 140, 0), "Low": (30, 140, 70)}


def _font_dir() -> Path:
    """DejaVu TTFs: a Unicode font that ships with matplotlib on every platform."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def _as_text(item: Any) -> str:
    """One readable line from a string or a result dict."""
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        for key in ("message", "text", "detail", "description", "reason", "summary"):
            if item.get(key):
                return str(item[key])
        return ", ".join(f"{k}: {v}" for k, v in item.items() if not isinstance(v, (dict, list)))
    return str(item)


class _ReportPDF(FPDF):
    def __init__(self, footer_text: str):
        super().__init__(format="A4", unit="mm")
        self.footer_text = footer_text
        fonts = _font_dir()
        self.add_font("DejaVu", "", str(fonts / "DejaVuSans.ttf"))
        self.add_font("DejaVu", "B", str(fonts / "DejaVuSans-Bold.ttf"))
        self.add_font("DejaVu", "I", str(fonts / "DejaVuSans-Oblique.ttf"))
        self.set_auto_page_break(auto=True, margin=18)
        self.set_margins(14, 14, 14)

    def footer(self) -> None:
        self.set_y(-14)
        self.set_font("DejaVu", "I", 7)
        self.set_text_color(*GREY)
        self.multi_cell(0, 3.2, f"{self.footer_text}   Page {self.page_no()}/{{nb}}", align="C")
        self.set_text_color(0, 0, 0)

    # Small layout helpers -------------------------------------------------------------------------
    def heading(self, text: str) -> None:
        if self.get_y() > self.h - 40:
            self.add_page()
        self.ln(2)
        self.set_font("DejaVu", "B", 12)
        self.set_text_color(*ACCENT)
        self.cell(0, 7, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_draw_color(*ACCENT)
        self.line(self.l_margin, self.get_y(), self.w - self.r_margin, self.get_y())
        self.ln(1.5)
        self.set_text_color(0, 0, 0)

    def para(self, text: str, size: float = 9.5, style: str = "") -> None:
        self.set_font("DejaVu", style, size)
        self.multi_cell(0, 4.8, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def bullets(self, items: Iterable[Any], size: float = 9.5) -> None:
        self.set_font("DejaVu", "", size)
        for item in items:
            self.multi_cell(0, 4.8, f"•  {_as_text(item)}", new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def table(self, header: list[str], rows: list[list[Any]], widths: list[float] | None = None) -> None:
        from fpdf.fonts import FontFace

        self.set_font("DejaVu", "", 8.5)
        with super().table(
            col_widths=widths, text_align="LEFT", line_height=5,
            headings_style=FontFace(emphasis="BOLD", color=ACCENT),
        ) as table:
            head = table.row()
            for h in header:
                head.cell(h)
            for row in rows:
                r = table.row()
                for value in row:
                    r.cell(f"{value:.3f}" if isinstance(value, float) else str(value))


def _gate_and_withheld(pdf: "_ReportPDF", analysis: dict) -> None:
    """What the input gate decided and which model outputs were withheld, and why (never their numbers)."""
    gate = analysis.get("gate") or {}
    withheld = analysis.get("withheld") or {}
    if not gate and not withheld:
        return
    pdf.heading("Input gate and withheld outputs")
    decision = gate.get("decision")
    if decision == "accepted":
        pdf.para("Input gate: accepted as a frontal chest radiograph.", size=9)
    elif decision == "refused":
        pdf.para(f"Input gate: REFUSED — {gate.get('reason', '')} No image model was run.", style="B", size=9)
    elif decision == "overridden":
        pdf.para(f"Input gate: refused, then OVERRIDDEN by {gate.get('overridden_by') or 'the radiologist'} "
                 f"(\"analyse anyway\"). The gate's reason: {gate.get('reason', '')}", style="B", size=9)
    for entry in withheld.values():
        pdf.para(f"Withheld — {entry.get('what')} ({entry.get('slot')}, {str(entry.get('tier', '')).upper()} "
                 f"weights): {entry.get('reason')}. {entry.get('how_to_get_real', '')}.", size=9)


def build_pdf(
    analysis: dict,
    *,
    images: list[tuple[str, bytes]] | None = None,
    user: str = "",
    report_text: str = "",
    verification: dict | None = None,
    include_identifiers: bool = False,
) -> bytes:
    """Render an analysis to PDF.

    Args:
        analysis: `AnalysisResult.to_dict()`.
        images: (caption, PNG bytes) pairs, e.g. the original and the chosen heatmap panels.
        user: the signed-in user's name, printed in the header.
        report_text: the radiologist's report (accepted version), if any.
        verification: `VerificationResult.to_dict()`, if the report was verified.
        include_identifiers: print the file name and any kept patient identifiers (off by default).

    Returns:
        The PDF file as bytes.
    """
    pdf = _new_document()
    _study_header(pdf, analysis, user, include_identifiers)
    _disclaimer_banner(pdf, analysis)
    _summary(pdf, analysis)
    _gate_and_withheld(pdf, analysis)
    _images(pdf, images)
    _anomaly_section(pdf, analysis.get("anomaly"))
    _pathology_table(pdf, analysis.get("pathology"))
    _comparison_section(pdf, analysis.get("comparison"))
    _measurements_section(pdf, analysis.get("measurements"))
    _clinical_text(pdf, analysis)
    _fusion_and_risk(pdf, analysis.get("fusion"))
    _clinical_reasoning(pdf, analysis.get("reasoning"))
    _report_section(pdf, report_text)
    _verification_section(pdf, verification)
    _models_table(pdf, analysis.get("models") or {})
    _stages_table(pdf, analysis.get("stages") or [])
    return bytes(pdf.output())


def _new_document() -> "_ReportPDF":
    """An A4 document with its first page open and the disclaimer in every footer."""
    pdf = _ReportPDF(DISCLAIMER)
    pdf.alias_nb_pages()
    pdf.add_page()
    pdf.set_title("MedSight chest X-ray analysis")
    pdf.set_creator("MedSight Workstation")
    return pdf


def _study_header(pdf: "_ReportPDF", analysis: dict, user: str, include_identifiers: bool) -> None:
    """Title, study and analysis IDs, date, user and acquisition; patient identifiers only when opted in."""
    study = analysis.get("study") or {}
    pdf.set_font("DejaVu", "B", 16)
    pdf.set_text_color(*ACCENT)
    pdf.cell(0, 9, "MedSight Workstation — chest X-ray analysis", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_text_color(0, 0, 0)
    created = analysis.get("created") or datetime.now().isoformat(timespec="seconds")
    lines = [
        f"Study ID: {study.get('study_id', '—')}    Analysis ID: {analysis.get('analysis_id', '—')}",
        f"Date: {created}    User: {user or '—'}    Status: {analysis.get('status', '—')}",
        f"Modality: {study.get('modality') or '—'}    View: {study.get('view_position') or '—'}    "
        f"Source: {study.get('source_format') or '—'}",
    ]
    if include_identifiers:
        lines.append(f"File: {study.get('filename') or '—'}")
        identifiers = (study.get("metadata") or {}).get("identifiers")
        if identifiers:
            lines.append("Identifiers: " + ", ".join(f"{k}: {v}" for k, v in identifiers.items()))
    if study.get("synthetic"):
        lines.append("This study is a SYNTHETIC PHANTOM generated for demonstration.")
    for line in lines:
        pdf.para(line, size=9)
    warning = burned_in_warning(study.get("metadata"))
    if warning:
        pdf.para(f"WARNING: {warning}", size=9, style="B")


def _disclaimer_banner(pdf: "_ReportPDF", analysis: dict) -> None:
    """The decision-support disclaimer on a highlighted band, naming any demo-tier models."""
    pdf.ln(1)
    pdf.set_fill_color(255, 243, 205)
    pdf.set_font("DejaVu", "B", 9)
    pdf.multi_cell(0, 5, DISCLAIMER, fill=True, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    demo = (analysis.get("summary") or {}).get("demo_models") or []
    if demo:
        pdf.set_font("DejaVu", "", 8.5)
        pdf.multi_cell(0, 4.5, "Demo-tier models in this analysis: " + ", ".join(demo), fill=True,
                       new_x=XPos.LMARGIN, new_y=YPos.NEXT)


def _summary(pdf: "_ReportPDF", analysis: dict) -> None:
    """The headline facts of the analysis."""
    summary = analysis.get("summary") or {}
    pdf.heading("Summary")
    pdf.bullets(summary.get("headline") or ["No result was produced."])


def _images(pdf: "_ReportPDF", images: list[tuple[str, bytes]] | None) -> None:
    """The images the reader chose, each with its caption; three-panel figures span the page."""
    if not images:
        return
    pdf.heading("Images")
    for caption, png in images:
        if pdf.get_y() > pdf.h - 80:
            pdf.add_page()
        width = pdf.w - pdf.l_margin - pdf.r_margin
        pdf.image(io.BytesIO(png), w=width if _is_wide(png) else width / 2.5)
        pdf.set_font("DejaVu", "I", 8)
        pdf.multi_cell(0, 4, caption, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.ln(1)


def _anomaly_section(pdf: "_ReportPDF", anomaly: dict | None) -> None:
    """The anomaly detector's fused score against its threshold, peak deviation and score components."""
    if not anomaly:
        return
    pdf.heading("Unsupervised anomaly detector")
    pdf.para(
        f"Fused score {anomaly.get('fused_score', 0):.3f} against threshold {anomaly.get('threshold', 0):.3f} "
        f"({'ANOMALOUS' if anomaly.get('is_anomalous') else 'within normal range'}); tier: {anomaly.get('tier', '—')}."
    )
    if isinstance(anomaly.get("peak_deviation"), (int, float)) and anomaly.get("deviation_threshold") is not None:
        pdf.para(
            f"Peak deviation from normal {anomaly['peak_deviation']:.1f} "
            f"({'ABOVE' if anomaly.get('deviation_unusual') else 'within'} the normal range: 95 % of normal "
            f"images stay below {anomaly['deviation_threshold']:.1f}); per-position model of normal features."
        )
    components = anomaly.get("components") or {}
    rows = [[k, v] for k, v in components.items() if isinstance(v, (int, float))]
    rows += [[k, anomaly[k]] for k in ("recon_error", "kl_divergence", "vit_score") if isinstance(anomaly.get(k), (int, float))]
    if rows:
        pdf.table(["Component", "Value"], rows, widths=[60, 40])


def _pathology_table(pdf: "_ReportPDF", pathology: dict | None) -> None:
    """Every label's probability against its operating threshold, most likely first."""
    if not pathology:
        return
    pdf.heading("Pathology classifier")
    probs = pathology.get("probabilities") or {}
    thresholds = pathology.get("thresholds") or {}
    positives = set(pathology.get("positives") or [])
    rows = [
        [label, float(p), float(thresholds.get(label, float("nan"))), "POSITIVE" if label in positives else ""]
        for label, p in sorted(probs.items(), key=lambda kv: -kv[1])
    ]
    pdf.para(f"Tier: {pathology.get('tier', '—')}", size=8.5)
    pdf.table(["Label", "Probability", "Threshold", ""], rows, widths=[60, 35, 35, 30])


def _comparison_section(pdf: "_ReportPDF", comparison: dict | None) -> None:
    """"Compared with study of DATE": how the prior was chosen, and the interval change of each score."""
    if not comparison:
        return
    pdf.heading(comparison.get("title") or "Comparison with prior study")
    pdf.para(comparison.get("summary") or "", size=9)
    pdf.bullets(comparison.get("lines") or ["Neither analysis shows a score to compare."], size=9)
    if comparison.get("tolerance_note"):
        pdf.para(comparison["tolerance_note"], size=8, style="I")


def _measurements_section(pdf: "_ReportPDF", measurements: list[dict] | None) -> None:
    """The radiologist's measurements from the viewer, with the calibration each one rests on."""
    if not measurements:
        return
    pdf.heading("Measurements")
    pdf.bullets([f"{m.get('kind', 'length').capitalize()}: {m.get('label', '')}"
                 + (f" ({m['calibration']})" if m.get("calibration") and m.get("kind") != "angle" else "")
                 for m in measurements], size=9)


def _clinical_text(pdf: "_ReportPDF", analysis: dict) -> None:
    """The entered symptoms, the entities found in them (negated, uncertain, side) and suggested conditions."""
    if not (analysis.get("symptoms") or analysis.get("nlp")):
        return
    pdf.heading("Clinical text")
    if analysis.get("symptoms"):
        pdf.para(analysis["symptoms"], style="I")
    nlp = analysis.get("nlp") or {}
    entities = nlp.get("entities") or []
    if entities:
        pdf.bullets(
            f"{e.get('text')} ({e.get('label', '').lower()}"
            + (", negated" if e.get("negated") else "")
            + (", uncertain" if e.get("uncertain") else "")
            + (f", {e['laterality']}" if e.get("laterality") else "")
            + ")"
            for e in entities
        )
    conditions = [c for c in nlp.get("conditions") or [] if c.get("status") in ("present", "uncertain")]
    if conditions:
        pdf.para("Conditions suggested by the text: " + ", ".join(
            f"{c.get('name')} ({c.get('status')})" for c in conditions), size=9)


def _fusion_and_risk(pdf: "_ReportPDF", fusion: dict | None) -> None:
    """The risk level in its colour with its reasons, image–text agreements and contradictions, low confidence."""
    if not fusion:
        return
    pdf.heading("Image–text agreement and risk")
    risk = fusion.get("risk") or {}
    level = risk.get("level") if isinstance(risk, dict) else str(risk)
    if level:
        pdf.set_font("DejaVu", "B", 11)
        pdf.set_text_color(*RISK_COLOURS.get(level, (0, 0, 0)))
        pdf.cell(0, 6, f"Risk: {level}", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.set_text_color(0, 0, 0)
        pdf.bullets((risk.get("reasons") if isinstance(risk, dict) else None) or [])
    for key, title in (("agreements", "Agreements"), ("contradictions", "Contradictions")):
        if fusion.get(key):
            pdf.para(title, style="B")
            pdf.bullets(fusion[key])
    confidence = fusion.get("confidence")
    if isinstance(confidence, dict) and confidence.get("low_confidence"):
        pdf.para("Low confidence: " + _as_text(confidence.get("reason") or "see the uncertainty figures"), style="I")


def _clinical_reasoning(pdf: "_ReportPDF", reasoning: dict | None) -> None:
    """The reasoning text and the ranked differential with its supporting findings."""
    if not reasoning:
        return
    pdf.heading(f"Clinical reasoning ({reasoning.get('backend', reasoning.get('tier', '—'))})")
    if reasoning.get("reasoning"):
        pdf.para(str(reasoning["reasoning"]))
    if reasoning.get("differential"):
        pdf.para("Differential (ranked)", style="B")
        pdf.bullets(
            f"{d.get('condition')} (weight {float(d.get('score', 0)):.2f})"
            + (f": {'; '.join(d['supporting'])}" if d.get("supporting") else "")
            for d in reasoning["differential"]
        )


def _report_section(pdf: "_ReportPDF", report_text: str) -> None:
    """The radiologist's accepted report."""
    if report_text:
        pdf.heading("Report")
        pdf.para(report_text)


def _verification_section(pdf: "_ReportPDF", verification: dict | None) -> None:
    """The report verification checklist and the discrepancies it found, by severity."""
    if not verification:
        return
    pdf.heading(f"Report verification ({verification.get('backend', verification.get('tier', '—'))})")
    checklist = verification.get("checklist") or []
    if checklist:
        pdf.table(
            ["Check", "Result", "Why"],
            [[c.get("title", ""), c.get("status", ""), c.get("why", "")] for c in checklist],
            widths=[55, 20, 105],
        )
    if verification.get("discrepancies"):
        pdf.para("Discrepancies", style="B")
        pdf.bullets(f"[{d.get('severity', '')}] {d.get('message', '')}" if isinstance(d, dict) else str(d)
                    for d in verification["discrepancies"])


def _models_table(pdf: "_ReportPDF", models: dict) -> None:
    """Each model slot's tier, source and version or weights hash."""
    if not models:
        return
    pdf.heading("Models used")
    pdf.table(
        ["Slot", "Tier", "Source", "Version / SHA-256"],
        [[slot, p.get("tier", ""), p.get("source_label", ""),
          (p.get("version") or "") + (f" {p['sha256'][:12]}" if p.get("sha256") else "")]
         for slot, p in models.items()],
        widths=[45, 18, 70, 47],
    )


def _stages_table(pdf: "_ReportPDF", stages: list[dict]) -> None:
    """Each processing stage's status, time and note."""
    if not stages:
        return
    pdf.heading("Processing stages")
    pdf.table(
        ["Stage", "Status", "Time (s)", "Note"],
        [[s.get("name"), s.get("status"), float(s.get("seconds", 0.0)), s.get("message", "")[:90]] for s in stages],
        widths=[55, 20, 20, 85],
    )


def _is_wide(png: bytes) -> bool:
    """Three-panel figures span the page; single images take half of it."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as img:
        return img.width > 1.5 * img.height
