"""Imports point down (docs/design.md §3): no cycle among the package's modules, no import of a higher floor,
and the node and replay load only what they run.

The graph is read from the source with ``ast``, every ``import`` statement counted wherever it stands (module
level, inside functions, under ``TYPE_CHECKING``), so a lazy import cannot hide an upward edge; the
``sys.modules`` checks in a fresh interpreter confirm it for the two entry points.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import mtl3d_perception

PACKAGE = "mtl3d_perception"
ROOT = Path(mtl3d_perception.__file__).parent

# Floors, lowest first. A module may import modules of its own package (top-level component) and of lower
# floors; packages on one floor do not import each other. cli and demo wire everything together.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"", "geometry", "classes", "registry", "typed_config", "topics", "resources", "cli_args"}),
    frozenset({"ops", "evaluation", "source_selection"}),
    frozenset({"model"}),
    frozenset({"runtime"}),
    frozenset({"msgs"}),
    frozenset({"data", "ros"}),
    frozenset({"train", "replay"}),
    frozenset({"cli", "demo"}),
)
FLOOR = {component: i for i, layer in enumerate(LAYERS) for component in layer}


def module_files() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package ``__init__``) for every module of the package."""
    modules = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = [PACKAGE, *path.relative_to(ROOT).with_suffix("").parts]
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        modules[".".join(parts)] = (path, is_package)
    return modules


MODULES = module_files()


def _owning_module(name: str) -> str | None:
    """The longest project module that ``name`` starts with (``pkg.mod.attr`` -> ``pkg.mod``)."""
    while name not in MODULES:
        if "." not in name:
            return None
        name = name.rsplit(".", 1)[0]
    return name


def imported_modules(module: str) -> set[str]:
    """Project modules that ``module``'s source imports anywhere (``from pkg import mod`` counts as ``pkg.mod``)."""
    path, is_package = MODULES[module]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            names = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in MODULES else source
                     for alias in node.names]
        else:
            continue
        for name in names:
            owner = _owning_module(name) if name.split(".")[0] == PACKAGE else None
            if owner is not None and owner != module:
                targets.add(owner)
    return targets


GRAPH = {module: imported_modules(module) for module in MODULES}


def component(module: str) -> str:
    """The top-level part under the package: ``mtl3d_perception.ros.node`` -> ``ros``; the root -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def loaded_by(module: str) -> set[str]:
    """Every project module importing ``module`` can execute: its imports and the packages above each, transitively."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        parents = [".".join(current.split(".")[:i]) for i in range(1, current.count(".") + 1)]
        todo.extend(GRAPH[current] | {p for p in parents if p in MODULES})
    return seen


def test_graph_is_read():
    # the reader sees module-level, function-level and `from pkg import module` imports
    assert "mtl3d_perception.msgs.conversions" in GRAPH["mtl3d_perception.data.bag"]
    assert "mtl3d_perception.model" in GRAPH["mtl3d_perception.runtime.loading"]  # inside load_model
    assert "mtl3d_perception.geometry" in GRAPH["mtl3d_perception.evaluation.metrics"]  # from pkg import geometry
    assert "mtl3d_perception.train.loss_base" in GRAPH["mtl3d_perception.train.cross_view"]


def test_every_part_has_a_floor():
    missing = sorted({component(m) for m in MODULES} - set(FLOOR))
    assert not missing, f"declare the import floor of {missing} in LAYERS (and docs/design.md §3)"


def test_no_upward_or_sideways_import():
    bad = []
    for module, targets in GRAPH.items():
        for target in targets:
            a, b = component(module), component(target)
            if a != b and FLOOR[b] >= FLOOR[a]:
                bad.append(f"{module} (floor {FLOOR[a]}) imports {target} (floor {FLOOR[b]})")
    assert not bad, "imports must point down:\n" + "\n".join(sorted(bad))


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
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
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component_nodes = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component_nodes.append(member)
                    if member == node:
                        break
                if len(component_nodes) > 1:
                    cycles.append(sorted(component_nodes))
    return cycles


def test_find_cycles_finds_one():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    assert find_cycles(GRAPH) == []


@pytest.mark.parametrize(("entry", "forbidden"), [
    ("mtl3d_perception.replay", ("mtl3d_perception.train", "mtl3d_perception.data.synthetic")),
    ("mtl3d_perception.ros.node", ("mtl3d_perception.data", "mtl3d_perception.train")),
])
def test_entry_point_source_loads_nothing_forbidden(entry, forbidden):
    loaded = loaded_by(entry)
    assert not sorted(m for m in loaded if m.startswith(forbidden))


def _loaded_in_fresh_interpreter(module: str) -> list[str]:
    code = (f"import sys, {module}; "
            f"print('\\n'.join(sorted(k for k in sys.modules if k.startswith('{PACKAGE}'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_replay_loads_no_trainer_and_no_renderer():
    loaded = _loaded_in_fresh_interpreter("mtl3d_perception.replay")
    assert "mtl3d_perception.replay.runner" in loaded
    assert [m for m in loaded if m.startswith(("mtl3d_perception.train", "mtl3d_perception.data.synthetic"))] == []


def test_node_loads_no_data_or_train_module():
    pytest.importorskip("rclpy", reason="rclpy absent")
    loaded = _loaded_in_fresh_interpreter("mtl3d_perception.ros.node")
    assert "mtl3d_perception.ros.node" in loaded
    assert [m for m in loaded if m.startswith(("mtl3d_perception.data", "mtl3d_perception.train"))] == []
