"""Audit trail writes from the app: a failed write is logged, never raised into the page."""

from __future__ import annotations

import logging
from typing import Any, Callable

log = logging.getLogger("medsight.app")


def record(open_history: Callable[[], Any], user: str | None, event: str, detail: Any = None) -> None:
    """Record `event` for `user` in the History `open_history()` gives (never pass passwords or patient identifiers)."""
    try:
        open_history().audit(user, event, detail if detail is not None else {})
    except Exception as exc:  # auditing must not break the page; the failure itself is logged
        log.warning("audit write failed for event %s: %s", event, type(exc).__name__)


def study_opened(study: Any) -> dict:
    """Audit detail of an opened study: id, format, modality and the synthetic flag, no identifiers."""
    return {"study_id": study.study_id, "format": getattr(study, "source_format", None),
            "modality": getattr(study, "modality", None), "synthetic": bool(getattr(study, "synthetic", False))}
