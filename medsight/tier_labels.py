"""Plain text the pages show about models and studies: tier badges and one-line study summaries."""

from __future__ import annotations

from typing import Any

from medsight.registry import DOMAIN_DESCRIPTIONS, TIER_BADGES, Domain, Tier

# tier → (badge text, colour, Material icon)
TIER_STYLE = {
    "real": (TIER_BADGES[Tier.REAL], "green", ":material/verified:"),
    "user": (TIER_BADGES[Tier.USER], "violet", ":material/help:"),
    "demo": ("DEMO — trained on synthetic phantoms", "orange", ":material/science:"),
    "rules": (TIER_BADGES[Tier.RULES], "gray", ":material/rule:"),
}
UNKNOWN_TIER = ("UNKNOWN SOURCE — treat output with caution", "red", ":material/help:")


def tier_of(provenance: Any) -> tuple[str, dict]:
    """(tier, provenance dict) from a `registry.Provenance`, its `to_dict()`, or a tier string."""
    if isinstance(provenance, str):
        return provenance, {}
    if isinstance(provenance, dict):
        return str(provenance.get("tier", "")), provenance
    info = provenance.to_dict() if hasattr(provenance, "to_dict") else {}
    return str(getattr(provenance, "tier", "")), info


def tier_style(tier: str) -> tuple[str, str, str]:
    """(badge text, colour, icon) of a tier; an unknown tier gets a red caution badge."""
    return TIER_STYLE.get(tier.lower(), UNKNOWN_TIER)


def provenance_line(info: dict) -> str:
    """Slot title, source, device and training domain of a model, joined by dots ("" when nothing is known)."""
    parts = [info.get("title"), info.get("source_label"), info.get("device") and f"device {info['device']}"]
    if info.get("domain"):
        parts.append(f"trained on {DOMAIN_DESCRIPTIONS.get(Domain(info['domain']), info['domain'])}")
    return " · ".join(str(p) for p in parts if p)


def study_line(study: Any) -> str:
    """File, format, modality, view, size and id of a study, as one markdown line."""
    height, width = (tuple(study.image.shape[:2]) if getattr(study, "image", None) is not None else ("?", "?"))
    parts = [
        f"**{study.filename or 'unnamed study'}**",
        (study.source_format or "").upper(),
        study.modality or "",
        study.view_position or "",
        f"{width}×{height} px",
        f"study `{study.study_id}`",
    ]
    return " · ".join(p for p in parts if p)
