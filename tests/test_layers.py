"""The package's stages import one way: task -> prompt -> request -> engine -> scores -> store -> report.

Read from the source (every import, including the deferred ones inside functions), so a new import
that turns a stage back on an earlier one fails here rather than in a later refactor."""

from __future__ import annotations

import ast
from pathlib import Path

import harness

PACKAGE = Path(harness.__file__).parent
# folders of the package (stages), and the top-level modules they share
STAGES = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists())


def _stage_of(module: str) -> str | None:
    """``harness.runs.sweep`` -> ``runs``; a top-level module (``harness.store``) -> its own name."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "harness" else None


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def stage_graph() -> dict[str, set[str]]:
    """stage -> the other stages (folders or top-level modules) it imports."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        source = relative.parts[0] if len(relative.parts) > 1 else relative.stem
        for module in _imports(path):
            target = _stage_of(module)
            if target and target != source and (target in STAGES or (PACKAGE / f"{target}.py").exists()):
                graph.setdefault(source, set()).add(target)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path, or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 finished

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [node, nxt] if nxt in path else [node, nxt]
            if nxt not in state and (found := visit(nxt, path + [node])):
                return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node, [])):
            return found
    return None


def test_the_stage_folders_import_without_a_cycle():
    graph = {stage: {t for t in targets if t in STAGES} for stage, targets in stage_graph().items() if stage in STAGES}
    assert _cycle(graph) is None, f"stages import in a cycle: {' -> '.join(_cycle(graph))}"


def test_runs_and_the_stages_before_it_do_not_import_analysis():
    graph = stage_graph()
    for stage in ("items", "engine", "scoring", "runs", "store", "table", "spec", "requests"):
        assert "analysis" not in graph.get(stage, set()), f"harness/{stage} imports harness.analysis"


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) is not None
    assert _cycle({"a": {"b"}, "b": {"c"}}) is None


def test_no_module_imports_another_modules_private_names():
    """A name another module needs is public (``fit_points``, not ``_points``): the analysis API is what
    its modules import from each other, and a leading underscore means nothing outside its module."""
    private = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("harness"):
                private += [f"{path.relative_to(PACKAGE)}: {node.module}.{alias.name}" for alias in node.names
                            if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert not private, private
