"""The package's import structure: one-way layers between and inside packages, no cycles
(lazy imports included), and no torch in the deployment half."""

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
# Inside fcls.infer: each layer imports only the layers before it (and itself).
INFER_LAYERS = (
    ("fcls.infer.common",),
    ("fcls.infer.formats",),
    ("fcls.infer.engine",),
    ("fcls.infer.evaluate", "fcls.infer.convert"),
    ("fcls.infer.cli",),
)
# Between packages the flow is one way; what each may use of fcls.infer (prefixes).
ALLOWED = {
    "fcls.infer": {"fcls.infer"},
    "fcls.train": {"fcls.train", "fcls.infer.common", "fcls.infer.formats"},
    "fcls.export": {
        "fcls.export",
        "fcls.train",
        "fcls.infer.common",
        "fcls.infer.formats",
        "fcls.infer.engine.predictor",
        "fcls.infer.engine.runtimes",  # the bf16 check's thresholds and the CPU test
        "fcls.infer.engine.session",
    },
    "fcls.bench": {
        "fcls.bench",
        "fcls.export",
        "fcls.train",
        "fcls.infer.common",
        "fcls.infer.formats",
        "fcls.infer.engine",
    },
}
CLI_KIT = "fcls.infer.cli.kit"  # every package's cli modules share the command conventions


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _modules() -> dict[str, Path]:
    """Every module of the four packages, sub-packages included, by its import name."""
    found = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[0] == "suite":  # bench/suite is a test suite, not a package
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
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


def _layer(name: str) -> int | None:
    for rank, layer in enumerate(INFER_LAYERS):
        if any(_within(name, unit) for unit in layer):
            return rank
    return None


def test_every_infer_module_is_in_a_layer() -> None:
    loose = [m for m in _modules() if _within(m, "fcls.infer") and m != "fcls.infer"]
    assert [m for m in loose if _layer(m) is None] == []


def test_no_import_cycles() -> None:
    graph = _graph()
    # a cycle through a package's own __init__ re-exports is not a module cycle
    packages = {m for m, p in _modules().items() if p.stem == "__init__"}
    edges = {m: {t for t in ts if t not in packages} for m, ts in graph.items()}
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


def _is_cli(module: str) -> bool:
    """A command's module: `cli`, or `NAME_cli` for a package's second command."""
    return module.endswith((".cli", "_cli"))


def _crossings(graph: dict[str, set[str]], package: str) -> list[str]:
    """The imports of `package`'s modules that leave what ALLOWED gives it."""
    return sorted(
        f"{m} imports {t}"
        for m, targets in graph.items()
        if _within(m, package)
        for t in targets
        if not any(_within(t, allowed) for allowed in ALLOWED[package])
        and not (_is_cli(m) and _within(t, CLI_KIT))
    )


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_packages_import_one_way(package: str) -> None:
    assert _crossings(_graph(), package) == []


@pytest.mark.parametrize("target", ["fcls.train.model", "fcls.export.api", "fcls.bench.core"])
def test_the_checker_sees_infer_import_a_torch_package(tmp_path: Path, target: str) -> None:
    """The one-way rule can fail for the deployment half: an infer module (even its cli)
    importing train, export or bench is caught."""
    src = tmp_path / "predictor.py"
    src.write_text(f"def f():\n    import {target}\n")
    for name in ("fcls.infer.engine.predictor", "fcls.infer.cli.infer"):
        graph = {name: _imports(name, src, {name, target})}
        assert _crossings(graph, "fcls.infer") == [f"{name} imports {target}"]


def test_infer_layers_import_downwards() -> None:
    """common <- formats <- engine <- evaluate, convert <- cli: never upwards."""
    graph = _graph()
    wrong = sorted(
        f"{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)})"
        for m, targets in graph.items()
        if _within(m, "fcls.infer") and m != "fcls.infer"
        for t in targets
        if _within(t, "fcls.infer") and t != "fcls.infer" and _layer(t) > _layer(m)  # type: ignore[operator]
    )
    assert wrong == []


def test_infer_never_names_torch_or_click_below_cli() -> None:
    for path in sorted((ROOT / "infer").rglob("*.py")):
        banned = (
            {"torch"} if "cli" in path.relative_to(ROOT / "infer").parts else {"torch", "click"}
        )
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            assert not any(n.split(".")[0] in banned for n in names), path


def test_the_checker_sees_a_cycle(tmp_path: Path) -> None:
    """The cycle finder is not vacuous: the old report <-> trainer cycle would be caught."""
    a, b = tmp_path / "report.py", tmp_path / "trainer.py"
    a.write_text("def f():\n    from .trainer import g\n")
    b.write_text("from .report import f\n")
    known = {"fcls.train.report", "fcls.train.trainer"}
    assert _imports("fcls.train.report", a, known) == {"fcls.train.trainer"}
    assert _imports("fcls.train.trainer", b, known) == {"fcls.train.report"}


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The layer rule is not vacuous: formats importing the engine is caught, with depth."""
    src = tmp_path / "csvfile.py"
    src.write_text("def f():\n    from ..engine.predictor import Predictor\n")
    known = {"fcls.infer.formats.csvfile", "fcls.infer.engine.predictor"}
    found = _imports("fcls.infer.formats.csvfile", src, known)
    assert found == {"fcls.infer.engine.predictor"}
    assert _layer("fcls.infer.engine.predictor") > _layer("fcls.infer.formats.csvfile")  # type: ignore[operator]
