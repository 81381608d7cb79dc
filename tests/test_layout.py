"""The house's shape, kept by a test: folders are the pipeline's parts and imports run one way.

    pytest tests/test_layout.py

Reads the source with `ast` (nothing is imported), builds the import graph of `s2f`, `flows`,
`storage` and `benchmarks` (imports inside functions count: a lazy import is still a dependency)
and checks the rules of docs/layout.md: no import circle (between modules, and between the
library's parts), the library (`s2f`, `storage`) never
imports `flows` or Prefect, `s2f/` keeps at most four top-level modules beside its subpackages,
and no function grows past 80 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("s2f", "flows", "storage", "benchmarks")
LIBRARY = ("s2f", "storage")
MAX_TOP_LEVEL_MODULES = 4
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = path
    return mods


def _targets(mod: str, path: Path, node: ast.Import | ast.ImportFrom, mods: dict[str, Path]
             ) -> list[str]:
    """The project modules an import statement loads (the longest known prefix of each name)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            parts = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
            parts = parts[: len(parts) - node.level + 1]
            base = ".".join([*parts, base] if base else parts)
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
    found = []
    for name in names:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        if name and name != mod:
            found.append(name)
    return found


def import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(edges between project modules, every top-level package each module imports)."""
    mods = _modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    externals: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges[mod].update(_targets(mod, path, node, mods))
                roots = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if not node.level else [])
                externals[mod].update(r.split(".")[0] for r in roots if r)
    return edges, externals


def import_circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
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
                    circles.append(sorted(component))
    return circles


def test_the_circle_finder_finds_a_circle() -> None:
    assert import_circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle() -> None:
    edges, _ = import_graph()
    assert import_circles(edges) == []


def test_the_library_s_parts_import_one_way() -> None:
    """The subpackages of s2f (and storage) form a DAG too: a part's lazy import of a part that
    imports it back would be a circle one level up (evaluation <-> registry was one)."""
    edges, _ = import_graph()
    part = lambda m: m.split(".")[1] if m.startswith("s2f.") else m.split(".")[0]  # noqa: E731
    parts: dict[str, set[str]] = {}
    for mod, targets in edges.items():
        if mod.split(".")[0] in LIBRARY and mod != "s2f":
            parts.setdefault(part(mod), set()).update(
                part(t) for t in targets if t.split(".")[0] in LIBRARY and t != "s2f")
    for name, targets in parts.items():
        targets.discard(name)
    for target in {t for ts in parts.values() for t in ts}:
        parts.setdefault(target, set())
    assert import_circles(parts) == []


def test_the_library_never_imports_flows_or_prefect() -> None:
    edges, externals = import_graph()
    upward = sorted((m, t) for m, ts in edges.items() for t in ts
                    if m.split(".")[0] in LIBRARY and t.split(".")[0] in ("flows", "benchmarks"))
    assert upward == []
    prefect = sorted(m for m, ext in externals.items()
                     if m.split(".")[0] in LIBRARY and "prefect" in ext)
    assert prefect == []


def test_s2f_is_subpackages_and_few_top_level_modules() -> None:
    top = sorted(p.stem for p in (ROOT / "s2f").glob("*.py") if p.name != "__init__.py")
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top
    stages = {"corpus", "ingest", "media", "faces", "preprocess", "models", "train",
              "evaluation", "registry", "release"}
    assert stages <= {p.name for p in (ROOT / "s2f").iterdir() if (p / "__init__.py").exists()}


def test_no_function_over_80_lines() -> None:
    long = []
    for path in _modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines})")
    assert long == []
