"""The package's shape: no import circle among gafi_opt modules, and imports pointing one way between packages.

Imports are read from the source (every `import` and `from ... import`, at module level or inside a
function, outside `if TYPE_CHECKING:`), so an import moved into a function to dodge a circle is caught too.
"""

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "gafi_opt"

# Lowest first: a module may import from its own package and from the packages before it, never after.
LAYERS = [
    "errors", "stats", "spec", "data", "models", "train", "synth", "search", "cas",
    "storages", "pipeline", "report", "result", "runner", "experiments", "testing", "cli",
]  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The gafi_opt modules `path` imports (a name imported from a package that is a submodule counts as that module)."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    found = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("gafi_opt"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gafi_opt"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in known else node.module)
    return {name for name in found if name in known}


@functools.cache
def graph() -> dict[str, frozenset[str]]:
    known = modules()
    # The package root only names the public API (lazily): it is nobody's dependency.
    return {name: frozenset(imports(path, known) - {"gafi_opt"}) for name, path in known.items() if name != "gafi_opt"}


def layer(module: str) -> int:
    top = module.split(".")[1]
    return LAYERS.index(top)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, result, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                result.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return result


def test_the_reader_sees_function_level_imports_and_skips_type_checking_blocks(tmp_path):
    known = {"gafi_opt.a": tmp_path / "a.py", "gafi_opt.b": tmp_path / "b.py", "gafi_opt.c": tmp_path / "c.py"}
    source = tmp_path / "a.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from gafi_opt.c import X\n"
        "def f():\n    from gafi_opt.b import y\n    return y\n"
    )
    assert imports(source, known) == {"gafi_opt.b"}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle_among_gafi_opt_modules():
    found = cycles(graph())
    assert not found, "import circles: " + "; ".join(" <-> ".join(c) for c in found)


@pytest.mark.parametrize("module", sorted(graph()))
def test_imports_point_one_way(module):
    edges = graph()
    upward = sorted(target for target in edges[module] if layer(target) > layer(module))
    assert not upward, f"{module} (layer {LAYERS[layer(module)]}) imports {upward}, which sit above it in {LAYERS}"


def test_every_top_level_name_is_in_a_layer():
    tops = {name.split(".")[1] for name in graph()}
    assert tops <= set(LAYERS), f"not in LAYERS: {sorted(tops - set(LAYERS))}"
