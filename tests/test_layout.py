"""The package layout keeps its shape: imports flow one way through the stages, and no module imports itself
back through another (function-level imports count: a lazy import is still a dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
# Lower ranks are imported by higher ones, never the reverse; one rank may import within itself.
RANK = {
    "rdo.utils": 0, "rdo.data": 1, "rdo.core": 2,
    "rdo.config": 3, "rdo.commands": 3, "rdo.models": 3, "rdo.tiny": 3,
    "rdo.train": 4, "rdo.score": 5, "rdo.evaluate": 6, "rdo.pipeline": 7,
    "rdo.cli": 8, "rdo.__main__": 8, "rdo": 8, "rdo.demo": 9,
}
MAX_LINES = 600
MAX_FLAT = 8


def modules() -> dict[str, Path]:
    out = {}
    for p in sorted((SRC / "rdo").rglob("*.py")):
        parts = list(p.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The rdo modules `name` imports (as the longest known module prefix of each import)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for t in targets:
            while t and t not in known:
                t = t.rsplit(".", 1)[0] if "." in t else ""
            if t and t != name and t.startswith("rdo"):
                found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    g = {m: imports(m, p, known) for m, p in mods.items()}
    for m in g:  # importing a package's module also runs the package's __init__: not an edge we track
        g[m] = {t for t in g[m] if not (t in mods and mods[t].name == "__init__.py" and m.startswith(t + "."))}
    return g


def rank(module: str) -> int:
    best = max((k for k in RANK if module == k or module.startswith(k + ".")), key=len)
    return RANK[best]


def test_imports_never_go_up_the_stages():
    upward = sorted(f"{m} -> {t}" for m, ts in graph().items() for t in ts if rank(t) > rank(m))
    assert not upward, "imports against the layering (core/data/utils never import train/score/evaluate/pipeline):\n" + "\n".join(upward)


def test_no_import_cycles():
    g = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(m, path):
        state[m] = 1
        for t in sorted(g.get(m, ())):
            if state.get(t) == 1:
                cycles.append(" -> ".join(path[path.index(t):] + [t]))
            elif t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_modules_stay_small_and_few_stay_flat():
    long = {m: n for m, p in modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by what they do): {long}"
    flat = [p.name for p in (SRC / "rdo").glob("*.py")]
    assert len(flat) <= MAX_FLAT, f"{len(flat)} modules flat in src/rdo: {flat}"


def test_every_module_is_ranked():
    unranked = [m for m in modules() if not any(m == k or m.startswith(k + ".") for k in RANK if k != "rdo") and m != "rdo"]
    assert not unranked, f"give these a place in the layering (RANK): {unranked}"
