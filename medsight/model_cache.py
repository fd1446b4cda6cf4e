"""When to forget loaded models: weights installed by another process (e.g. `python -m medsight.weights`)."""

from __future__ import annotations

from medsight import weights
from medsight.config import Settings


class WeightsWatch:
    """Remembers, per data directory, the weights install stamp this process last saw."""

    def __init__(self) -> None:
        self._seen: dict[str, str] = {}

    def changed(self, settings: Settings) -> bool:
        """True once after weights were installed in `settings.home` since the last look (the first look is not)."""
        stamp = weights.install_stamp(settings)
        home = str(settings.home)
        previous = self._seen.setdefault(home, stamp)
        if stamp == previous:
            return False
        self._seen[home] = stamp
        return True

    def mark_seen(self, settings: Settings) -> None:
        """The models were just reloaded: the current stamp counts as seen."""
        self._seen[str(settings.home)] = weights.install_stamp(settings)
