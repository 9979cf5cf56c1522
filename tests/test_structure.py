"""The package's shape: dependencies point one way, no import circle, no module touches another's privates."""
import ast
import pathlib

import networkx as nx
import pytest

PKG = pathlib.Path(__file__).resolve().parents[1] / "graphdiff"
# lower layers never import higher ones:
# backend <- graph <- ops <- codegen, execution, plans <- autodiff, lifetimes, higher, engine <- nn <- lm <- cli
LAYERS = {"errors": 0, "backend": 0, "graph": 1, "ops": 2, "codegen": 3, "execution": 3, "plans": 3,
          "autodiff": 4, "lifetimes": 4, "higher": 4, "engine": 4, "gradcheck": 5, "nn": 6, "lm": 7, "demo": 8,
          "cli": 8, "__main__": 9, "__init__": 9}


def modules():
    for f in sorted(PKG.rglob("*.py")):
        parts = f.relative_to(PKG.parent).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), f, parts[-1] == "__init__"


def imports(name, path, is_pkg):
    """graphdiff modules that `name` imports anywhere in its file (function-level imports included)."""
    package = name if is_pkg else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")
                base = ".".join(up[:len(up) - node.level + 1] + ([base] if base else []))
            if base.startswith("graphdiff"):
                for a in node.names:                # `from .. import ops` imports graphdiff.ops
                    sub = f"{base}.{a.name}"
                    found.add(sub if sub in KNOWN else base)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("graphdiff"))
    return {m for m in found if m in KNOWN} - {name}


KNOWN = {m for m, _, _ in modules()}


def layer(module):
    parts = module.split(".")
    if parts[-1] in ("cli", "demo"):                # the command line, wherever its pieces live
        return LAYERS["cli"]
    return LAYERS[parts[1]] if len(parts) > 1 else LAYERS["__init__"]


def test_no_import_circle():
    g = nx.DiGraph()
    for name, path, is_pkg in modules():
        g.add_node(name)
        for dep in imports(name, path, is_pkg):
            if not (is_pkg and dep.startswith(name + ".")):     # a package importing its own submodules
                g.add_edge(name, dep)
    cycles = list(nx.simple_cycles(g))
    assert not cycles, f"import circles: {cycles}"


@pytest.mark.parametrize("name, path, is_pkg", list(modules()), ids=lambda v: v if isinstance(v, str) else "")
def test_dependencies_point_one_way(name, path, is_pkg):
    mine = layer(name)
    for dep in imports(name, path, is_pkg):
        if is_pkg and dep.startswith(name + "."):
            continue
        assert layer(dep) <= mine, f"{name} (layer {mine}) imports {dep} (layer {layer(dep)})"
    text = path.read_text()
    uses_viz = "import viz" in text or "from viz" in text or "graphdiff.viz" in text
    assert not uses_viz or name.endswith("cli"), f"{name} imports viz"


@pytest.mark.parametrize("name, path, is_pkg", list(modules()), ids=lambda v: v if isinstance(v, str) else "")
def test_no_private_attribute_of_another_object(name, path, is_pkg):
    """`x._thing` only on self/cls: what a module needs from another is public, or the boundary is wrong."""
    bad = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                bad.append(f"line {node.lineno}: {ast.unparse(node)}")
        if isinstance(node, ast.ImportFrom) and node.module and any(
                a.name.startswith("_") and not a.name.startswith("__") for a in node.names):
            bad.append(f"line {node.lineno}: imports a private name from {node.module}")
    assert not bad, f"{name}: " + "; ".join(bad)
