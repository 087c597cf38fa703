"""sead's imports point down only: commands -> pipeline -> stages -> kernel, with no cycles.

Every `import` in every module counts, wherever it stands (a function-local import is
still an import), so the rule cannot be got round by importing late. A new module must
be given a floor in `LAYERS` below; see the README's development section.
"""

from __future__ import annotations

import ast
from pathlib import Path

SEAD = Path(__file__).resolve().parents[1] / "sead"

# Floors, top first. A module may import from its own floor and the floors below it.
# A name covers the module and, for a package, everything inside it; `sead` itself (its
# `__init__`) covers only itself, so that a new module with no floor is caught.
LAYERS = {
    "commands": {
        "sead.run",
        "sead.toy",
        "sead.cli",  # the `sead` command: the Hydra app or a tool (issue 30)
        "sead.__main__",  # python -m sead
        "sead.api",  # compose and run from Python, as the command does (issue 30)
    },
    "pipeline": {
        "sead.pipeline",
        "sead.settings",  # every group's typed settings, read once (issue 29)
    },
    "stages": {
        "sead.teachers",
        "sead.ensemble",
        "sead.transfer",
        "sead.distill",
        "sead.recipe",  # the student's stages: objectives, held-out selection, resume (issue 28)
        "sead.speed",
        "sead.report",
        "sead.card",
        "sead.export",  # planned in DESIGN.md (issue 18)
        "sead.fusion",  # ONNX Runtime's transformer fusions for the exported student (issue 27)
        "sead.timing",  # export's timing and sizes of each format (split from export)
    },
    "kernel": {
        "sead",  # the package itself (its resolver for configs), and nothing inside it
        "sead.cache",
        "sead.entry",  # a cache entry's files, read back and verified (issue 28)
        "sead.representations",  # teacher vectors beside the logits: what to store (issue 28)
        "sead.chunks",  # the chunks of an entry being filled, shared by ranks and jobs (issue 19)
        "sead.inference",
        "sead.data",
        "sead.choices",
        "sead.metrics",
        "sead.tasks",
        "sead.checkpoints",
        "sead.files",
        "sead.resume",  # Trainer checkpoints that count once complete and verified (issue 31)
        "sead.prediction_files",  # read and write teacher prediction files (issue 17)
        "sead.config",
        "sead.searchpath",  # Hydra's search path for sead, and the check of config names
        "sead.distributed",
        "sead.tracking",
        "sead.models",  # installs real weights offline (make models); its main() is a command
        "sead.manifest",  # manifests and content hashes of store and cache entries
    },
}
ROOT = "sead"
RANK = {floor: rank for rank, floor in enumerate(reversed(list(LAYERS)))}  # kernel 0 ... up


def modules(root: Path | None = None) -> dict[str, Path]:
    """Every module of the package, by dotted name (a package by its `__init__`)."""
    root = root or SEAD
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def floor(module: str) -> str | None:
    """The floor of a module: that of the longest name in `LAYERS` that covers it."""
    best = None
    for name, members in LAYERS.items():
        for member in members:
            inside = member != ROOT and module.startswith(member + ".")
            covers = module == member or inside
            if covers and (best is None or len(member) > len(best[1])):
                best = (name, member)
    return best[0] if best else None


def imports(module: str, path: Path, known: dict[str, Path]) -> list[tuple[str, int]]:
    """(imported sead module, line) for every import in the file, however deep it stands."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from ..y import z
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.append((submodule if submodule in known else base, node.lineno))
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.args[0].value, node.lineno))
    ours = [(name, line) for name, line in found if name == "sead" or name.startswith("sead.")]
    return sorted(ours, key=lambda item: item[1])


def import_graph(root: Path | None = None) -> tuple[dict[str, set[str]], list[str]]:
    """Edges between sead's modules, and every upward or unplaced import, as messages."""
    root = root or SEAD
    known = modules(root)
    graph: dict[str, set[str]] = {module: set() for module in known}
    problems = []
    for module, path in known.items():
        if floor(module) is None:
            problems.append(f"{path.relative_to(root.parent)}: in no floor; add it to LAYERS")
            continue
        for target, line in imports(module, path, known):
            graph[module].add(target)
            if target == module or floor(target) is None:
                continue
            if RANK[floor(target)] > RANK[floor(module)]:
                problems.append(
                    f"{path.relative_to(root.parent)}:{line}: upward import of {target} "
                    f"({floor(target)}) from {module} ({floor(module)})"
                )
    return graph, problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles (each once, as a path that returns to its start)."""
    found, state, stack = [], {}, []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if target == module:
                continue
            if state.get(target) == "open":
                found.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return found


def test_imports_point_down_only():
    _, problems = import_graph()
    assert not problems, "Imports must point down (commands > pipeline > stages > kernel):\n" + (
        "\n".join(problems)
    )


def test_no_import_cycles():
    graph, _ = import_graph()
    found = cycles(graph)
    assert not found, "Import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in found)


def test_a_module_in_no_floor_is_caught(tmp_path):
    """A new module nobody placed fails the layer test (the package itself covers nothing)."""
    package = tmp_path / "sead"
    package.mkdir()
    for name in ("__init__", "pipeline", "cache", "newcomer"):
        (package / f"{name}.py").write_text("")
    _, problems = import_graph(package)
    assert problems == ["sead/newcomer.py: in no floor; add it to LAYERS"]
    assert floor("sead") == "kernel" and floor("sead.newcomer") is None
    assert floor("sead.teachers.store") == "stages"  # a listed package covers its modules


def test_every_import_is_seen_wherever_it_stands(tmp_path):
    """The walker finds function-local, relative and `import_module` imports too."""
    package = tmp_path / "sead"
    (package / "teachers").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "pipeline.py").write_text("")
    (package / "teachers" / "__init__.py").write_text("")
    source = (
        "import importlib\n"
        "from . import spec\n"
        "def late():\n"
        "    from sead import pipeline\n"
        "    importlib.import_module('sead.run')\n"
    )
    (package / "teachers" / "store.py").write_text(source)
    (package / "teachers" / "spec.py").write_text("")
    known = modules(package)
    found = imports("sead.teachers.store", package / "teachers" / "store.py", known)
    assert found == [("sead.teachers.spec", 2), ("sead.pipeline", 4), ("sead.run", 5)]


def test_no_module_is_over_700_lines():
    """Past that, a module does more than one job: split it by job."""
    long = {
        str(path.relative_to(SEAD.parent)): n
        for path in modules().values()
        if (n := len(path.read_text().splitlines())) > 700
    }
    assert not long, f"Modules over 700 lines: {long}"
