"""The package's shape: subpackages by role, imports that only go one way (no circles),
and plain classes that import without GNU Radio (docs/architecture.md)."""
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "python" / "rfdetect"
# a subpackage may import the ones before it, never the ones after (the data flow's order)
LAYERS = ["", "formats", "dsp", "inference", "tracking", "blocks", "apps"]
GNU_RADIO_FREE = ("formats", "dsp", "inference", "tracking")


def _modules():
    mods = {}
    for f in sorted(PKG.rglob("*.py")):
        rel = f.relative_to(PKG).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        mods[".".join(parts)] = (f, f.name == "__init__.py")
    return mods


def _imports(name, path, is_pkg, known):
    """Modules of this package that ``name`` imports (anywhere in the file), and the
    outside modules it imports at its top level."""
    pkg = name.split(".") if is_pkg else name.split(".")[:-1]
    inside, outside = set(), set()
    tree = ast.parse(path.read_text())
    top = set(map(id, tree.body))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = pkg[:len(pkg) - (node.level - 1)] if node.level > 1 else pkg
            target = ".".join(base + ([node.module] if node.module else []))
            for a in node.names:
                sub = f"{target}.{a.name}" if target else a.name
                inside.add(sub if sub in known else target)
        elif isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) in top:
            mod = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
            names = [a.name for a in node.names] if isinstance(node, ast.ImportFrom) else []
            outside.add(mod)
            outside.update(f"{mod}.{n}" for n in names)
    inside.discard("")
    return inside, outside


def _graph():
    mods = _modules()
    return {m: _imports(m, f, is_pkg, mods) for m, (f, is_pkg) in mods.items()}


def test_every_module_lives_in_a_role_subpackage():
    loose = [m for m in _modules() if "." not in m and m not in ["gpu"] + LAYERS]
    assert loose == [], f"modules outside the role subpackages: {loose}"
    assert {m.split(".")[0] for m in _modules() if "." in m} == set(LAYERS[1:])


def _related(a, b):
    """A package and its own modules (a package's __init__ re-exports them; a module may
    read its package's names): not edges of the dependency graph."""
    pa, pb = a.split(".") if a else [], b.split(".") if b else []
    n = min(len(pa), len(pb))
    return pa[:n] == pb[:n]


def test_no_import_circles():
    mods = _modules()
    graph = {m: sorted(t for t in inside if t in mods and not _related(m, t)) for m, (inside, _) in _graph().items()}
    assert len(graph) > 30 and sum(map(len, graph.values())) > 30
    done, cycles = set(), []

    def visit(m, stack):
        if m in stack:
            cycles.append(" -> ".join(stack[stack.index(m):] + [m]))
        elif m not in done:
            for t in graph[m]:
                visit(t, stack + [m])
            done.add(m)

    for m in graph:
        visit(m, [])
    assert cycles == []


@pytest.mark.parametrize("layer", LAYERS[1:])
def test_imports_only_go_down_the_data_flow(layer):
    rank = {name: i for i, name in enumerate(LAYERS)}
    bad = []
    for m, (inside, _) in _graph().items():
        if m.split(".")[0] != layer:
            continue
        for t in inside:
            t_layer = t.split(".")[0] if "." in t or t in rank else ""
            if t_layer in rank and rank[t_layer] > rank[layer]:
                bad.append(f"{m} imports {t}")
    assert bad == []


@pytest.mark.parametrize("layer", GNU_RADIO_FREE)
def test_plain_classes_import_without_gnu_radio(layer):
    bad = []
    for m, (_, outside) in _graph().items():
        if m.split(".")[0] == layer:
            bad += [f"{m} imports {o}" for o in outside if o in ("pmt", "gnuradio.gr", "gnuradio")]
    assert bad == []
