"""Radiology report section split (INDICATION / HISTORY / TECHNIQUE / COMPARISON / FINDINGS / IMPRESSION).

Headers are recognised in their common variants ("Clinical history:", "REASON FOR EXAM:", "Impressions -",
"CONCLUSION:", "Findings" alone on a line). A header counts when it starts a line (any case, followed by
":" or "-" or the end of the line) or, written in capitals and followed by ":", anywhere in the text
("... no effusion. IMPRESSION: normal chest"). Text before the first header is returned as "TEXT".
"""

from __future__ import annotations

import re

SECTION_NAMES = ("INDICATION", "HISTORY", "TECHNIQUE", "COMPARISON", "FINDINGS", "IMPRESSION")
UNHEADED = "TEXT"

# canonical section → header spellings (lower case; matched case-insensitively at line start).
HEADER_VARIANTS: dict[str, list[str]] = {
    "INDICATION": [
        "indication", "indications", "clinical indication", "reason for exam", "reason for examination",
        "reason for study", "reason for referral", "clinical question", "clinical information", "clinical data",
    ],
    "HISTORY": ["history", "clinical history", "clinical hx", "hx", "patient history", "relevant history", "symptoms"],
    "TECHNIQUE": ["technique", "procedure", "examination", "exam", "views", "study", "protocol"],
    "COMPARISON": ["comparison", "comparisons", "prior", "prior study", "prior studies", "compared with", "prior exam"],
    "FINDINGS": ["findings", "finding", "report", "description", "observations"],
    "IMPRESSION": [
        "impression", "impressions", "conclusion", "conclusions", "summary", "assessment", "opinion",
        "interpretation", "diagnosis", "final impression",
    ],
}

_VARIANT_TO_SECTION = {v: name for name, variants in HEADER_VARIANTS.items() for v in variants}
_ALTERNATION = "|".join(sorted((re.escape(v) for v in _VARIANT_TO_SECTION), key=len, reverse=True))
# At a line start: any case, then ":" / "-" / end of line.
_LINE_HEADER = re.compile(
    rf"^[ \t]*(?:\d+[.)]\s*)?(?P<h>{_ALTERNATION})[ \t]*(?::|-(?=\s)|$)[ \t]*",
    re.IGNORECASE | re.MULTILINE,
)
# Anywhere: capitals followed by ":" (inline headers such as "... IMPRESSION: ...").
_INLINE_HEADER = re.compile(
    rf"(?<![A-Za-z])(?P<h>{'|'.join(sorted((re.escape(v.upper()) for v in _VARIANT_TO_SECTION), key=len, reverse=True))})[ \t]*:[ \t]*"
)


def _headers(text: str) -> list[tuple[int, int, str]]:
    """(header start, body start, section) for every header, in text order, overlaps removed."""
    found: dict[int, tuple[int, int, str]] = {}
    for regex in (_LINE_HEADER, _INLINE_HEADER):
        for m in regex.finditer(text):
            header = re.sub(r"\s+", " ", m.group("h").lower())
            # A header alone on its line (no ":" or "-") must be capitalised, so a sentence line such as
            # "Study quality is limited" is not read as a TECHNIQUE header.
            tail = text[m.end("h") : m.end()]
            if ":" not in tail and "-" not in tail and not m.group("h")[0].isupper():
                continue
            found.setdefault(m.start(), (m.start(), m.end(), _VARIANT_TO_SECTION[header]))
    ordered = sorted(found.values())
    result: list[tuple[int, int, str]] = []
    for item in ordered:
        if result and item[0] < result[-1][1]:
            continue
        result.append(item)
    return result


def section_spans(text: str) -> list[tuple[str, int, int]]:
    """(section, start, end) character ranges of each section's body; unheaded text is "TEXT"."""
    headers = _headers(text)
    spans: list[tuple[str, int, int]] = []
    if not headers:
        return [(UNHEADED, 0, len(text))]
    if text[: headers[0][0]].strip():
        spans.append((UNHEADED, 0, headers[0][0]))
    for i, (_, body_start, name) in enumerate(headers):
        end = headers[i + 1][0] if i + 1 < len(headers) else len(text)
        spans.append((name, body_start, end))
    return spans


def split_sections(text: str) -> dict[str, str]:
    """Split a report into its sections.

    Args:
        text: report text.

    Returns:
        {section name: body text}, in text order, only sections that occur; repeated sections are joined
        with a blank line. Text without any header comes back as {"TEXT": text}. Empty text gives {}.

    Example:
        >>> split_sections("FINDINGS: No effusion.\\nIMPRESSION: Normal chest.")
        {'FINDINGS': 'No effusion.', 'IMPRESSION': 'Normal chest.'}
    """
    if not text or not text.strip():
        return {}
    sections: dict[str, str] = {}
    for name, start, end in section_spans(text):
        body = text[start:end].strip()
        if not body and name == UNHEADED:
            continue
        sections[name] = f"{sections[name]}\n\n{body}".strip() if name in sections else body
    return sections
