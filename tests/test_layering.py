"""The package's layers (README "Layout"): losses, utils and nemo_file at the bottom, then data, models, export,
evaluation. No module imports a layer above its own (a lazy import inside a function counts too), and no import
cycle exists between modules."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Set

PACKAGE = Path(__file__).resolve().parents[1] / "nemo_codert"
LAYERS = {"losses": 0, "utils": 0, "nemo_file": 0, "data": 1, "models": 2, "export": 3, "evaluation": 4}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> Dict[str, Set[str]]:
    """module -> the nemo_codert modules it imports (anywhere in its body)."""
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nemo_codert"):
                targets.add(node.module)
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name.startswith("nemo_codert"))
        graph[_module_name(path)] = targets
    return graph


def _layer(module: str):
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None  # the package's __init__ has no layer


def test_every_module_has_a_layer():
    assert {m for m in _imports() if m != "nemo_codert" and _layer(m) is None} == set()


def test_no_module_imports_a_layer_above_its_own():
    upward = sorted(
        f"{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)})"
        for m, targets in _imports().items()
        for t in targets
        if _layer(m) is not None and _layer(t) is not None and _layer(t) > _layer(m)
    )
    assert upward == []


def test_no_import_cycle():
    graph = _imports()
    resolved = {m: {t for t in ts if t in graph and t != m} for m, ts in graph.items()}
    # A package's __init__ re-exports its modules; importing the package from one of its own modules would be a
    # cycle, so it is kept in the graph.
    state: Dict[str, int] = {}

    def visit(m: str, stack: list) -> None:
        state[m] = 1
        for t in resolved[m]:
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(t) :] + [t]))
            if t not in state:
                visit(t, stack + [t])
        state[m] = 2

    for m in sorted(resolved):
        if m not in state:
            visit(m, [m])
