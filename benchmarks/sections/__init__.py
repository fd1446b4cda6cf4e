"""The benchmark's sections, in the order one run measures them.

Each section module exports `NAME`, `run(context) -> dict` and optionally `NEEDS` (sections whose results
it reads, measured first when it is selected) and `TIMED = False` (a record derived from other sections:
not timed, and refreshed whenever what it reads is measured). A module whose `run()` takes no options is
registered with `standalone(name, module)`; e.g. the browser viewer section is added by appending
`standalone("viewer", "benchmarks.viewer"),` to `REGISTRY`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Callable, Iterable

from benchmarks.context import Context
from benchmarks.sections import (batch, cold_start, efficiency, fullsize, machine, matmul, memory, precision,
                                 retrieval, warm)


@dataclass(frozen=True)
class Section:
    """One named part of the benchmark and how to measure it."""

    name: str
    run: Callable[[Context], dict]
    needs: tuple[str, ...] = ()
    timed: bool = True

    @classmethod
    def of(cls, module: ModuleType) -> "Section":
        """The section a module describes with NAME, run, NEEDS and TIMED."""
        return cls(module.NAME, module.run, tuple(getattr(module, "NEEDS", ())), getattr(module, "TIMED", True))


def standalone(name: str, module: str) -> Section:
    """A section from a module whose `run() -> dict` takes no options; imported only when it runs.

    These start real servers, browsers or clusters and take minutes, so the quick (CI-sized) run records them as
    skipped; `make bench` or `python -m <module>` measures them.
    """
    def run(context: Context) -> dict:
        if context.options.quick:
            return {"skipped": f"not part of the quick run: `make bench` or `python -m {module}` measures it"}
        return importlib.import_module(module).run()

    return Section(name, run)


REGISTRY: tuple[Section, ...] = (
    Section.of(machine),
    Section.of(cold_start),
    Section.of(memory),
    Section.of(matmul),
    Section.of(efficiency),
    Section.of(warm),
    Section.of(fullsize),
    Section.of(precision),
    Section.of(batch),
    Section.of(retrieval),
    standalone("dicom_node", "benchmarks.node"),
    standalone("viewer", "benchmarks.viewer"),
    standalone("browser", "benchmarks.browser"),
    standalone("ray_scaling", "benchmarks.ray_scaling"),
)

SECTIONS = tuple(section.name for section in REGISTRY)


def plan(wanted: Iterable[str]) -> list[Section]:
    """The sections to measure for `wanted`, with what they need, in registry order."""
    by_name = {section.name: section for section in REGISTRY}
    chosen: set[str] = set()
    pending = list(wanted)
    while pending:
        name = pending.pop()
        if name not in chosen:
            chosen.add(name)
            pending.extend(by_name[name].needs)
    chosen |= {s.name for s in REGISTRY if not s.timed and chosen & set(s.needs)}
    return [section for section in REGISTRY if section.name in chosen]
