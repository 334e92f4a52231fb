"""The package's layers point one way (README "Layout"): io -> data -> model -> train -> evaluation/preference ->
flows, with no import cycle between modules. Every import statement counts, the lazy ones inside functions too."""

from __future__ import annotations

import ast

from flows.dvc_deps import REPO, imported_modules, module_file

# Lower rank = lower layer; a module may import its own rank or below. Peers (same rank) may not form a cycle.
RANKS = {
    "components.config": 0, "components.io": 0, "components.extractor_worker": 0,
    "components.tracking": 1, "components.data": 1,
    "components.model": 2,
    "components.train": 3,
    "components.evaluation": 4, "components.preference": 4, "components.inference": 4,
    "components.registry": 5, "components.pipeline": 5, "components.dryrun": 5,
    "components.app": 6,
    "flows": 7,
}


def _modules() -> list[str]:
    out = []
    for path in sorted([*REPO.glob("components/**/*.py"), *REPO.glob("flows/**/*.py")]):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def _layer(module: str) -> str:
    parts = module.split(".")
    return "flows" if parts[0] == "flows" else ".".join(parts[:2])


def _graph() -> dict[str, set[str]]:
    return {m: imported_modules(ast.parse(module_file(m).read_text()), REPO) - {m} for m in _modules()}


def test_every_package_has_a_layer():
    assert {_layer(m) for m in _modules()} - {"components"} <= set(RANKS)


def test_imports_only_point_down():
    upward = sorted(f"{m} -> {n}" for m, targets in _graph().items() for n in targets
                    if _layer(m) in RANKS and _layer(n) in RANKS and RANKS[_layer(n)] > RANKS[_layer(m)])
    assert upward == []


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_no_flow_imports_another_flows_private_names():
    private = []
    for path in REPO.glob("flows/*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("flows."):
                private += [f"{path.name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert private == []
