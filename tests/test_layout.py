"""The package layout: one package per stage, nothing loose at the top, no import cycles between modules."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "anydepth_cli"
TOP_LEVEL = {"__init__.py", "__main__.py", "errors.py"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module → the anydepth_cli modules it imports (anywhere in its body, lazy imports included);
    `from package import submodule` counts as importing the submodule."""
    trees = {module_name(path): ast.parse(path.read_text()) for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, tree in trees.items():
        imports = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("anydepth_cli"):
                for alias in node.names:
                    submodule = f"{node.module}.{alias.name}"
                    imports.add(submodule if submodule in trees else node.module)
        graph[module] = imports - {module}
    # The package root only re-exports the API lazily, on first use; modules import it for __version__ alone.
    graph["anydepth_cli"] = set()
    return graph


def test_only_init_main_and_errors_sit_at_the_top():
    assert {p.name for p in PACKAGE.glob("*.py")} == TOP_LEVEL


def test_no_import_cycles_between_modules():
    graph = import_graph()
    state: dict[str, str] = {}
    cycles = []

    def visit(module: str, stack: list[str]) -> None:
        state[module] = "open"
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert not cycles


def test_stages_import_only_earlier_stages():
    allowed = {  # a stage uses the models (whose config names the output kinds) and earlier stages, never a later one
        "models": set(), "weights": {"models"}, "inference": {"models"}, "geometry": {"models"}, "io": set(),
        "datasets": set(), "evaluation": {"models", "inference", "io", "datasets"}, "bench": {"models", "inference", "io"},
        "pipelines": {"weights", "models", "inference", "geometry", "io"},
        "training": {"weights", "models", "inference", "evaluation", "io", "pipelines", "datasets"},
        "export": {"weights", "models", "inference", "io"},
        "serve": {"weights", "models", "inference", "geometry", "io", "pipelines"},
    }
    for module, imports in import_graph().items():
        stage = module.split(".")[1] if "." in module else ""
        if stage not in allowed:
            continue
        used = {m.split(".")[1] for m in imports if m.count(".") >= 1} - {stage, "errors"}
        assert used <= allowed[stage], f"{module} imports {sorted(used - allowed[stage])}"
