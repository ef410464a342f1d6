"""The library's layout: no Qt or Slicer application in the Lib, and no import cycles between its parts."""

from __future__ import annotations

import ast
from pathlib import Path

LIBRARY = Path(__file__).resolve().parents[2] / "SemanticInterpolation" / "SemanticInterpolationLib"
FORBIDDEN_MODULES = ("qt", "ctk", "slicer.ScriptedLoadableModule", "slicer.util", "slicer.parameterNodeWrapper")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(LIBRARY).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, ast.AST]]:
    """(absolute module inside the Lib or an outside module name, node) for every import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _module_name(path).split(".") if path.name == "__init__.py" else _module_name(path).split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)] if node.level > 1 else package
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
                found.append(("lib:" + target, node))
            else:
                found.append((node.module or "", node))
        elif isinstance(node, ast.Import):
            found += [(alias.name, node) for alias in node.names]
    return found


def _unit(module: str) -> str:
    """The part of the Lib a module belongs to: its subpackage, or the top-level module itself."""
    return module.split(".")[0] if module else "__init__"


def test_no_file_of_the_library_imports_qt_or_the_slicer_application():
    offenders = []
    for path in LIBRARY.rglob("*.py"):
        for name, node in _imports(path):
            if any(name == m or name.startswith(m + ".") for m in FORBIDDEN_MODULES):
                offenders.append(f"{path.relative_to(LIBRARY)}:{node.lineno} imports {name}")
        if "slicer.app" in path.read_text(encoding="utf-8").replace("``slicer.app``", ""):
            offenders.append(f"{path.relative_to(LIBRARY)} uses slicer.app")
    assert not offenders, offenders


def test_the_parts_of_the_library_import_each_other_without_cycles():
    graph: dict[str, set[str]] = {}
    for path in LIBRARY.rglob("*.py"):
        if path.parent == LIBRARY and path.name == "__init__.py":
            continue  # the package's lazy export table names everything by design
        source = _unit(_module_name(path))
        for name, _ in _imports(path):
            if name.startswith("lib:"):
                target = _unit(name[4:])
                if target != source and target != "__init__":
                    graph.setdefault(source, set()).add(target)
    # depth-first search for a cycle
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            assert state.get(nxt) != 1, f"import cycle: {' -> '.join([*trail, node, nxt])}"
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    # the layering the README describes: the models know nothing of the engine, the engine nothing of
    # training, evaluation, the command line or MRML
    assert not graph.get("models", set()) & {"engine", "training", "evaluation", "cli", "mrml", "upsampling"}
    assert not graph.get("engine", set()) & {"training", "evaluation", "cli", "mrml", "upsampling"}
