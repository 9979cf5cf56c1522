"""The package's shape: dependencies point one way, no import circle, no module touches another's privates."""
import ast
import pathlib

import networkx as nx
import pytest

PKG = pathlib.Path(__file__).resolve().parents[1] / "graphdiff"
# lower layers never import higher ones: backend, threads <- values <- graph <- ops <- codegen, batched, execution,
# plans <- autodiff, lifetimes, higher, engine <- nn <- lm <- distributed <- cli
LAYERS = {"errors": 0, "backend": 0, "values": 0, "threads": 0, "graph": 1, "ops": 2, "codegen": 3,
          "batched": 3, "execution": 3, "plans": 3, "autodiff": 4, "lifetimes": 4, "higher": 4, "engine": 4,
          "gradcheck": 5, "nn": 6, "lm": 7, "distributed": 8, "demo": 9, "cli": 9, "__main__": 10,
          "__init__": 10}


def modules():
    for f in sorted(PKG.rglob("*.py")):
        parts = f.relative_to(PKG.parent).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), f, parts[-1] == "__init__"


def absolute(node, package):
    """The module an ImportFrom node names, relative imports resolved against `package`."""
    base = node.module or ""
    if node.level:
        up = package.split(".")
        base = ".".join(up[:len(up) - node.level + 1] + ([base] if base else []))
    return base


def imports(name, path, is_pkg):
    """graphdiff modules that `name` imports anywhere in its file (function-level imports included)."""
    package = name if is_pkg else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = absolute(node, package)
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


# --- viz/ (installed as graphdiff.viz) ------------------------------------------------------------------------
VIZ = pathlib.Path(__file__).resolve().parents[1] / "viz"
# each viz module imports only modules of lower rows (the rows of viz/__init__.py's docstring)
VIZ_LAYERS = {"fontdata": 0, "graphs": 0, "output": 0, "page": 0, "gallery": 0, "font": 1, "labels": 1,
              "fold": 2, "renderer": 2, "health": 2, "dot": 3, "nx": 3, "explorer": 3, "report": 3, "trace": 4,
              "growth": 4, "tour": 5,
              "cli": 6, "__init__": 7}
# what viz may read of graphdiff: the package's own names, the structure's shape text (graph.describe), the
# public subpackages nn and lm, and the command line's extension points; never the engine's modules
VIZ_READS = ("graphdiff", "graphdiff.graph", "graphdiff.nn", "graphdiff.lm", "graphdiff.cli", "graphdiff.demo")


def viz_modules():
    for f in sorted(VIZ.glob("*.py")):
        yield f.stem, f


def viz_imports(stem, path):
    """[(absolute module, [names])] that viz module `stem` imports anywhere in its file (function-level
    imports included); `from . import tour` counts as importing graphdiff.viz.tour."""
    package = "graphdiff.viz"
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = absolute(node, package)
            names = [a.name for a in node.names]
            if base == package:
                subs = [n for n in names if (VIZ / f"{n}.py").exists()]
                found += [(f"{package}.{n}", []) for n in subs]
                names = [n for n in names if n not in subs]
                if not names:
                    continue
            found.append((base, names))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names]
    return found


def viz_deps(stem, path):
    """The viz modules (stems) that `stem` imports."""
    return {m.split(".")[2] for m, _ in viz_imports(stem, path)
            if m.startswith("graphdiff.viz.") and m.split(".")[2] != stem}


def test_viz_has_no_import_circle_counting_imports_inside_functions():
    g = nx.DiGraph()
    for stem, path in viz_modules():
        g.add_node(stem)
        for dep in viz_deps(stem, path):
            if stem != "__init__":                    # the package importing its own modules
                g.add_edge(stem, dep)
    cycles = list(nx.simple_cycles(g))
    assert not cycles, f"import circles in viz/: {cycles}"


@pytest.mark.parametrize("stem, path", list(viz_modules()), ids=lambda v: v if isinstance(v, str) else "")
def test_viz_modules_import_only_lower_rows(stem, path):
    assert stem in VIZ_LAYERS, f"viz/{stem}.py has no row in VIZ_LAYERS: place it (and in viz/__init__.py's list)"
    for dep in viz_deps(stem, path):
        assert VIZ_LAYERS[dep] < VIZ_LAYERS[stem], \
            f"viz/{stem}.py (row {VIZ_LAYERS[stem]}) imports viz/{dep}.py (row {VIZ_LAYERS[dep]})"


@pytest.mark.parametrize("stem, path", list(viz_modules()), ids=lambda v: v if isinstance(v, str) else "")
def test_viz_reads_graphdiff_through_its_public_api_and_no_private_names(stem, path):
    """No `x._thing` except on self/cls, no private name imported (from viz or graphdiff), and graphdiff read
    only through VIZ_READS: the engine's modules (autodiff, execution, ops, backend, ...) can change freely."""
    bad = []
    tree = ast.parse(path.read_text())
    aliases = {"graphdiff"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases.update(a.asname or a.name for a in node.names if a.name == "graphdiff")
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                bad.append(f"line {node.lineno}: {ast.unparse(node)}")
    for module, names in viz_imports(stem, path):
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        if private:
            bad.append(f"imports private {private} from {module}")
        if module.startswith("graphdiff") and not module.startswith("graphdiff.viz"):
            if not any(module == r or (module.startswith(r + ".") and r != "graphdiff") for r in VIZ_READS):
                bad.append(f"reads {module}, which is not among {VIZ_READS}")
            if any(p.startswith("_") for p in module.split(".")):
                bad.append(f"imports the private module {module}")
    engine = {p.stem for p in PKG.glob("*.py")} - {n.split(".")[-1] for n in VIZ_READS} - {"__init__", "errors"}
    engine |= {p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()} - {"nn", "lm"}
    for node in ast.walk(tree):                      # gd.autodiff.x, gd.ops.y: the engine through an attribute
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr in engine):
            bad.append(f"line {node.lineno}: {ast.unparse(node)} reaches into graphdiff.{node.attr}")
    assert not bad, f"viz/{stem}.py: " + "; ".join(bad)


def test_no_viz_module_is_shadowed_by_a_public_name():
    """`graphdiff.viz.render` is the function: a module of a name viz exports would be hidden behind it
    (`import graphdiff.viz.render as R` binds the function), so no module takes such a name."""
    tree = ast.parse((VIZ / "__init__.py").read_text())
    exported = next(ast.literal_eval(n.value) for n in tree.body
                    if isinstance(n, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in n.targets))
    assert exported and not sorted(set(exported) & {stem for stem, _ in viz_modules()})
