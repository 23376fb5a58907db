"""The house rules, enforced: vizcore's modules import only downward, without cycles, use only public names of other
packages, and only the public API and the CLI look up the plugin manager. Every import counts: module level, inside
functions and under TYPE_CHECKING."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "vizcore"

#: Layers, lowest first. A module belongs to the first prefix it matches (a package prefix covers its submodules).
LAYERS: list[tuple[str, ...]] = [
    ("vizcore._version", "vizcore.errors", "vizcore.files", "vizcore.text", "vizcore.images", "vizcore.inputs",
     "vizcore.outdir", "vizcore.chunkcache"),
    ("vizcore.lifecycle", "vizcore.result", "vizcore.onnx_compat.__init__", "vizcore.onnx_compat.o2t_import",
     "vizcore.hookspecs"),
    ("vizcore.onnx_compat", "vizcore.model", "vizcore.inputspace", "vizcore.objectives", "vizcore.params",
     "vizcore.transforms", "vizcore.regularizers", "vizcore.layouts", "vizcore.proto_check",
     "vizcore.graph_inputs", "vizcore.samples", "vizcore.channelstats", "vizcore.onnxfile", "vizcore.convert",
     "vizcore.loading"),
    ("vizcore.targets", "vizcore.engine"),
    ("vizcore.exporters", "vizcore.analysis"),
    ("vizcore.plugins",),
    ("vizcore.api",),
    ("vizcore.executors", "vizcore.health", "vizcore.atlas", "vizcore.prune", "vizcore.evidence"),
    ("vizcore.cli", "vizcore.commands", "vizcore.__init__"),
]
#: The only modules that may look up the process's default plugin manager.
MANAGER_LOOKUP_ALLOWED = ("vizcore.api", "vizcore.cli", "vizcore.commands", "vizcore.plugins")
LOOKUPS = {"default_manager", "get_manager", "configure"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        parts = path.relative_to(PKG.parent).with_suffix("").parts
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom) -> list[str]:
    """Absolute module names an ImportFrom refers to (a `from . import x` that names a submodule gives it)."""
    if node.level:
        base = module.split(".")  # "vizcore.a.b" or "vizcore.a.__init__": level 1 is "vizcore.a" for both
        base = base[: len(base) - node.level]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    names = []
    for alias in node.names:
        sub = f"{prefix}.{alias.name}"
        names.append(sub if (sub in MODULES or f"{sub}.__init__" in MODULES) else prefix)
    return names


def _canonical(name: str) -> str | None:
    if name in MODULES:
        return name
    if f"{name}.__init__" in MODULES:
        return f"{name}.__init__"
    return None


def _imports(module: str) -> list[tuple[str, bool]]:
    """(imported vizcore module, under TYPE_CHECKING) for every import in `module`."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            targets = _resolve(module, node)
        else:
            continue
        for t in targets:
            c = _canonical(t)
            if c is not None and c != module:
                found.append((c, id(node) in typing_only))
    return found


def _layer(module: str) -> int | None:
    name = module.removesuffix(".__init__") if module != "vizcore.__init__" else module
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if module == p or name == p or name.startswith(p + "."):
                return i
    return None


def _documented_layers() -> list[tuple[str, ...]]:
    """The layer table of docs/architecture.md: one row per layer, modules in backticks."""
    import re

    text = (PKG.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if re.match(r"\|\s*\d+\s*\|", line)]
    return [tuple(re.findall(r"`(vizcore[\w.]*)`", row.split("|")[2])) for row in rows]


def test_docs_architecture_states_these_layers():
    """docs/architecture.md's table is the rule this test enforces: the two cannot drift apart."""
    assert _documented_layers() == LAYERS


def test_every_module_has_a_layer():
    assert not sorted(m for m in MODULES if _layer(m) is None), "add new modules to LAYERS"


def test_imports_go_only_downward():
    wrong = []
    for m in MODULES:
        for target, _ in _imports(m):
            if _layer(target) is not None and _layer(m) is not None and _layer(target) > _layer(m):
                wrong.append(f"{m} (layer {_layer(m)}) imports {target} (layer {_layer(target)})")
    assert not wrong


def test_no_import_cycles():
    graph = {m: {t for t, _ in _imports(m)} for m in MODULES}
    cycles = _cycles(graph)
    assert not cycles, cycles


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_nothing_imports_the_package_itself():
    wrong = [m for m in MODULES if m != "vizcore.__init__"
             for t, _ in _imports(m) if t == "vizcore.__init__"]
    assert not wrong


def test_hookspecs_imports_only_pluggy_at_run_time():
    tree = ast.parse(MODULES["vizcore.hookspecs"].read_text(encoding="utf-8"))
    runtime = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = {a.name for n in runtime if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in runtime if isinstance(n, ast.ImportFrom)}
    assert names <= {"pluggy", "__future__", "typing"}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_only_the_api_and_cli_look_up_the_plugin_manager(module):
    if module.startswith(MANAGER_LOOKUP_ALLOWED):
        return
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    used |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    used |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert not used & LOOKUPS, f"{module} looks up the plugin manager; take it as an argument instead"


def _room(module: str) -> str:
    """A module's package (vizcore.engine for vizcore.engine.run), or the flat module itself (vizcore.api)."""
    return ".".join(module.removesuffix(".__init__").split(".")[:2])


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _private_uses(module: str) -> list[str]:
    """Private names (`_x`) `module` takes from a module of another package: imported by name, or read as an
    attribute of an imported vizcore module (`api._table`)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    found, aliases = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for alias, target in zip(node.names, _resolve(module, node)):
                c = _canonical(target)
                if c is None or _room(c) == _room(module):
                    continue
                if c.removesuffix(".__init__").endswith("." + alias.name):  # `from .. import api`: a module
                    aliases[alias.asname or alias.name] = c
                elif _private(alias.name):
                    found.append(f"{module} imports {alias.name} from {c}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                c = _canonical(alias.name)
                if c is not None and alias.asname and _room(c) != _room(module):
                    aliases[alias.asname] = c
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and _private(node.attr)):
            found.append(f"{module} reads {node.value.id}.{node.attr} ({aliases[node.value.id]})")
    return found


def test_no_module_uses_a_private_name_of_another_package():
    wrong = [use for m in sorted(MODULES) for use in _private_uses(m)]
    assert not wrong, "make the name public (a docstring, no underscore) or take what it gives as an argument"


def test_the_rules_catch_a_violation(tmp_path):
    """The checker itself: an upward import and a cycle planted in stand-ins for two modules are found."""
    global MODULES
    fake = {"vizcore.errors": tmp_path / "errors.py", "vizcore.api": tmp_path / "api.py",
            "vizcore.executors.worker": tmp_path / "worker.py"}
    fake["vizcore.errors"].write_text("from .api import load\n")
    fake["vizcore.api"].write_text("from .errors import VizcoreError\n")
    fake["vizcore.executors.worker"].write_text("from .. import api\nfrom ..api import _table\napi._manager(None)\n")
    saved = MODULES
    MODULES = {**saved, **fake}
    try:
        assert ("vizcore.api", False) in _imports("vizcore.errors")
        graph = {m: {t for t, _ in _imports(m)} for m in fake}
        assert _cycles(graph) == [["vizcore.api", "vizcore.errors"]]
        assert _layer("vizcore.api") > _layer("vizcore.errors")
        assert _private_uses("vizcore.executors.worker") == [
            "vizcore.executors.worker imports _table from vizcore.api",
            "vizcore.executors.worker reads api._manager (vizcore.api)"]
    finally:
        MODULES = saved
