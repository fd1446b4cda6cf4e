"""Negation (NegEx via negspacy) and uncertainty (own rules) for clinical entities.

negspacy 1.1.0 runs NegEx with the `en_clinical` termset, extended with radiology wording from
`lexicon` ("has resolved", "no typical findings of", "no change" as a pseudo-negation, ...). NegEx treats
"cannot exclude X" as a negation; the uncertainty rules here run afterwards and, for the cues listed in
`lexicon.UNCERTAIN_OVERRIDES_NEGATION`, turn such a mention into "uncertain" rather than "negated".
"""

from __future__ import annotations

from dataclasses import dataclass

from spacy.language import Language
from spacy.matcher import PhraseMatcher
from spacy.tokens import Doc, Span

from medsight.nlp import lexicon

NEGEX_PIPE = "negex"
# Entity labels NegEx looks at; anatomy is never "negated" by itself.
NEGATABLE_LABELS = [lexicon.FINDING, lexicon.DISEASE, lexicon.DEVICE, lexicon.SYMPTOM, lexicon.MEDICATION]
# How far (in tokens, within the same clause) an uncertainty cue may sit from the entity it qualifies.
UNCERTAINTY_WINDOW_BEFORE = 8
UNCERTAINTY_WINDOW_AFTER = 5

PRESENT, NEGATED, UNCERTAIN = "present", "negated", "uncertain"


def clinical_termset() -> dict[str, list[str]]:
    """negspacy's en_clinical termset plus the radiology additions from the lexicon."""
    from negspacy.termsets import termset

    terms = termset("en_clinical")
    terms.add_patterns(
        {
            "preceding_negations": lexicon.EXTRA_PRECEDING_NEGATIONS,
            "following_negations": lexicon.EXTRA_FOLLOWING_NEGATIONS,
            "pseudo_negations": lexicon.EXTRA_PSEUDO_NEGATIONS,
            "termination": lexicon.EXTRA_TERMINATIONS,
        }
    )
    patterns = terms.get_patterns()
    # "versus" is an uncertainty cue in radiology ("atelectasis versus pneumonia"), not a negation.
    patterns["preceding_negations"] = [t for t in patterns["preceding_negations"] if t not in {"versus"}]
    return patterns


def add_negex(nlp: Language) -> None:
    """Add negspacy's NegEx component (after the entity components) to `nlp`."""
    import negspacy.negation  # noqa: F401  (registers the "negex" factory)

    if NEGEX_PIPE not in nlp.pipe_names:
        nlp.add_pipe(
            "negex",
            name=NEGEX_PIPE,
            config={"neg_termset": clinical_termset(), "ent_types": NEGATABLE_LABELS},
        )


@dataclass
class UncertaintyRules:
    """Phrase matchers for uncertainty cues and clause terminations, built once per pipeline."""

    before: PhraseMatcher
    after: PhraseMatcher
    terminations: PhraseMatcher

    @classmethod
    def build(cls, nlp: Language) -> "UncertaintyRules":
        def matcher(name: str, phrases: list[str]) -> PhraseMatcher:
            m = PhraseMatcher(nlp.vocab, attr="LOWER")
            m.add(name, list(nlp.tokenizer.pipe(phrases)))
            return m

        cues_before = [c for c in lexicon.UNCERTAINTY_PRECEDING if c not in lexicon.ASSERTIVE_CUES]
        terminations = clinical_termset()["termination"] + [".", "and", ","]
        return cls(
            before=matcher("UNCERTAIN_BEFORE", cues_before),
            after=matcher("UNCERTAIN_AFTER", lexicon.UNCERTAINTY_FOLLOWING),
            terminations=matcher("TERMINATION", terminations),
        )

    def clause_bounds(self, doc: Doc, span: Span) -> tuple[int, int]:
        """Token range of the clause holding `span`: its sentence cut at termination words.

        "and" and "," bound a clause only for following cues; preceding cues reach across them so that
        "possible effusion and atelectasis" qualifies both.
        """
        sent = span.sent
        start, end = sent.start, sent.end
        # PhraseMatcher on a Span returns Doc-level token indices.
        for _, s, e in self.terminations(doc[sent.start : sent.end]):
            word = doc[s:e].text.lower()
            if word in {"and", ","}:
                continue
            if e <= span.start:
                start = max(start, e)
            elif s >= span.end:
                end = min(end, s)
        return start, end

    def cue(self, doc: Doc, span: Span) -> str | None:
        """The uncertainty cue qualifying `span`, or None."""
        start, end = self.clause_bounds(doc, span)
        lo = max(start, span.start - UNCERTAINTY_WINDOW_BEFORE)
        for _, s, e in self.before(doc[lo : span.start]):
            return doc[s:e].text.lower()
        hi = min(end, span.end + UNCERTAINTY_WINDOW_AFTER)
        for _, s, e in self.after(doc[span.end : hi]):
            # a following cue must not belong to a later clause ("effusion, and possibly atelectasis")
            between = doc[span.end : s].text
            if "," in between or " and " in f" {between} ":
                continue
            return doc[s:e].text.lower()
        return None


def assertion(negated: bool, uncertain: bool) -> str:
    """One status word from the two flags (uncertainty wins: "cannot exclude" is not a denial)."""
    if uncertain:
        return UNCERTAIN
    return NEGATED if negated else PRESENT
