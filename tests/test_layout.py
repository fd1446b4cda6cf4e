"""The code's layout: no import circles, thin page files, pages that use only public names of other objects."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("medsight", "training", "benchmarks", "views")
MAX_PAGE_LINES = 200
# Names that start with "_" but are the public API of namedtuples.
NAMEDTUPLE_API = {"_replace", "_asdict", "_fields", "_make", "_field_defaults"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _project_modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            modules[_module_name(path)] = path
    return modules


def _imported(node: ast.AST, module: str, is_package: bool, modules: dict | set = ()) -> list[str]:
    """Modules an import statement runs: `from pkg import sub` names pkg.sub when that is a module, else pkg.

    Parent packages that Python imports on the way are not counted: every submodule would depend on them.
    """
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        # A package's own name counts as the first level; a module's starts at its package.
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    names = [f"{prefix}.{alias.name}" for alias in node.names]
    submodules = [name for name in names if name in modules]
    return submodules + ([prefix] if len(submodules) < len(names) else [])


def import_graph() -> dict[str, set[str]]:
    """Module → project modules it imports, at the top or inside functions."""
    modules = _project_modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            for target in _imported(node, name, path.name == "__init__.py", modules):
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components of more than one module, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _one_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest circle through the component's first module, for the failure message."""
    members = set(component)
    start = component[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for child in sorted(graph[node] & members):
            if child == start:
                return paths[node] + [start]
            if child not in paths:
                paths[child] = paths[node] + [child]
                queue.append(child)
    return component


def test_strongly_connected_finds_a_circle_and_ignores_a_chain():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert strongly_connected(graph) == [["a", "b", "c"]]
    assert _one_cycle(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]


def test_relative_imports_resolve_to_project_modules():
    modules = {"medsight", "medsight.registry", "medsight.models", "medsight.models.anomaly"}
    tree = ast.parse("from . import registry\nfrom ..models import anomaly, Calibration\n")
    first, second = tree.body
    assert _imported(first, "medsight.device", False, modules) == ["medsight.registry"]
    assert _imported(second, "medsight.retrieval.casebase", False, modules) == ["medsight.models.anomaly",
                                                                              "medsight.models"]
    assert _imported(first, "medsight", True, modules) == ["medsight.registry"]


def test_no_import_circles():
    graph = import_graph()
    circles = [" → ".join(_one_cycle(graph, component)) + f"  ({len(component)} modules: {', '.join(component)})"
               for component in strongly_connected(graph)]
    assert not circles, "Import circles:\n" + "\n".join(circles)


@pytest.mark.parametrize("path", sorted((ROOT / "views").glob("*.py")), ids=lambda p: p.name)
def test_page_files_are_short(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_PAGE_LINES, f"{path.relative_to(ROOT)} has {lines} lines (at most {MAX_PAGE_LINES})"


def _private_reads(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not node.attr.startswith("_") or node.attr.startswith("__"):
            continue
        if node.attr in NAMEDTUPLE_API:
            continue
        if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            continue
        found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_private_reads_are_found():
    sample = ROOT / "views" / "__init__.py"
    assert _private_reads(sample) == []
    tree = ast.parse("base._image_embedder\nself._x\nparts._replace(a=1)\n")
    attrs = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute)]
    assert [a.attr for a in attrs if a.attr.startswith("_")] == ["_image_embedder", "_x", "_replace"]


def test_views_read_no_private_attribute_of_another_object():
    found = [hit for path in sorted((ROOT / "views").glob("*.py")) for hit in _private_reads(path)]
    assert not found, "Pages read private attributes:\n" + "\n".join(found)
