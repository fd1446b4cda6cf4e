"""The options of one benchmark run and what its sections share: results so far, models, generated studies."""

from __future__ import annotations

import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import make_studies


@dataclass
class Options:
    """How large a run is (the command-line options)."""

    quick: bool = False
    studies: int | None = None
    casebase_sizes: list[int] | None = None
    cold_all_models: bool = True

    @property
    def n_studies(self) -> int:
        """Studies timed in the warm section."""
        return self.studies or (3 if self.quick else 20)

    @property
    def n_batch(self) -> int:
        """Studies in the folder scored by the batch section (the warm section uses the first of them)."""
        return max(self.n_studies, 8 if self.quick else 48)

    @property
    def sizes(self) -> list[int]:
        """Case-base sizes for the retrieval section."""
        return self.casebase_sizes or ([1000] if self.quick else [1000, 10_000, 100_000])


def load_models() -> tuple[Any, Any, dict]:
    """The anomaly detector and pathology classifier from the registry (None when unavailable), and their tiers."""
    from medsight import registry
    from medsight.models.onnx_runtime import wait_for_runtime

    tiers: dict[str, str] = {}
    models = []
    for slot in ("anomaly.detector", "pathology.classifier"):
        try:
            loaded = registry.load(slot)
            wait_for_runtime(loaded.model)  # measure the steady state, not PyTorch during the one-off export
            models.append(loaded.model)
            tiers[slot] = loaded.provenance.tier
        except registry.ModelUnavailable as exc:
            models.append(None)
            tiers[slot] = "unavailable: " + str(exc).splitlines()[0]
    return models[0], models[1], tiers


class Context:
    """What the sections of one run share. Models and studies are made on first use, once per run."""

    def __init__(self, options: Options, results: dict, stack: ExitStack):
        self.options, self.results, self._stack = options, results, stack
        self._models: tuple[Any, Any, dict] | None = None
        self._studies: list[Path] | None = None

    def models(self) -> tuple[Any, Any, dict]:
        """(detector, classifier, tiers); the tiers are recorded as `model_tiers` in the results."""
        if self._models is None:
            self._models = load_models()
            self.results["model_tiers"] = self._models[2]
        return self._models

    def studies(self) -> list[Path]:
        """`options.n_batch` generated studies in a temporary folder removed when the run ends."""
        if self._studies is None:
            folder = self._stack.enter_context(tempfile.TemporaryDirectory(prefix="medsight-bench-studies-"))
            self._studies = make_studies(Path(folder), self.options.n_batch)
        return self._studies
