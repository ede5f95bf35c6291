"""Code benchmarks' tests judged outside the untrusted process (issue 27).

Why: when the asserts ran inside the candidate's process, the candidate could win without
solving anything — read the tests from its own source file, return an object whose ``__eq__`` is
always true, or print the completion marker it found in its own memory. Here each assert
``assert <check>`` is split into

- **inputs**: the maximal sub-expressions that involve the candidate's names (``f(3, 4)``,
  ``max_height(root)``): sent to the sandbox, evaluated after the candidate's code, returned as
  plain data (``hierrouter_graph.sandbox.plain``: exact builtin types, no behaviour);
- **the check**: the rest, with each input replaced by ``__v[i]`` (``set(__v[0]) == set((4, 5))``):
  never shown to the candidate. ``__v[i] == <literal>`` is compared here; any other check runs in a
  second sandboxed process that holds only the benchmark's check and the plain values.

An input may not contain a comparison, a boolean operator, a conditional, a lambda or a
comprehension (those could carry the expected value to the candidate), and a check may use only
builtins and standard-library modules. An assert that does not fit that shape (loops in HumanEval's
``check``, comprehensions, bare statements) makes the whole item use the documented fallback:
the code and the asserts run together in one sandboxed process as before, and a pass needs exit
status 0 and the per-run completion marker (docs/security.md says what that does not stop).
"""

from __future__ import annotations

import ast
import builtins
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from hierrouter_graph.sandbox import SandboxLimits, evaluate_in_sandbox, run_python

__all__ = ["SplitAssert", "passes_tests", "split_assert", "split_humaneval_check"]

_TRUSTED_NAMES = frozenset(dir(builtins)) | frozenset(sys.stdlib_module_names)
# Nodes whose children may be split further: the node itself is evaluated by the trusted check.
_STRUCTURAL = (ast.Compare, ast.UnaryOp, ast.BinOp, ast.Tuple, ast.List, ast.Set, ast.Dict, ast.Subscript,
               ast.Slice, ast.Starred, ast.keyword, ast.Call, ast.Load)  # fmt: skip
# An input holding one of these could carry the expected value into the candidate's process.
_NOT_IN_INPUTS = (ast.Compare, ast.BoolOp, ast.IfExp, ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp,
                  ast.GeneratorExp, ast.NamedExpr, ast.Await, ast.Yield, ast.YieldFrom)  # fmt: skip


@dataclass(frozen=True)
class SplitAssert:
    """One assert as (inputs for the sandbox, the check that judges their values)."""

    inputs: tuple[str, ...]
    check: str  # a Python expression over ``__v`` (this assert's inputs, in order)
    literal: object = None  # the expected value when the check is ``__v[0] == <literal>``
    has_literal: bool = False


def _candidate_names(node: ast.AST) -> bool:
    return any(
        isinstance(n, ast.Name) and n.id not in _TRUSTED_NAMES and n.id != "__v" for n in ast.walk(node)
    )


class _Splitter(ast.NodeTransformer):
    def __init__(self) -> None:
        self.inputs: list[str] = []
        self.fits = True

    def visit(self, node: ast.AST) -> ast.AST:
        if not _candidate_names(node):
            return node
        if isinstance(node, ast.Call) and _candidate_names(node.func):
            return self._input(node)
        if isinstance(node, ast.Subscript) and _candidate_names(node.slice):
            return self._input(node)
        if isinstance(node, _STRUCTURAL):
            return self.generic_visit(node)
        return self._input(node)

    def _input(self, node: ast.AST) -> ast.AST:
        if any(isinstance(n, _NOT_IN_INPUTS) for n in ast.walk(node)):
            self.fits = False
        self.inputs.append(ast.unparse(node))
        index = ast.Constant(len(self.inputs) - 1)
        return ast.copy_location(ast.Subscript(ast.Name("__v", ast.Load()), index, ast.Load()), node)


def split_assert(source: str) -> SplitAssert | None:
    """``source`` (one ``assert`` statement) split for an outside verdict, or ``None`` if it does
    not fit (then the caller falls back to running the asserts in the sandbox)."""
    try:
        tree = ast.parse(source.strip())
    except SyntaxError:
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        return None
    splitter = _Splitter()
    check = splitter.visit(tree.body[0].test)
    if not splitter.fits or not splitter.inputs or _candidate_names(check):
        return None
    ast.fix_missing_locations(check)
    text = ast.unparse(check)
    if (
        isinstance(check, ast.Compare)
        and len(check.ops) == 1
        and isinstance(check.ops[0], ast.Eq)
        and ast.unparse(check.left) == "__v[0]"
        and len(splitter.inputs) == 1
    ):
        try:
            return SplitAssert(tuple(splitter.inputs), text, ast.literal_eval(check.comparators[0]), True)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            pass
    return SplitAssert(tuple(splitter.inputs), text)


def split_humaneval_check(test: str, entry_point: str) -> tuple[list[str], str] | None:
    """HumanEval's ``def check(candidate): assert ...`` as (asserts, setup binding ``candidate``),
    or ``None`` when ``check`` holds anything but asserts (loops, helpers): the fallback then."""
    try:
        tree = ast.parse(test)
    except SyntaxError:
        return None
    checks = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"]
    others = [n for n in tree.body if n not in checks and not isinstance(n, ast.Import | ast.ImportFrom)]
    if len(checks) != 1 or any(not isinstance(n, ast.Assign) for n in others):
        return None
    body = [n for n in checks[0].body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
    if not body or not all(isinstance(n, ast.Assert) for n in body):
        return None
    asserts = [ast.unparse(n) for n in body if not _is_trivial(n)]
    return asserts, f"candidate = {entry_point}\n"


def _is_trivial(node: ast.stmt) -> bool:
    return isinstance(node, ast.Assert) and isinstance(node.test, ast.Constant) and bool(node.test.value)


def _fallback(program: str, limits: SandboxLimits) -> bool:
    return run_python(program, limits=limits).passed


def passes_tests(code: str, setup: str, asserts: Sequence[str], *, timeout_s: float = 5.0) -> bool:
    """Whether ``code`` (then ``setup``) passes every assert, judged outside the candidate's process.

    Raises ``SandboxUnavailable`` when no sandbox can be set up.
    """
    limits = SandboxLimits(timeout_s=timeout_s)
    splits = [split_assert(a) for a in asserts]
    if not asserts or any(s is None for s in splits):
        return _fallback("\n\n".join([code, setup, "\n".join(asserts), ""]), limits)
    fitted = [s for s in splits if s is not None]
    inputs = [text for s in fitted for text in s.inputs]
    evaluation = evaluate_in_sandbox("\n\n".join([code, setup, ""]), inputs, limits=limits)
    if evaluation.outcomes is None or not all(o.ok for o in evaluation.outcomes):
        return False
    values = [o.value for o in evaluation.outcomes]
    checks: list[str] = []
    bound: list[list[object]] = []
    for split in fitted:
        mine, values = values[: len(split.inputs)], values[len(split.inputs) :]
        if split.has_literal:
            if mine[0] != split.literal:  # both sides builtin plain data: the interpreter's own ==
                return False
        else:
            checks.append(split.check)
            bound.append(mine)
    if not checks:
        return True
    # The benchmark's own checks, over the plain values only: nothing of the candidate runs here.
    names = sorted({n.id for c in checks for n in ast.walk(ast.parse(c)) if isinstance(n, ast.Name)})
    prelude = "".join(f"import {n}\n" for n in names if n in sys.stdlib_module_names)
    exprs = [f"bool({_rebind(c, i)})" for i, c in enumerate(checks)]
    verdict = evaluate_in_sandbox(prelude, exprs, inputs=bound, limits=limits)
    return verdict.outcomes is not None and all(o.ok and o.value is True for o in verdict.outcomes)


def _rebind(check: str, index: int) -> str:
    """``check`` with its ``__v`` replaced by ``__v[index]`` (every check sees only its own inputs)."""

    class _Rename(ast.NodeTransformer):
        def visit_Name(self, node: ast.Name) -> ast.AST:
            if node.id != "__v":
                return node
            return ast.Subscript(ast.Name("__v", ast.Load()), ast.Constant(index), ast.Load())

    return ast.unparse(ast.fix_missing_locations(_Rename().visit(ast.parse(check, mode="eval"))))
