"""The tree reads as the pipeline: every import (function-local ones included) points down, no cycles."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "satkit"

# bottom to top; a module may import its own layer and the layers below it
LAYERS = [
    {"satkit", "satkit.errors", "satkit.limits", "satkit.settings", "satkit.provenance", "satkit.devices",
     "satkit.__main__"},
    {"satkit.io"},
    {"satkit.formats"},
    {"satkit.data"},
    {"satkit.cards"},
    {"satkit.models"},
    {"satkit.attacks"},
    {"satkit.transfer", "satkit.logits"},
    {"satkit.matrix"},
    {"satkit.jobs"},
    {"satkit.analysis"},
    {"satkit.study"},
    {"satkit.cli"},
]
ENTRY_POINTS = {"satkit.__main__": "satkit.cli"}  # `python -m satkit` starts the CLI


def unit(module: str) -> str:
    """The layer unit of a dotted module name: satkit.io.atomic -> satkit.io."""
    parts = module.split(".")
    for n in (2, 1):
        name = ".".join(parts[:n])
        if any(name in layer for layer in LAYERS):
            return name
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")


def level(u: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if u in layer)


def modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        rel = p.relative_to(ROOT.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        out[name] = p
    return out


def imports(name: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "satkit"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] == "satkit":
                found.add(mod)
                found |= {f"{mod}.{a.name}" for a in node.names}
    return found


def unit_graph() -> dict[str, set[str]]:
    g: dict[str, set[str]] = defaultdict(set)
    mods = modules()
    for name, path in mods.items():
        for imp in imports(name, path):
            target = imp
            while target not in mods and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in mods and unit(target) != unit(name):
                g[unit(name)].add(unit(target))
    return g


def test_every_import_points_down():
    mods = modules()
    bad = []
    for name, path in sorted(mods.items()):
        u = unit(name)
        for imp in sorted(imports(name, path)):
            target = imp
            while target not in mods and "." in target:
                target = target.rsplit(".", 1)[0]
            if target not in mods:
                continue
            t = unit(target)
            if level(t) > level(u) and ENTRY_POINTS.get(name) != t:
                bad.append(f"{name} imports {imp} ({u} is below {t})")
    assert not bad, "\n".join(bad)


def test_no_import_cycles_between_packages():
    g = unit_graph()
    for e in ENTRY_POINTS.items():
        g[unit(e[0])].discard(e[1])
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(u: str) -> None:
        state[u] = 1
        stack.append(u)
        for v in sorted(g.get(u, ())):
            if state.get(v) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(v):] + [v]))
            if v not in state:
                visit(v)
        stack.pop()
        state[u] = 2

    for u in sorted(g):
        if u not in state:
            visit(u)


def test_the_checker_sees_function_local_and_relative_imports(tmp_path):
    """The rules are not vacuous: a function-local upward import is found."""
    p = tmp_path / "m.py"
    p.write_text("def f():\n    from satkit.study import run_study\n    from . import atomic\n")
    assert {"satkit.study", "satkit.study.run_study"} <= imports("satkit.io.m", p)
    assert "satkit.io.atomic" in imports("satkit.io.m", p)
