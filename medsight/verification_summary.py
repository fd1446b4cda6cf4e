"""What Report Verification gathers and saves, without Streamlit: similar cases with notes, the saved record."""

from __future__ import annotations

from typing import Any, Callable


def similar_cases(base: Any, study: Any, gate: Callable[[], dict], text: str, k: int, settings: Any,
                  notes: list[str]) -> list[dict]:
    """Similar past cases for the report (and the image when the embedder can speak about it); `notes` says why
    fewer were used and which embeddings answered. `gate()` gives the input gate's decision for the study."""
    from medsight.retrieval import CaseBaseError

    try:
        counts = base.count()
    except CaseBaseError as exc:
        notes.append(str(exc))
        return []
    if not counts.get("case_reports") and not counts.get("case_images"):
        from medsight import reference

        state = reference.status(settings)
        if state.running:
            notes.append("The similar-case base is still being prepared in the background "
                         f"({state.message}); this verification used no similar cases.")
            return []
        notes.append("The case base is empty, so no similar cases were used. Build it on the System page "
                     "(Reference data) or with `python -m medsight.retrieval.build`.")
        return []
    image = getattr(study, "image", None) if counts.get("case_images") else None
    if image is not None:
        verdict = base.image_verdict(study, gate())
        if not verdict.inside:
            notes.append(f"Similar cases by image withheld: {verdict.reason}. Similar cases by report text only.")
            image = None
    try:
        cases = base.query(image=image, text=text, k=k)
    except CaseBaseError as exc:
        notes.append(str(exc))
        cases = base.query(text=text, k=k)
    tiers = []
    if base.text_provenance is not None:
        tiers.append(f"text: {base.text_provenance.tier}")
    if image is not None and base.image_provenance is not None:
        tiers.append(f"image: {base.image_provenance.tier} ({base.image_embedder_description})")
    if tiers:
        notes.append("Similar-case embeddings — " + "; ".join(tiers))
    return [c.to_dict() for c in cases]


def saved_record(study_id: str | None, text: str, result: dict, accepted: list) -> tuple[str, dict]:
    """(History title, payload) of a verification: its fields at top level (what the PDF reads), "report_text"
    the report as accepted, "verified_report_text" the report that was checked."""
    payload = {**result, "report_text": text, "verified_report_text": result["report_text"],
               "accepted_edits": accepted, "study_id": study_id}
    summary = result["summary"]
    title = (f"Verification: {summary['checks_failed']} failed check(s), {summary['discrepancies']} "
             f"discrepanc{'y' if summary['discrepancies'] == 1 else 'ies'}")
    return title, payload


def evidence_line(ev: dict) -> str:
    """The evidence behind a discrepancy: probability, map, similar cases, anomaly score ("" when none)."""
    facts = []
    if ev.get("probability") is not None:
        facts.append(f"probability {ev['probability']:.2f} (threshold {ev['threshold']:.2f}, "
                     f"{ev.get('model_tier') or 'unknown'} tier)")
    if ev.get("map_ref"):
        facts.append(f"map `{ev['map_ref']}`" + (f", peak on patient {ev['map_side']}" if ev.get("map_side") else ""))
    if ev.get("similar_support"):
        facts.append(f"similar cases: {ev['similar_support']}"
                     + (f" ({', '.join(ev['similar_case_ids'][:5])})" if ev.get("similar_case_ids") else ""))
    if ev.get("anomaly_score") is not None:
        facts.append(f"anomaly score {ev['anomaly_score']:.3f} vs {ev['anomaly_threshold']:.3f}")
    if not facts:
        return ""
    return "Evidence: " + "; ".join(facts) + f" — source: {ev.get('source', 'models')}"


def case_line(case: dict) -> str:
    """Scores and source of a similar case."""
    sims = [f"combined score {case['score']:.4f}" if case.get("image_similarity") is not None
            and case.get("text_similarity") is not None else None,
            f"image similarity {case['image_similarity']:.3f}" if case.get("image_similarity") is not None else None,
            f"text similarity {case['text_similarity']:.3f}" if case.get("text_similarity") is not None else None]
    return " · ".join(s for s in sims if s) + f" · source {case.get('source', '')}"


def case_labels(case: dict) -> str:
    return "Labels: " + (", ".join(l.replace("_", " ") for l in case["labels"]) if case["labels"]
                         else ("normal" if case.get("normal") else "none recorded"))
