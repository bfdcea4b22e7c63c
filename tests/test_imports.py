"""No import circle among the package's modules: every import counts, at module level or inside a function (an
import moved into a function still makes a circle, one that only shows at run time)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "rnn_jax"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(node: ast.AST, package: str, modules: set[str]) -> set[str]:
    """The package's modules one import statement (or importlib.import_module("...") call) names."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names} & modules
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative: from the module's package up
            base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], *filter(None, [base])])
        return {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names} & modules
    if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module" and node.args:
        arg = node.args[0]
        return {arg.value} & modules if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else set()
    return set()


def import_graph() -> dict[str, set[str]]:
    """{module: the package's modules it imports} over every rnn_jax module."""
    paths = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
    modules = set(paths)
    graph = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        graph[name] = set().union(*(imported(n, package, modules) for n in ast.walk(tree))) - {name}
    return graph


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle (its modules in order, the first repeated at the end), or None."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return path[path.index(name) :] + [name]
        if name in done:
            return None
        for dep in sorted(graph[name]):
            circle = visit(dep, [*path, name])
            if circle:
                return circle
        done.add(name)
        return None

    return next(filter(None, (visit(name, []) for name in sorted(graph))), None)


def test_the_package_has_no_import_circle():
    circle = find_circle(import_graph())
    assert circle is None, f"import circle: {' -> '.join(circle or [])}; move what both need into a third module"


def test_a_circle_through_an_import_inside_a_function_is_found():
    graph = import_graph()
    graph["rnn_jax.checkpoint"] = graph["rnn_jax.checkpoint"] | {"rnn_jax.rundir"}  # as a function-local import
    assert find_circle(graph) is not None
