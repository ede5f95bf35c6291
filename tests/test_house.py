"""The house rules (issue 29), checked on the source so they cannot drift:

- no import cycle among the modules of ``hierrouter_graph`` and of ``training`` (the imports that
  run: module level and inside functions; ``if TYPE_CHECKING:`` imports never run);
- no reach into another module's private names (``from x import _y``, ``x._y``), from the packages,
  ``bench/`` or ``examples/``;
- the library never imports ``training`` (not even for type checking), and ``training`` never
  imports the graph module (``members.build.build_pool`` gives it a pool);
- training's wings import only downward: ``WINGS`` lists them lowest first, and a module of one
  may import its own wing and the wings below it only (wings on one level, like ``experiments``
  and ``specialists``, not each other); a module of ``training`` outside every wing is a thin
  script (a docstring, one import of the command line's ``cli``, the ``__main__`` call), and no
  file of ``training`` patches ``sys.path`` or hands off through ``runpy``;
- a module-size budget: at most ``MAX_LINES`` lines, except today's ``OVER_BUDGET`` modules, which
  may only shrink (and leave the list once they fit).

The checker reads the source with ``ast`` (nothing is imported), and is itself tested on a small
synthetic package that breaks every rule.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("hierrouter_graph", "training")
SCRIPTS = ("bench", "examples")
LIBRARY = "hierrouter_graph"
MAX_LINES = 400
WINGS: tuple[tuple[str, ...], ...] = (
    # training's wings, lowest first; the wings of one tuple stand on one level (docs/training.md)
    ("tasks",),
    ("replay",),
    ("rl",),
    ("evaluation",),
    ("experiments", "specialists"),
    ("cli",),
)

OVER_BUDGET: dict[str, int] = {
    # Modules over MAX_LINES when the budget was set (issue 29), with their line counts then. Each
    # may only shrink: split one below MAX_LINES and delete its line here (the test says when).
}


@dataclass(frozen=True)
class Import:
    """One import statement's module (``import x`` / ``from x import ...``) in a source file."""

    target: str
    """The module imported, or imported from (absolute dotted name)."""
    names: tuple[str, ...]
    """The names a ``from`` import takes (empty for ``import x``)."""
    bound: tuple[tuple[str, str], ...]
    """(local name, the dotted thing it is bound to) for each name the statement binds."""
    line: int
    type_only: bool
    """Inside ``if TYPE_CHECKING:``: never runs."""


@dataclass(frozen=True)
class Source:
    """A Python file of the repository: its dotted module name (None for a script) and syntax tree."""

    path: Path
    module: str | None
    tree: ast.Module

    @property
    def package(self) -> str:
        """The package its relative imports start from."""
        assert self.module is not None
        return self.module if self.path.name == "__init__.py" else self.module.rpartition(".")[0]


def sources(root: Path, packages: tuple[str, ...], scripts: tuple[str, ...] = ()) -> list[Source]:
    found = []
    for folder, is_package in [*((p, True) for p in packages), *((s, False) for s in scripts)]:
        for path in sorted((root / folder).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts) if is_package else None
            found.append(Source(path, module, ast.parse(path.read_text(encoding="utf-8"), str(path))))
    return found


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            inside.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    return inside


def imports(source: Source) -> Iterator[Import]:
    type_only = _type_checking_nodes(source.tree)
    for node in ast.walk(source.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                local = alias.asname or alias.name.partition(".")[0]
                bound = alias.name if alias.asname else local
                yield Import(alias.name, (), ((local, bound),), node.lineno, id(node) in type_only)
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                base = source.package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            names = tuple(a.name for a in node.names)
            bound = tuple((a.asname or a.name, f"{target}.{a.name}") for a in node.names)
            yield Import(target, names, bound, node.lineno, id(node) in type_only)


def module_edges(source: Source, modules: set[str]) -> set[str]:
    """The project modules ``source`` imports at run time. ``from package import submodule``
    depends on the submodule only (Python imports it without finishing the package first)."""
    edges: set[str] = set()
    for imp in imports(source):
        if imp.type_only:
            continue
        submodules = {f"{imp.target}.{name}" for name in imp.names} & modules
        edges |= submodules
        if not imp.names or len(submodules) < len(imp.names):
            edges.add(imp.target)
    return (edges & modules) - {source.module}


def import_cycle(found: list[Source]) -> list[str] | None:
    """One import cycle among the package modules (as a list of module names), or None."""
    modules = {s.module for s in found if s.module is not None}
    graph = {s.module: module_edges(s, modules) for s in found if s.module is not None}
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as error:
        return list(error.args[1])
    return None


def _dotted(node: ast.expr) -> str | None:
    """``a.b.c`` of a chain of attributes on a name, else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return None if head is None else f"{head}.{node.attr}"
    return None


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_reach_ins(found: list[Source], root: Path) -> list[str]:
    """``file:line: what`` for every private name of a project module used by another file."""
    modules = {s.module for s in found if s.module is not None}
    hits = []
    for source in found:
        where = source.path.relative_to(root).as_posix()
        bound: dict[str, str] = {}
        for imp in imports(source):
            bound.update(imp.bound)
            if imp.target in modules and imp.target != source.module:
                hits += [
                    f"{where}:{imp.line}: from {imp.target} import {n}" for n in imp.names if _private(n)
                ]
        for node in ast.walk(source.tree):
            if not isinstance(node, ast.Attribute) or not _private(node.attr):
                continue
            owner = _dotted(node.value)
            if owner is None:
                continue
            head, _, rest = owner.partition(".")
            module = ".".join(filter(None, [bound.get(head), rest]))
            if module in modules and module != source.module:
                hits.append(f"{where}:{node.lineno}: {module}.{node.attr}")
    return hits


def library_imports_of(found: list[Source], library: str, forbidden: str) -> list[str]:
    """``file:line: target`` for every import of ``forbidden`` from the ``library`` package."""
    return [
        f"{s.path}:{imp.line}: {imp.target}"
        for s in found
        if s.module is not None and (s.module == library or s.module.startswith(library + "."))
        for imp in imports(s)
        if imp.target == forbidden or imp.target.startswith(forbidden + ".")
    ]


def line_counts(found: list[Source], root: Path) -> dict[str, int]:
    return {
        s.path.relative_to(root).as_posix(): len(s.path.read_text(encoding="utf-8").splitlines())
        for s in found
        if s.module is not None
    }


def wing_of(module: str, wings: tuple[tuple[str, ...], ...]) -> tuple[str, int] | None:
    """(wing, level) of a package's module, or None outside every wing (the package itself, a
    script beside the wings)."""
    parts = module.split(".")
    for level, names in enumerate(wings):
        if len(parts) > 1 and parts[1] in names:
            return parts[1], level
    return None


def is_thin_script(source: Source) -> bool:
    """A docstring, ``from <module> import cli`` and ``if __name__ == "__main__": raise
    SystemExit(cli())``: nothing else (so a script holds no logic and is exempt from the wing order)."""
    body = source.tree.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    if len(body) != 2:
        return False
    imp, main = body
    return (
        isinstance(imp, ast.ImportFrom)
        and [a.name for a in imp.names] == ["cli"]
        and isinstance(main, ast.If)
        and ast.unparse(main.test) == "__name__ == '__main__'"
        and [ast.unparse(s) for s in main.body] == ["raise SystemExit(cli())"]
    )


def wing_order_breaks(found: list[Source], package: str, wings: tuple[tuple[str, ...], ...]) -> list[str]:
    """``file:line: module -> target`` for every import that climbs (or crosses) a wing, and
    ``file: not a thin script`` for a module outside every wing that holds more than the call."""
    modules = {s.module for s in found if s.module is not None}
    breaks = []
    for source in found:
        if source.module is None or source.module.partition(".")[0] != package:
            continue
        where = source.path.as_posix()
        own = wing_of(source.module, wings)
        if own is None:
            if source.module != package and not is_thin_script(source):
                breaks.append(f"{where}: not a thin script")
            continue
        if is_thin_script(source):
            continue
        for target in sorted(module_edges(source, modules)):
            theirs = wing_of(target, wings)
            if theirs is None or theirs[0] == own[0]:
                continue
            if theirs[1] >= own[1]:
                breaks.append(f"{where}: {source.module} -> {target}")
    return breaks


def path_patches(found: list[Source], package: str) -> list[str]:
    """``file:line: what`` for every ``sys.path`` change or ``runpy`` import in ``package``."""
    hits = []
    for source in found:
        if source.module is None or source.module.partition(".")[0] != package:
            continue
        for node in ast.walk(source.tree):
            if isinstance(node, ast.Attribute) and _dotted(node) == "sys.path":
                hits.append(f"{source.path.as_posix()}:{node.lineno}: sys.path")
        hits += [
            f"{source.path.as_posix()}:{imp.line}: runpy" for imp in imports(source) if imp.target == "runpy"
        ]
    return hits


# ------------------------------------------------------------------------------------- the house


@pytest.fixture(scope="module")
def house() -> list[Source]:
    return sources(REPO, PACKAGES, SCRIPTS)


def test_the_checker_sees_the_house(house: list[Source]) -> None:
    """The scan is not empty: the graph's known imports are there (so a green house means something)."""
    modules = {s.module for s in house if s.module is not None}
    graph = next(s for s in house if s.module == "hierrouter_graph.graph")
    wanted = {"hierrouter_graph.route", "hierrouter_graph.policy.alpha", "hierrouter_graph.policy.protocol"}
    assert wanted <= module_edges(graph, modules)
    assert len(modules) > 80 and any(s.module is None for s in house)


def test_no_import_cycle(house: list[Source]) -> None:
    assert import_cycle(house) is None


def test_no_reach_into_another_modules_private_names(house: list[Source]) -> None:
    assert private_reach_ins(house, REPO) == []


def test_the_library_never_imports_training(house: list[Source]) -> None:
    assert library_imports_of(house, LIBRARY, "training") == []


def test_training_builds_pools_without_the_graph_module(house: list[Source]) -> None:
    """``build_pool`` lives in ``pool_builder``: training needs no LangGraph graph to get a pool."""
    assert library_imports_of(house, "training", "hierrouter_graph.graph") == []


# The library's layers: the step (hop, route) and what serves it (graph, server, agents, defaults)
# stand on two sibling packages that never import each other or anything above them.
LIBRARY_ABOVE = ("hop", "route", "graph", "serve", "agents", "studio", "defaults", "checkpoint", "__main__")
SIBLINGS = {"members": ("policy",), "policy": ("members",)}


@pytest.mark.parametrize("package", sorted(SIBLINGS))
def test_members_and_policy_import_only_below_them(house: list[Source], package: str) -> None:
    """``members/`` answers a hop and ``policy/`` decides the next one: neither knows the other, the
    hop, the route step or the graph (not even for type checking), so either can change alone."""
    above = [f"{LIBRARY}.{name}" for name in (*LIBRARY_ABOVE, *SIBLINGS[package])]
    hits = [hit for target in above for hit in library_imports_of(house, f"{LIBRARY}.{package}", target)]
    assert hits == []


def test_training_wings_import_only_downward(house: list[Source]) -> None:
    assert wing_order_breaks(house, "training", WINGS) == []


def test_training_scripts_are_thin_and_patch_nothing(house: list[Source]) -> None:
    scripts = {s.path.relative_to(REPO).as_posix() for s in house if s.module and is_thin_script(s)}
    assert {"training/ppo.py", "training/record.py", "training/specialists/specialize.py"} <= scripts
    assert path_patches(house, "training") == []


def test_modules_keep_to_the_size_budget(house: list[Source]) -> None:
    counts = line_counts(house, REPO)
    over = {path: n for path, n in counts.items() if n > MAX_LINES and path not in OVER_BUDGET}
    assert over == {}, f"split these below {MAX_LINES} lines: {over}"
    grown = {
        path: (counts.get(path), limit) for path, limit in OVER_BUDGET.items() if counts.get(path, 0) > limit
    }
    assert grown == {}, f"(now, budget): these over-budget modules may only shrink: {grown}"
    fits = sorted(path for path in OVER_BUDGET if counts.get(path, 0) <= MAX_LINES)
    assert fits == [], f"these fit in {MAX_LINES} lines now (or are gone): delete them from OVER_BUDGET"


# ------------------------------------------------------------------------- the checker can fail


def test_the_checker_finds_every_broken_rule(tmp_path: Path) -> None:
    lib, other = tmp_path / "lib", tmp_path / "other"
    lib.mkdir()
    other.mkdir()
    (lib / "__init__.py").write_text("")
    (lib / "a.py").write_text("from .b import thing\n_secret = 1\n")
    (lib / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from other import t\n"
        "def thing():\n    from lib import a\n    return a._secret\n"
    )
    (lib / "c.py").write_text("from lib.a import _secret\n" + "x = 1\n" * 5)
    (other / "__init__.py").write_text("")
    (other / "t.py").write_text("import lib.a\ny = lib.a._secret\n")
    found = sources(tmp_path, ("lib", "other"))
    assert import_cycle(found) in (["lib.a", "lib.b", "lib.a"], ["lib.b", "lib.a", "lib.b"])
    assert sorted(private_reach_ins(found, tmp_path)) == [
        "lib/b.py:6: lib.a._secret",
        "lib/c.py:1: from lib.a import _secret",
        "other/t.py:2: lib.a._secret",
    ]
    assert [h.rsplit(": ", 1)[1] for h in library_imports_of(found, "lib", "other")] == ["other"]
    assert line_counts(found, tmp_path)["lib/c.py"] == 6


def test_the_checker_finds_a_wing_climbing_and_a_fat_script(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    for folder in ("low", "high", "side"):
        (pkg / folder).mkdir(parents=True)
        (pkg / folder / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "low" / "a.py").write_text("import sys\nfrom pkg.high import b\nsys.path.insert(0, '')\n")
    (pkg / "high" / "b.py").write_text("from pkg.low import a\n")
    (pkg / "side" / "c.py").write_text("from pkg.high import b\nimport runpy\n")
    (pkg / "thin.py").write_text(
        '"""Doc."""\nfrom pkg.high.b import cli\nif __name__ == "__main__":\n    raise SystemExit(cli())\n'
    )
    (pkg / "fat.py").write_text("from pkg.high.b import cli\nx = 1\n")
    (pkg / "high" / "script.py").write_text(
        'from pkg.side.c import cli\nif __name__ == "__main__":\n    raise SystemExit(cli())\n'
    )
    found = sources(tmp_path, ("pkg",))
    where = tmp_path.as_posix()
    assert sorted(
        b.replace(where + "/", "") for b in wing_order_breaks(found, "pkg", (("low",), ("high", "side")))
    ) == [
        "pkg/fat.py: not a thin script",
        "pkg/low/a.py: pkg.low.a -> pkg.high.b",
        "pkg/side/c.py: pkg.side.c -> pkg.high.b",
    ]
    assert sorted(h.replace(where + "/", "") for h in path_patches(found, "pkg")) == [
        "pkg/low/a.py:3: sys.path",
        "pkg/side/c.py:2: runpy",
    ]
