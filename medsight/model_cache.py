"""Loaded models in a long-running app: when to forget them (weights installed by another process, e.g.
`python -m medsight.weights`), and keeping them out of the garbage collector's way while they are kept."""

from __future__ import annotations

import gc
from typing import TypeVar

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


T = TypeVar("T")


def long_lived(loaded: T) -> T:
    """Mark everything alive now, `loaded` included, as living as long as the process.

    The garbage collector then skips those objects: a full collection walking the models' half a million
    objects again cost hundreds of milliseconds on a click.
    """
    gc.freeze()
    return loaded


def release_long_lived() -> None:
    """Undo `long_lived` before models are forgotten, so that they can be collected."""
    gc.unfreeze()
