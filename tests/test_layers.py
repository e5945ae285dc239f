"""The layers import in one direction, and no modules import each other in a circle.

    app        dnas_hw/app/: the CLI, each command's module, pipeline, report, bench
    profiler   profiler/: all timing            search   search/: the engine
    lut        lut/: the table and its predictions
    core       dnas_hw/ (all but app): ops, families, data, training, export, files

A module may import its own layer and those below it; `profiler` and `search` are
siblings and import neither each other nor `app`. `examples/` holds model families
added from outside: they may use any layer but `app`, and no layer imports them (they
are found by name, `DNAS_HW_PLUGINS`). Every import counts, those inside functions too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dnas_hw", "lut", "profiler", "search", "examples")

# layer -> the layers it may import
ALLOWED = {
    "core": {"core"},
    "lut": {"core", "lut"},
    "profiler": {"core", "lut", "profiler"},
    "search": {"core", "lut", "search"},
    "app": {"core", "lut", "profiler", "search", "app"},
    "examples": {"core", "lut", "profiler", "search", "examples"},
}


def layer_of(module: str) -> str:
    """The layer of a dotted module name of ours."""
    if module == "dnas_hw.app" or module.startswith("dnas_hw.app."):
        return "app"
    top = module.partition(".")[0]
    return "core" if top == "dnas_hw" else top


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def our_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports(source: str, module: str, is_package: bool, known: set[str]) -> list[tuple[int, str]]:
    """(line, module of ours) for every import in `source`, at any depth (inside functions too).

    `from a import b` counts as importing `a.b` where that is a module of ours, else `a`.
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        found += [(node.lineno, n) for n in names if n.partition(".")[0] in PACKAGES]
    return found


def violations(module: str, source: str, is_package: bool = False, known: set[str] = frozenset()) -> list[str]:
    """One line per import of `source` (module `module`) that reaches up or sideways."""
    mine = layer_of(module)
    out = []
    for line, target in imports(source, module, is_package, set(known)):
        theirs = layer_of(target)
        if theirs not in ALLOWED[mine]:
            out.append(f"{module}:{line} imports {target} ({theirs}); {mine} may import only {sorted(ALLOWED[mine])}")
    return out


def test_every_import_goes_down_the_layers():
    modules = our_modules()
    known = set(modules)
    found = [v for name, path in modules.items()
             for v in violations(name, path.read_text(), path.name == "__init__.py", known)]
    assert not found, "\n".join(found)


def test_no_modules_import_each_other_in_a_circle():
    modules = our_modules()
    known = set(modules)

    def ours(target: str) -> str | None:
        while target and target not in known:
            target = target.rpartition(".")[0]
        return target or None

    graph = {name: {t for _, i in imports(path.read_text(), name, path.name == "__init__.py", known)
                    if (t := ours(i)) not in (None, name)}
             for name, path in modules.items()}
    # A module that reaches itself again through its imports lies on a cycle.
    on_cycle = []
    for start in graph:
        seen, todo = set(), list(graph[start])
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo += graph[m]
        if start in seen:
            on_cycle.append(start)
    assert not on_cycle, f"modules on an import cycle: {on_cycle}"


@pytest.mark.parametrize(
    ("module", "source", "wrong"),
    [
        ("profiler.environment", "def f():\n    from dnas_hw.app.bench import machine_info\n", "dnas_hw.app.bench"),
        ("profiler.run", "from search.run import run_search\n", "search.run"),
        ("search.cost", "import profiler.runners\n", "profiler.runners"),
        ("lut.table", "from profiler import validate\n", "profiler.validate"),
        ("dnas_hw.export", "from lut.predict import predict\n", "lut.predict"),
        ("dnas_hw.model", "from examples.dcn import model\n", "examples.dcn.model"),
        ("examples.dcn.supernet", "from dnas_hw.app import cli\n", "dnas_hw.app.cli"),
    ],
)
def test_an_import_up_or_sideways_is_caught(module, source, wrong):
    known = {"profiler.validate", "examples.dcn.model", "dnas_hw.app.cli"}
    found = violations(module, source, known=known)
    assert len(found) == 1 and f"imports {wrong} " in found[0]


def test_imports_down_and_relative_ones_pass():
    assert violations("dnas_hw.app.cli", "from search.run import run_search\nfrom profiler.run import profile_to_lut\n") == []
    assert violations("search.dlrm", "from .cost import CostTable\nfrom lut.table import Lut\n") == []
    assert violations("dnas_hw.data.prepare", "from . import criteo\nfrom ..errors import UserError\n", known={"dnas_hw.data.criteo"}) == []
