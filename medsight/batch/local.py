"""The local engine (the default): one scoring process, this one, models loaded once."""

from __future__ import annotations

from dataclasses import asdict
from typing import Iterable, Iterator

from medsight.batch.scoring import Scorer


class LocalEngine:
    """Scores chunks of studies in this process, one chunk at a time."""

    name = "local"
    workers = 1

    def __init__(self, *, batch_size: int = 16, pathology: bool = True):
        self.batch_size, self.pathology = batch_size, pathology
        self.scorer: Scorer | None = None

    def start(self) -> dict:
        """Load the models; returns their provenance per slot."""
        self.scorer = Scorer(batch_size=self.batch_size, pathology=self.pathology)
        return self.scorer.provenance()

    def score(self, work: Iterable[list[tuple]]) -> Iterator[tuple[list[tuple], list[dict]]]:
        """For each chunk of study keys (path, size, mtime): the chunk and its rows, in the chunk's order."""
        for chunk in work:
            yield chunk, [asdict(r) for r in self.scorer.score_chunk([key[0] for key in chunk])]

    def stop(self) -> None:
        self.scorer = None
