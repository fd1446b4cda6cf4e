"""Negation (NegEx via negspacy) and ConText-style uncertainty / hypothetical scope for clinical entities.

negspacy 1.1.0 runs NegEx with the `en_clinical` termset, extended with radiology wording from
`lexicon` ("has resolved", "is not well seen", "no change" as a pseudo-negation, ...). NegEx treats
"cannot exclude X" as a negation; the ConText-style rules here (`UncertaintyRules`: hedges, conditional,
historical and differential triggers, with their own terminations and pseudo-triggers) run afterwards. A hedge
wins over NegEx when it is itself a denial of certainty (`lexicon.UNCERTAIN_OVERRIDES_NEGATION`) or comes
before the denial; a denial before a hedge ("no opacity to suggest pneumonia") keeps the mention negated
(`entities._negation_governs`). medspaCy's ConText is not used: installing it would downgrade numpy and spaCy.
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
UNCERTAINTY_WINDOW_AFTER = 6

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
    """ConText-style triggers for uncertain and hypothetical mentions, with pseudo-triggers and terminations.

    A preceding trigger ("possible", "if there is concern for", "differential diagnosis includes") qualifies
    the mentions after it up to the next termination word ("but", "however", ";", a new "there is", a
    negation) and, for hedges, within `UNCERTAINTY_WINDOW_BEFORE` tokens; conditional and differential
    triggers reach to the end of the clause. A following trigger ("cannot be excluded", "may not be
    demonstrated") qualifies the mention just before it. Pseudo-triggers ("no change", "without doubt")
    contain trigger words but are not triggers. Unlike NegEx's termination list, "with", "and" and
    "secondary to" do not end a hedge's scope, so "may be compatible with mild pulmonary edema" and
    "findings may be secondary to pulmonary edema" stay hedged.
    """

    before: PhraseMatcher
    after: PhraseMatcher
    terminations: PhraseMatcher
    pseudo: PhraseMatcher
    wide: frozenset

    @classmethod
    def build(cls, nlp: Language) -> "UncertaintyRules":
        def matcher(name: str, phrases: list[str]) -> PhraseMatcher:
            m = PhraseMatcher(nlp.vocab, attr="LOWER")
            m.add(name, list(nlp.tokenizer.pipe(sorted(set(phrases)))))
            return m

        cues_before = [c for c in lexicon.UNCERTAINTY_PRECEDING if c not in lexicon.ASSERTIVE_CUES]
        return cls(
            before=matcher("UNCERTAIN_BEFORE", cues_before + lexicon.HYPOTHETICAL_PRECEDING),
            after=matcher("UNCERTAIN_AFTER", lexicon.UNCERTAINTY_FOLLOWING + lexicon.HYPOTHETICAL_FOLLOWING),
            terminations=matcher("TERMINATION", lexicon.CONTEXT_TERMINATIONS),
            pseudo=matcher("PSEUDO", lexicon.CONTEXT_PSEUDO_TRIGGERS),
            wide=frozenset(lexicon.HYPOTHETICAL_PRECEDING),
        )

    def _matches(self, doc: Doc) -> dict[str, list[tuple[int, int]]]:
        """All trigger, termination and pseudo-trigger matches of `doc`, computed once per doc."""
        cached = getattr(self, "_cache", None)
        if cached is not None and cached[0] is doc:
            return cached[1]
        found = {name: [(s, e) for _, s, e in m(doc)] for name, m in
                 (("before", self.before), ("after", self.after), ("term", self.terminations), ("pseudo", self.pseudo))}
        self._cache = (doc, found)
        return found

    def clause_bounds(self, doc: Doc, span: Span) -> tuple[int, int]:
        """Token range of the clause holding `span`: its sentence cut at termination words."""
        sent = span.sent
        start, end = sent.start, sent.end
        found = self._matches(doc)
        # a termination word inside a trigger ("not" in "cannot exclude") does not end the trigger's scope
        in_trigger = {i for name in ("before", "after") for s, e in found[name]
                      if start <= s and e <= end for i in range(s, e)}
        for s, e in found["term"]:
            if s < sent.start or e > sent.end or in_trigger & set(range(s, e)):
                continue
            if e <= span.start:
                start = max(start, e)
            elif s >= span.end:
                end = min(end, s)
        return start, end

    def cue(self, doc: Doc, span: Span) -> str | None:
        """The uncertainty or hypothetical trigger qualifying `span`, or None."""
        start, end = self.clause_bounds(doc, span)
        found = self._matches(doc)
        sent = span.sent
        pseudo = {i for s, e in found["pseudo"] if sent.start <= s and e <= sent.end for i in range(s, e)}
        candidates = []
        for s, e in found["before"]:
            if s < start or e > span.start or pseudo & set(range(s, e)):
                continue
            text = doc[s:e].text.lower()
            if text in self.wide or span.start - e <= UNCERTAINTY_WINDOW_BEFORE:
                candidates.append((e, e - s, text))
        if candidates:
            return max(candidates)[2]  # the nearest trigger, and of those the longest ("cannot exclude")
        hi = min(sent.end, span.end + UNCERTAINTY_WINDOW_AFTER)
        for s, e in sorted(found["after"]):
            if s < span.end or e > hi or pseudo & set(range(s, e)) or s > end:
                continue  # outside the window, or a termination ("but", ";") lies before this trigger
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
