"""The package's import graph: each layer imports only itself and the layers below it, and no module cycle.

Every import is counted, including the ones made inside functions (a lazy import that runs upward is still an
upward dependency). The layer order is written once, here, and shown in docs/architecture.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "sparse_detr"

# lowest first; a module may import its own layer and the layers before it
LAYERS = (
    ("_C", "_ext", "_version", "utils"),
    ("layers",),
    ("modeling",),
    ("checkpoint", "config", "data", "evaluation"),
    ("model_zoo",),
    ("engine", "export", "visualization"),
    ("collect_env", "__init__"),
)
LAYER_OF = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def module_name(path: Path) -> str:
    parts = ("sparse_detr", *path.relative_to(PACKAGE_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE_ROOT.rglob("*.py"))}
KNOWN = set(MODULES) | {"sparse_detr._C"}


def imported_modules(name: str, path: Path) -> set[str]:
    """The project modules ``name`` imports (``from package import module`` counts the module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            submodules = {f"{target}.{alias.name}" for alias in node.names} & KNOWN
            found |= submodules or {target}
    return {m for m in found if m == "sparse_detr" or m.startswith("sparse_detr.")}


GRAPH = {name: imported_modules(name, path) for name, path in MODULES.items()}


def layer(module: str) -> int:
    part = module.split(".")[1] if "." in module else "__init__"
    if part not in LAYER_OF:
        raise AssertionError(f"{module}: its top-level part {part!r} has no place in LAYERS; add it")
    return LAYER_OF[part]


def test_every_part_of_the_package_has_a_layer():
    for module in MODULES:
        layer(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_runs_upward(module):
    upward = sorted(target for target in GRAPH[module] if layer(target) > layer(module))
    assert not upward, f"{module} (layer {layer(module)}) imports higher layers: {upward}"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (module -> imported modules) as a path, or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_no_import_cycle():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_check_sees_an_upward_import(tmp_path):
    """The parser counts lazy, relative and ``from package import module`` imports."""
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from ..engine import apps\n    from sparse_detr import _ext\n")
    found = imported_modules("sparse_detr.modeling.probe", source)
    assert "sparse_detr._ext" in found
    assert any(layer(module) == LAYER_OF["engine"] for module in found)
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
