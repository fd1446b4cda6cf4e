"""PS3.15 Annex E Table E.1-1 (Application Level Confidentiality Profile Attributes), loaded from data.

``table_e1_1.json`` next to this module holds the table as published in the named edition of the
standard: one row per attribute with its Basic Profile action (D, Z, X, K, C, U and the combinations
X/Z, X/D, X/Z/D, Z/D, X/Z/U*) and the action of each profile option that changes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

TABLE_PATH = Path(__file__).with_name("table_e1_1.json")


@dataclass(frozen=True)
class ProfileRow:
    """One row of Table E.1-1: the attribute, its Basic Profile action and option actions."""

    tag: str
    name: str
    basic: str
    options: dict[str, str] = field(default_factory=dict)

    @property
    def tag_int(self) -> int | None:
        """The tag as an int, or None for the group rules (curves, overlays, private groups)."""
        digits = self.tag.strip("()").replace(",", "")
        try:
            return int(digits, 16)
        except ValueError:
            return None


@dataclass(frozen=True)
class ProfileTable:
    """The loaded table: its edition, every row, and the rows with a single tag by tag."""

    edition: str
    source: str
    rows: tuple[ProfileRow, ...]

    @property
    def by_tag(self) -> dict[int, ProfileRow]:
        return {row.tag_int: row for row in self.rows if row.tag_int is not None}


@lru_cache(maxsize=1)
def load_table(path: Path = TABLE_PATH) -> ProfileTable:
    """Read Table E.1-1 from its data file."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    rows = tuple(
        ProfileRow(tag=r["tag"], name=r["name"], basic=r["basic"],
                   options={k: v for k, v in r.items() if k not in ("tag", "name", "basic")})
        for r in data["attributes"]
    )
    return ProfileTable(edition=data["edition"], source=data["source"], rows=rows)


@lru_cache(maxsize=1)
def actions_by_tag() -> dict[int, ProfileRow]:
    """Rows with a single tag, keyed by tag (cached)."""
    return load_table().by_tag
