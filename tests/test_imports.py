"""The package's import structure: one-way layers and no cycles (lazy imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "train": "fcls.train",
    "export": "fcls.export",
    "infer": "fcls.infer",
    "bench": "fcls.bench",
}
# who may import whom: the flow is one way (infer never sees torch, train or export)
ALLOWED = {
    "fcls.infer": {"fcls.infer"},
    "fcls.train": {"fcls.train", "fcls.infer"},
    "fcls.export": {"fcls.export", "fcls.train", "fcls.infer"},
    "fcls.bench": {"fcls.bench", "fcls.export", "fcls.train", "fcls.infer"},
}


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            found[name] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every fcls module `name` imports, at module level or inside functions."""
    package = name if path.stem == "__init__" else name.rsplit(".", 1)[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            targets.add(base)
            targets.update(f"{base}.{a.name}" for a in node.names)
    return {t for t in targets if t in known and t != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def test_no_import_cycles() -> None:
    graph = _graph()
    # a cycle through a package's own __init__ re-exports is not a module cycle
    edges = {m: {t for t in ts if t not in PACKAGES.values()} for m, ts in graph.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == [], " | ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_layers_import_one_way(package: str) -> None:
    graph = _graph()
    wrong = sorted(
        f"{m} imports {t}"
        for m, targets in graph.items()
        if m.startswith(package)
        for t in targets
        if ".".join(t.split(".")[:2]) not in ALLOWED[package]
    )
    assert wrong == []


def test_infer_never_names_torch() -> None:
    for path in sorted((ROOT / "infer").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not any(n.split(".")[0] == "torch" for n in names), path


def test_the_checker_sees_a_cycle(tmp_path: Path) -> None:
    """The cycle finder is not vacuous: the old report <-> trainer cycle would be caught."""
    a, b = tmp_path / "report.py", tmp_path / "trainer.py"
    a.write_text("def f():\n    from .trainer import g\n")
    b.write_text("from .report import f\n")
    known = {"fcls.train.report", "fcls.train.trainer"}
    assert _imports("fcls.train.report", a, known) == {"fcls.train.trainer"}
    assert _imports("fcls.train.trainer", b, known) == {"fcls.train.report"}
