"""Mutation testing of ``protocol/``'s rule modules (docs/testing.md "Mutation testing").

Each mutant is one small change to one module's syntax tree (a comparison, an arithmetic or
boolean operator, a number, ``not``, ``max``/``min``); the module's tests run against it and
should fail ("killed"); a mutant they pass "survived" and names a rule no test pins down.

Fast on 2 cores: the third-party libraries are imported once, then each mutant runs in a
forked child that loads the mutated module from memory (an import hook: the files on disk
never change) and runs only the tests of that module (``TESTS``), stopping at the first
failure. A child past its time limit counts as killed (the mutant hangs).

    python scripts/mutation.py                      # every module in TESTS
    python scripts/mutation.py overload retry       # some of them
    python scripts/mutation.py --list overload      # the mutants, without running
    python scripts/mutation.py --survivors run.jsonl retry  # rerun what survived there

Prints one line per surviving mutant and the score; ``--json FILE`` writes every result.
"""

from __future__ import annotations

import argparse
import ast
import copy
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Final

ROOT: Final = Path(__file__).resolve().parent.parent

# The rule modules and the test files that pin them down.
TESTS: Final[dict[str, tuple[str, ...]]] = {
    "retry": ("test_retry.py", "test_retry_edges.py", "test_overload.py"),
    "overload": ("test_overload.py",),
    "budget": ("test_budget.py", "test_budget_edges.py"),
    "pricing": ("test_pricing.py", "test_budget.py", "test_ledger.py"),
    "recovery": ("test_recovery.py",),
    "caching": ("test_cache_break.py", "test_request_builder.py", "test_caching_edges.py"),
    "betas": ("test_request_builder.py", "test_catalog.py"),
    "admission": ("test_admission_rules.py",),
    "estimate": ("test_estimate.py",),
}

_COMPARE: Final[dict[type[ast.cmpop], type[ast.cmpop]]] = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In,
    ast.Is: ast.IsNot, ast.IsNot: ast.Is,
}  # fmt: skip
_ARITH: Final[dict[type[ast.operator], type[ast.operator]]] = {
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
    ast.FloorDiv: ast.Div, ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult,
}  # fmt: skip
_SWAPPED_CALLS: Final = {"max": "min", "min": "max"}
# Cases per hypothesis property in a mutant's run (see ``_child``).
MAX_EXAMPLES: Final = 25


@dataclass(frozen=True)
class Mutant:
    module: str
    index: int
    line: int
    change: str


@dataclass(frozen=True)
class Result:
    mutant: Mutant
    outcome: str  # "killed", "survived", "timeout"
    seconds: float


class _Sites(ast.NodeTransformer):
    """Walks a module's tree, numbering each place a mutation applies; with ``target``,
    applies the one numbered so. Annotations and docstrings are left alone."""

    def __init__(self, target: int | None = None) -> None:
        self.target = target
        self.found: list[tuple[int, str]] = []

    def _site(self, node: ast.AST, change: str, apply: Callable[[], ast.AST]) -> ast.AST:
        index = len(self.found)
        self.found.append((getattr(node, "lineno", 0), change))
        return apply() if index == self.target else node

    def visit_arg(self, node: ast.arg) -> ast.AST:
        return node

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST:
        if node.value is not None:
            node.value = self.visit(node.value)
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        node.body = [self.visit(statement) for statement in node.body]
        node.decorator_list = [self.visit(d) for d in node.decorator_list]
        node.args.defaults = [self.visit(d) for d in node.args.defaults]
        node.args.kw_defaults = [d if d is None else self.visit(d) for d in node.args.kw_defaults]
        return node

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        node.body = [self.visit(statement) for statement in node.body]  # not its keywords
        return node

    def visit_Expr(self, node: ast.Expr) -> ast.AST:
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return node  # a docstring
        return self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)
        for i, op in enumerate(node.ops):
            other = _COMPARE.get(type(op))
            if other is not None:
                node = self._mutate_op(node, i, other)  # type: ignore[assignment]
        return node

    def _mutate_op(self, node: ast.Compare, i: int, other: type[ast.cmpop]) -> ast.AST:
        def apply() -> ast.AST:
            node.ops[i] = other()
            return node

        change = f"{type(node.ops[i]).__name__} -> {other.__name__}"
        return self._site(node, change, apply)

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        return self._arith(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.AST:
        self.generic_visit(node)
        return self._arith(node)

    def _arith(self, node: ast.BinOp | ast.AugAssign) -> ast.AST:
        other = _ARITH.get(type(node.op))
        if other is None:
            return node

        def apply() -> ast.AST:
            node.op = other()
            return node

        return self._site(node, f"{type(node.op).__name__} -> {other.__name__}", apply)

    def visit_BoolOp(self, node: ast.BoolOp) -> ast.AST:
        self.generic_visit(node)
        other: type[ast.boolop] = ast.Or if isinstance(node.op, ast.And) else ast.And

        def apply() -> ast.AST:
            node.op = other()
            return node

        return self._site(node, f"{type(node.op).__name__} -> {other.__name__}", apply)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        self.generic_visit(node)
        if not isinstance(node.op, ast.Not | ast.USub):
            return node
        return self._site(node, f"drop {type(node.op).__name__}", lambda: node.operand)

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        value = node.value
        if isinstance(value, bool):
            return self._site(node, f"{value} -> {not value}", lambda: ast.Constant(not value))
        if isinstance(value, int | float):
            new = value + 1 if isinstance(value, int) or value == 0 else value * 2
            return self._site(node, f"{value!r} -> {new!r}", lambda: ast.Constant(new))
        return node

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        if not isinstance(node.func, ast.Name) or node.func.id not in _SWAPPED_CALLS:
            return node
        func = node.func
        other = _SWAPPED_CALLS[func.id]

        def apply() -> ast.AST:
            func.id = other
            return node

        return self._site(node, f"{func.id} -> {other}", apply)


def source_of(module: str) -> tuple[Path, ast.Module]:
    path = ROOT / "protocol" / f"{module}.py"
    return path, ast.parse(path.read_text(), str(path))


def mutants(module: str) -> list[Mutant]:
    _, tree = source_of(module)
    sites = _Sites()
    sites.visit(tree)
    return [Mutant(module, i, line, change) for i, (line, change) in enumerate(sites.found)]


def mutated_source(mutant: Mutant | None, module: str) -> str:
    """The module's source with ``mutant`` applied (None: unchanged, through the same
    round trip, so the baseline runs what the mutants do)."""
    _, tree = source_of(module)
    if mutant is not None:
        tree = _Sites(mutant.index).visit(copy.deepcopy(tree))
    return ast.unparse(ast.fix_missing_locations(tree))


class _MutatedModule(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Loads ``name`` from ``source`` instead of its file."""

    def __init__(self, name: str, path: Path, source: str) -> None:
        self.name, self.path, self.source = name, path, source

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.name:
            return None
        return importlib.util.spec_from_file_location(fullname, self.path, loader=self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        exec(compile(self.source, str(self.path), "exec"), module.__dict__)


def _child(module: str, source: str) -> int:
    """In the forked child: run the module's tests against ``source``; pytest's exit code."""
    import pytest
    from hypothesis import settings

    # Fewer generated cases per property than the suite's: a mutant that breaks a rule
    # usually fails on the first few, and the run must fit its budget.
    settings.register_profile("mutation", max_examples=MAX_EXAMPLES, deadline=None)
    settings.load_profile("mutation")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    sys.meta_path.insert(0, _MutatedModule(f"protocol.{module}", ROOT / "protocol" / f"{module}.py", source))
    tests = [str(ROOT / "tests" / "protocol" / name) for name in TESTS[module]]
    args = ["-x", "-q", "-W", "ignore::pytest.PytestAssertRewriteWarning", "-p", "no:randomly", "-p", "no:cacheprovider", "-o", "timeout=0", *tests]
    return int(pytest.main(args))


def run_one(module: str, source: str, limit: float) -> tuple[int | None, float]:
    """Fork, run the tests against ``source``; (exit code or None on timeout, seconds)."""
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            code = _child(module, source)
        except BaseException:
            import traceback

            traceback.print_exc(file=sys.__stderr__)
        finally:
            os._exit(code)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), time.monotonic() - started
        if time.monotonic() - started > limit:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None, time.monotonic() - started
        time.sleep(0.02)


def run_module(module: str, only: set[int] | None = None) -> Iterator[Result]:
    """Run the module's mutants (``only``: those indices) against its tests."""
    code, baseline = run_one(module, mutated_source(None, module), limit=600.0)
    if code != 0:
        raise SystemExit(f"{module}: the tests fail without a mutant (exit {code})")
    limit = baseline * 3 + 10
    for mutant in mutants(module):
        if only is not None and mutant.index not in only:
            continue
        code, seconds = run_one(module, mutated_source(mutant, module), limit)
        outcome = "timeout" if code is None else "survived" if code == 0 else "killed"
        yield Result(mutant, outcome, seconds)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", default=list(TESTS), help="modules of protocol/ (default: all in TESTS)")
    parser.add_argument("--list", action="store_true", help="list the mutants, run nothing")
    parser.add_argument("--json", type=Path, help="write every result to this file (JSON lines)")
    parser.add_argument(
        "--survivors", type=Path, help="run only the mutants that survived in this earlier --json file"
    )
    args = parser.parse_args(argv)
    unknown = [m for m in args.modules if m not in TESTS]
    if unknown:
        parser.error(f"no tests known for {unknown}: add them to TESTS")
    if args.list:
        for module in args.modules:
            for m in mutants(module):
                print(f"{module}.py:{m.line} #{m.index} {m.change}")
        return 0
    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(ROOT))
    # The libraries every child needs, imported once (never protocol/ itself: each child
    # imports it afresh, with its mutant).
    import msgspec  # noqa: F401
    import pytest  # noqa: F401
    import trio  # noqa: F401

    again: dict[str, set[int]] | None = None
    if args.survivors is not None:
        again = {}
        for line in args.survivors.read_text().splitlines():
            earlier = json.loads(line)
            if earlier["outcome"] == "survived":
                again.setdefault(earlier["module"], set()).add(earlier["index"])
    out = args.json.open("w") if args.json else None
    totals: dict[str, int] = {"killed": 0, "survived": 0, "timeout": 0}
    started = time.monotonic()
    for module in args.modules:
        counts = {"killed": 0, "survived": 0, "timeout": 0}
        for result in run_module(module, None if again is None else again.get(module, set())):
            counts[result.outcome] += 1
            if result.outcome == "survived":
                m = result.mutant
                print(f"survived: protocol/{module}.py:{m.line} #{m.index} {m.change}", flush=True)
            if out is not None:
                out.write(json.dumps({**asdict(result.mutant), "outcome": result.outcome, "seconds": round(result.seconds, 2)}) + "\n")
                out.flush()
        total = sum(counts.values())
        print(f"{module}: {total - counts['survived']}/{total} killed ({counts['timeout']} by timeout)", flush=True)
        for key, value in counts.items():
            totals[key] += value
    total = sum(totals.values())
    killed = total - totals["survived"]
    print(f"score: {killed}/{total} killed ({100 * killed / max(total, 1):.1f}%) in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
