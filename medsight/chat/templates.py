"""The template engine: deterministic chat answers per intent, from the study results and the retrieved passages.

It quotes only sentences of the passages that pass the dosing, diagnosis and injection screens, and marks each
quote with its passage number [n]. It is the chat's last tier and always answers.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from medsight.chat import intents as I
from medsight.chat.corpus import RetrievedPassage
from medsight.chat.safety import definitive_statements, is_dosing, screen_injection

_SENT_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")
_WORD = re.compile(r"[a-z][a-z-]{3,}")
_STOP = {"what", "does", "this", "that", "with", "from", "have", "about", "there", "their", "which", "when", "where",
         "would", "could", "should", "explain", "mean", "means", "tell", "more", "study", "patient", "image", "your",
         "they", "them", "were", "been", "being", "into", "than", "then", "also", "some", "such"}


_SECTION_LABEL = re.compile(r"^(?:[A-Z][A-Z &/-]{3,}:?\s+)+(?=[A-Z])")


def sentences(text: str) -> list[str]:
    """Sentences of a passage, without structured-abstract labels such as "BACKGROUND"."""
    return [_SECTION_LABEL.sub("", s.strip()) for s in _SENT_SPLIT.split(text or "") if s.strip()]


def terms(text: str) -> set[str]:
    """The content words of `text` (four letters or more, common question words left out)."""
    return {w for w in _WORD.findall((text or "").lower()) if w not in _STOP}


def safe_sentence(sentence: str) -> bool:
    """A sentence the template engine may quote: no dosing, no diagnosis claims, no instructions."""
    return not (is_dosing(sentence) or definitive_statements(sentence) or screen_injection(sentence).flagged)


def best_sentences(text: str, query: str, n: int = 1, prefer: Sequence[str] = (), max_chars: int = 320,
                   exclude: set[str] | frozenset = frozenset()) -> list[str]:
    """The `n` quotable sentences of `text` that share the most words with `query` (ties: earlier first).

    Args:
        prefer: words that add weight (e.g. "radiograph" for imaging appearance).
    """
    wanted = terms(query) | {p.lower() for p in prefer}
    scored = []
    for index, sentence in enumerate(sentences(text)):
        if sentence in exclude or len(sentence) > max_chars or len(sentence) < 25 or not safe_sentence(sentence):
            continue
        words = terms(sentence)
        score = len(words & wanted) + 0.5 * sum(1 for p in prefer if p.lower() in sentence.lower())
        scored.append((-score, index, sentence))
    scored.sort()
    chosen = sorted(scored[:n], key=lambda item: item[1])
    return [s for _, _, s in chosen]


def _fmt(p: Any) -> str:
    try:
        return f"{float(p):.2f}"
    except (TypeError, ValueError):
        return str(p)


def finding_name(finding: str) -> str:
    """A model label as words ("pleural_thickening" → "pleural thickening")."""
    return finding.replace("_", " ")


class TemplateEngine:
    """Deterministic answers per intent from the study results and the retrieved passages."""

    def __init__(self, question: str, match: I.IntentMatch, topic: I.Topic | None, context: dict,
                 retrieved: list[RetrievedPassage], analysis: dict | None, history: Sequence[dict]):
        self.question, self.match, self.topic, self.context = question, match, topic, context
        self.retrieved, self.analysis, self.history = retrieved, analysis or {}, history
        self._used: set[str] = set()  # sentences already quoted, so two citations of one note differ

    # passages
    def _find(self, key: str) -> RetrievedPassage | None:
        return next((r for r in self.retrieved if r.passage.note_key == key), None)

    def _notes(self) -> list[RetrievedPassage]:
        return [r for r in self.retrieved if r.passage.source == "note"]

    def _literature(self) -> list[RetrievedPassage]:
        return [r for r in self.retrieved if r.passage.source != "note"]

    def _cite(self, r: RetrievedPassage, n: int = 1, prefer: Sequence[str] = (), query: str | None = None) -> str:
        picked = best_sentences(r.passage.text, query or self.question, n=n, prefer=prefer, exclude=self._used)
        self._used.update(picked)
        return " ".join(f"{s.rstrip()} [{r.rank}]" if s.rstrip()[-1:] not in ".!?" else f"{s.rstrip()[:-1]} [{r.rank}]."
                        for s in picked)

    def _literature_lines(self) -> list[str]:
        lines = []
        for r in self._literature():
            quote = best_sentences(r.passage.text, f"{self.question} {self.topic.text if self.topic else ''}", n=1)
            year = f", {r.passage.year}" if r.passage.year else ""
            if quote:
                lines.append(f"- *{r.passage.title}*{year}: \u201c{quote[0]}\u201d [{r.rank}]")
            else:
                lines.append(f"- *{r.passage.title}*{year} [{r.rank}]")
        return lines

    # study facts
    def _flagged(self) -> dict:
        return (self.context.get("pathology") or {}).get("flagged") or {}

    def _near(self) -> dict:
        return (self.context.get("pathology") or {}).get("near_threshold") or {}

    def _finding_status(self, finding: str) -> str | None:
        from medsight.llm.rules import model_findings

        ev = model_findings(self.analysis).get(finding)
        if ev is None:
            return None
        side = f", {ev['laterality']}" if ev.get("laterality") and ev["laterality"] != "n/a" else ""
        if ev["positive"]:
            return (f"In this study the pathology classifier flags {finding_name(finding)} (probability {_fmt(ev['probability'])},"
                    f" operating threshold {_fmt(ev['threshold'])}{side}).")
        if ev["near"]:
            return (f"In this study {finding_name(finding)} is just below its operating threshold (probability "
                    f"{_fmt(ev['probability'])} vs {_fmt(ev['threshold'])}), so the model does not flag it, but the "
                    "margin is small.")
        return (f"In this study the pathology classifier does not flag {finding_name(finding)} (probability "
                f"{_fmt(ev['probability'])}, threshold {_fmt(ev['threshold'])}).")

    def _no_sources(self) -> str:
        return ("The knowledge corpus returned no passage for this question, so I cannot cite a source; build the "
                "corpus with `python -m medsight.chat.corpus` or from this page.")

    # intents
    def compose(self) -> str:
        handler = getattr(self, f"_{self.match.intent}", self._explain_finding)
        return handler().strip()

    def _greeting(self) -> str:
        return ("Hello. I can explain this study's results, what the scores mean, a differential to consider, "
                "questions for the referring clinician, how the models work and where they are uncertain, and "
                "define chest radiograph terms — with citations from the local knowledge corpus.")

    def _help(self) -> str:
        in_context = ("An analysis of the current study is in context." if self.context else
                      "No analysis is in context yet: run Analyze on a study for study-specific answers.")
        # Only a finding this study's models flagged is offered as an example question.
        flagged = list(self._flagged())
        explain = f"- *Explain the {flagged[0].lower()} finding.*\n" if flagged else ""
        return (f"{in_context} You can ask, for example:\n"
                f"{explain}- *What does the anomaly score mean?*\n"
                "- *What is the differential?*\n- *What questions should I ask the clinician?*\n"
                "- *How does the anomaly detector work?*\n- *How reliable is this result?*\n"
                "- *What is the silhouette sign?*\n"
                "I do not give medication doses or prescriptions, and I do not make diagnoses.")

    def _out_of_scope(self) -> str:
        return ("I can't answer that: this chat gives decision support about chest radiographs, not diagnoses, "
                "prognoses or legal and billing advice. I can list a differential to consider, explain a finding "
                "or suggest questions for the referring clinician.")

    def _score_meaning(self) -> str:
        parts: list[str] = []
        anomaly = self.context.get("anomaly")
        if anomaly:
            above = "above" if anomaly.get("is_anomalous") else "below"
            verdict = "outside the normal range" if anomaly.get("is_anomalous") else "within the normal range"
            parts.append(f"This study's anomaly score is {float(anomaly['fused_score']):.3f}, {above} its threshold "
                         f"{float(anomaly['threshold']):.3f}, so the detector calls it {verdict} "
                         f"(model tier: {anomaly.get('tier') or 'unknown'}).")
            if anomaly.get("peak_deviation") is not None and anomaly.get("deviation_threshold") is not None:
                where = "above" if anomaly.get("deviation_unusual") else "within"
                parts.append(f"Its peak deviation from normal is {float(anomaly['peak_deviation']):.1f}, {where} the "
                             f"normal range (95 % of normal images stay below "
                             f"{float(anomaly['deviation_threshold']):.1f}); the deviation map on the Heatmap page "
                             "shows where.")
        elif not self.context:
            parts.append("No analysis is in context, so there is no score to interpret yet; here is what the scores "
                         "mean in general.")
        note = self._find("anomaly_score")
        if note:
            parts.append(self._cite(note, 2, prefer=("threshold", "unusual", "measures")))
        flagged, near = self._flagged(), self._near()
        pathology = self._find("pathology_classifier")
        if flagged or near or pathology:
            if flagged:
                parts.append("Flagged labels: " + ", ".join(f"{finding_name(k)} {_fmt(v['probability'])} (threshold "
                                                            f"{_fmt(v['threshold'])})" for k, v in flagged.items()) + ".")
            if near:
                parts.append("Just below threshold: " + ", ".join(f"{finding_name(k)} {_fmt(v['probability'])}"
                                                                  for k, v in near.items()) + ".")
            if pathology:
                parts.append(self._cite(pathology, 1, prefer=("0.5", "rescaled", "operating")))
        threshold = self._find("operating_threshold")
        if threshold:
            parts.append(self._cite(threshold, 1, prefer=("below", "negative")))
        risk = self.context.get("risk")
        if risk:
            reasons = "; ".join(str(r).rstrip(". ") for r in risk.get("reasons") or [])
            parts.append(f"The fusion stage rates the risk as {risk['level']}" + (f" ({reasons})." if reasons else "."))
        if not self.retrieved:
            parts.append(self._no_sources())
        return " ".join(p for p in parts if p)

    def _explain_finding(self) -> str:
        parts: list[str] = []
        topic = self.topic
        if topic is None:
            if not self.context:
                return ("Which finding would you like explained? No analysis is in context; name a finding (for "
                        "example *pleural effusion*) or run Analyze first.")
            if not self._flagged():
                parts.append("The image models flag no finding in this study.")
                return " ".join(parts + ["A negative result does not exclude disease; ask about the limits of the "
                                         "models for details."])
        if topic is not None and topic.findings and self.analysis:
            statuses = [s for s in (self._finding_status(f) for f in topic.findings) if s]
            if statuses:
                parts += statuses
            elif self.context.get("pathology") is not None:
                parts.append(f"The image models in this study do not report {topic.text} as a label.")
        note = self._find(topic.note_key) if topic is not None and topic.note_key else (self._notes() or [None])[0]
        if note:
            parts.append(self._cite(note, 2, prefer=("is", "means"), query=f"{note.passage.title} is"))
            parts.append(self._cite(note, 1, prefer=("radiograph", "appears", "shows", "signs"),
                                    query="radiograph appearance signs"))
        lit = self._literature_lines()
        if lit:
            parts.append("\nFrom the literature:\n" + "\n".join(lit))
        if not self.retrieved:
            parts.append(self._no_sources())
        return " ".join(_dedupe(p for p in parts if p))

    def _definition(self) -> str:
        note = self._find(self.topic.note_key) if self.topic is not None and self.topic.note_key else None
        note = note or (self._notes() or [None])[0]
        parts = []
        if note:
            parts.append(f"**{note.passage.title}.** " + self._cite(note, 2, query=f"{note.passage.title} is means"))
        lit = self._literature_lines()[:1]
        if lit:
            parts.append("\nRelated literature:\n" + "\n".join(lit))
        if not parts:
            return self._no_sources()
        return " ".join(parts)

    def _differential(self) -> str:
        from medsight.llm.rules import differential_from_findings

        parts: list[str] = []
        if self.analysis and self.context.get("pathology") is not None:
            items = differential_from_findings(self.analysis, str(self.analysis.get("symptoms") or ""))
            lines = [f"{i}. {d.condition}" + (f" — {'; '.join(d.supporting[:2])}" if d.supporting else "")
                     + (" (uncertain: supported only near threshold)" if d.uncertain else "")
                     for i, d in enumerate(items[:5], start=1)]
            parts.append("Conditions to consider, ranked by the documented rules from this study's model findings "
                         "(a ranking aid, not probabilities of disease):\n\n" + "\n".join(lines) + "\n\n")
        for note in self._notes()[:2]:
            parts.append(self._cite(note, 1, prefer=("overlap", "causes", "similar", "mimic", "include"),
                                    query="causes include overlaps with mimic differential"))
        lit = self._literature_lines()
        if lit:
            parts.append("\nFrom the literature:\n" + "\n".join(lit))
        if not parts:
            return ("No analysis is in context and the question names no finding; name a finding (for example "
                    "*consolidation*) or run Analyze first.")
        if not self.retrieved:
            parts.append(self._no_sources())
        return " ".join(parts)

    def _next_steps(self) -> str:
        parts: list[str] = ["Points to consider with the referring clinician (the decisions are theirs):"]
        bullets = ["Is there a prior radiograph to compare with?",
                   "What are the symptoms and their duration (fever, cough, breathlessness, chest pain, trauma)?"]
        flagged = self._flagged()
        if "pneumothorax" in flagged:
            bullets.insert(0, "A pneumothorax is flagged: confirm on the image and, if real, communicate it "
                              "promptly to the treating team.")
        if self._near():
            bullets.append("Findings just below threshold (" + ", ".join(finding_name(k) for k in self._near()) +
                           ") deserve a second look on the image.")
        if self.context.get("contradictions"):
            bullets.append("The image models and the clinical text disagree on: " +
                           "; ".join(self.context["contradictions"][:2]))
        parts.append("\n" + "\n".join(f"- {b}" for b in bullets) + "\n")
        for note in self._notes()[:2]:
            parts.append(self._cite(note, 1, prefer=("next", "usual", "considerations", "ct", "follow-up", "comparison"),
                                    query="next considerations usual next steps comparison follow-up CT"))
        lit = self._literature_lines()[:1]
        if lit:
            parts.append("\nFrom the literature:\n" + "\n".join(lit))
        if not self.retrieved:
            parts.append(self._no_sources())
        return " ".join(parts)

    def _how_model_works(self) -> str:
        parts = []
        for key, prefer in (("anomaly_score", ("fuses", "compared")), ("pathology_classifier", ("outputs", "tier")),
                            ("tiers", ("real", "demo"))):
            note = self._find(key)
            if note:
                parts.append(self._cite(note, 2, prefer=prefer))
        tiers = (self.analysis.get("summary") or {}).get("tiers") or {}
        if tiers:
            parts.append("Tiers in this analysis: " + ", ".join(f"{k} = {v}" for k, v in tiers.items()) + ".")
        return " ".join(parts) if parts else self._no_sources()

    def _limits(self) -> str:
        parts = []
        note = self._find("limits")
        if note:
            parts.append(self._cite(note, 3, prefer=("threshold", "alone", "validated", "uncertain")))
        tiers = self._find("tiers")
        demo = (self.analysis.get("summary") or {}).get("demo_models") or []
        if demo:
            parts.append("In this analysis these models are demo tier: " + ", ".join(demo) + ".")
            if tiers:
                parts.append(self._cite(tiers, 1, prefer=("demo", "phantom")))
        if self._near():
            parts.append("Near-threshold results here: " + ", ".join(
                f"{finding_name(k)} {_fmt(v['probability'])} vs {_fmt(v['threshold'])}" for k, v in self._near().items()) + ".")
        return " ".join(parts) if parts else self._no_sources()


def _dedupe(parts) -> list[str]:
    seen, out = set(), []
    for part in parts:
        key = part.strip()
        if key and key not in seen:
            seen.add(key)
            out.append(part)
    return out
