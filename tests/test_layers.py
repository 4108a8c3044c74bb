"""The import graph of the library: noise profile -> training -> landscape -> faces (CLI and
dashboard glue), read from the source with ast. A file may import its own layer or a lower one,
never a higher one, and no chain of imports between files may come back to where it started
(imports inside functions count too: they hide a cycle, they do not break it)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Every module of dat/ and landscape/ has a layer; a new module must be placed here.
LAYERS = {
    0: ["dat.__init__", "dat.errors", "dat.fileio", "dat.arrayfile", "dat.models", "dat.parallel", "dat.chips",
        "dat.figure_layout", "dat.diskcache"],
    1: ["dat.noise.__init__", "dat.noise.choices", "dat.noise.targets", "dat.noise.checks", "dat.noise.linalg", "dat.noise.crossbar", "dat.noise.crossbar_block",
        "dat.noise.dense", "dat.noise.fitted", "dat.noise.profile", "dat.noise.fileformat", "dat.noise.io", "dat.noise.twins",
        "dat.profile_figures"],
    2: ["dat.config", "dat.trio", "dat.data", "dat.optim", "dat.strength", "dat.checkpoint", "dat.eval_rule", "dat.evaluate", "dat.train",
        "dat.table", "dat.transfer", "dat.aging"],
    3: ["landscape.__init__", "landscape.cache", "landscape.results", "landscape.inputs", "landscape.curves",
        "landscape.surfaces", "landscape.directions", "landscape.evaluator", "landscape.defaults",
        "landscape.parallel", "landscape.spec", "landscape.summary", "landscape.figures", "landscape.export",
        "landscape.sharpness", "landscape.instruments"],
    4: ["faces.__init__", "faces.cli.__init__", "faces.cli.__main__", "faces.cli.profile", "faces.cli.twin",
        "faces.cli.landscape", "faces.cli.instruments", "faces.dashboard.__init__", "faces.dashboard.helpers",
        "faces.dashboard.workspace", "faces.dashboard.jobs", "faces.dashboard.widgets.__init__",
        "faces.dashboard.widgets.export", "faces.dashboard.widgets.workspace",
        "faces.dashboard.widgets.form_state", "faces.dashboard.widgets.landscape_jobs", "faces.cli.cache", "faces.dashboard.warmup"],
}
NAMES = ("noise profile and base", "noise profile", "training", "landscape", "faces")
LAYER_OF = {m: layer for layer, mods in LAYERS.items() for m in mods}


def _modules() -> dict:
    return {".".join(p.relative_to(ROOT).with_suffix("").parts): p
            for pkg in ("dat", "landscape", "faces") for p in sorted((ROOT / pkg).rglob("*.py"))}


def _imports(name: str, path: Path, known) -> set:
    package = name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = package + (f".{node.module}" if node.module else "")
            if node.module:  # "from . import x" names x, not the package's __init__
                found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    found = {f if f in known else f"{f}.__init__" if f"{f}.__init__" in known else None for f in found}
    return {f for f in found if f is not None and f != name}


def _graph() -> dict:
    mods = _modules()
    return {name: _imports(name, path, mods) for name, path in mods.items()}


def test_every_module_has_a_layer():
    missing = sorted(set(_modules()) - set(LAYER_OF))
    assert not missing, f"place these modules in a layer of tests/test_layers.py: {missing}"


def _upward(graph: dict) -> list:
    return [f"{m} ({NAMES[LAYER_OF[m]]}) imports {d} ({NAMES[LAYER_OF[d]]})"
            for m, deps in graph.items() for d in sorted(deps) if LAYER_OF.get(d, 0) > LAYER_OF.get(m, 0)]


def _cycles(graph: dict) -> list:
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_no_module_imports_a_higher_layer():
    upward = _upward(_graph())
    assert not upward, "\n".join(upward)


def test_no_import_cycle_between_files():
    cycles = _cycles(_graph())
    assert not cycles, "\n".join(cycles)


def test_no_import_cycle_between_packages():
    """dat (noise profile, training) <- landscape <- faces: a package never imports one that imports it."""
    top = {}
    for m, deps in _graph().items():
        top.setdefault(m.split(".")[0], set()).update(d.split(".")[0] for d in deps if d.split(".")[0] != m.split(".")[0])
    assert top["dat"] == set(), f"dat imports {sorted(top['dat'])}"
    assert top["landscape"] <= {"dat"}, f"landscape imports {sorted(top['landscape'])}"
    assert not _cycles(top), _cycles(top)


def test_the_checker_sees_an_upward_import_and_a_cycle():
    """The checks above are only worth something if they can fail: the graph of a few months ago
    (targets importing the config's vocabulary; devices and measure importing each other)."""
    old = {"dat.noise.targets": {"dat.config"}, "dat.config": {"dat.errors"}, "dat.noise.crossbar": {"dat.noise.fitted"},
           "dat.noise.fitted": {"dat.noise.crossbar"}}
    assert _upward(old) == ["dat.noise.targets (noise profile) imports dat.config (training)"]
    assert _cycles(old) == ["dat.noise.crossbar -> dat.noise.fitted -> dat.noise.crossbar"]
