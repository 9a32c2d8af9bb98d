#!/usr/bin/env python3
"""Report code that crosses the layer lines (README "Architecture"; protocol/ is pure).

protocol/ is the functional core: no I/O, no clock, no random source, no environment.
actors/ is the trio shell: no asyncio, no blocking sleeps.
No import cycles among the modules of actors/, protocol/ and emulator/: every import of one
of them counts, at module level, under ``if TYPE_CHECKING:`` and deferred into a function
alike (a deferred import hides a cycle from Python, not from the reader). An actor's users
import its contract (``actors/messages/``), not the actor, and a contract imports no module
that uses contracts (an actor, a door, the Gateway).
Prints one line per finding and exits 0 always; `./dev check` fails when it prints anything.

Usage: check_layers.py [REPO_ROOT]   (default: the current directory)
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

PURE_BANNED = {
    "trio", "trio_websocket", "httpx", "hypercorn", "sqlite3", "socket", "asyncio",
    "threading", "subprocess", "random", "time", "botocore", "google", "azure",
}
SHELL_BANNED = {"asyncio", "requests"}
# Cycles known and allowed, each as the set of its modules; one that no longer exists is
# reported too, so the list only shrinks.
ALLOWED_CYCLES: frozenset[frozenset[str]] = frozenset()


def imported_roots(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def attribute_uses(tree: ast.AST, owner: str, attr: str) -> list[int]:
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr == attr
        and isinstance(node.value, ast.Name)
        and node.value.id == owner
    ]


# The actors' contracts: each actor's messages (actors/messages/__init__.py).
CONTRACTS = "actors.messages"


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def own_imports(tree: ast.AST, modules: set[str]) -> dict[str, int]:
    """The modules of ours that ``tree`` imports anywhere (first line of each)."""
    found: dict[str, int] = {}

    def add(name: str, lineno: int) -> None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name:
            found.setdefault(name, lineno)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                add(full if full in modules else node.module, node.lineno)
    return found


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm,
    iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph[succ]))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def import_graph(trees: dict[str, tuple[Path, ast.AST]]) -> dict[str, dict[str, int]]:
    """Each module's imports of the others (first line of each), itself left out."""
    modules = set(trees)
    graph = {name: own_imports(tree, modules) for name, (_, tree) in trees.items()}
    for name, edges in graph.items():
        edges.pop(name, None)
    return graph


def check_contracts(root: Path, trees: dict[str, tuple[Path, ast.AST]], graph: dict[str, dict[str, int]]) -> list[str]:
    """A contract module (``actors/messages/``) is a leaf: it imports other contracts and
    modules that use no contract (types, config, protocol/), never an actor or its users."""
    users = {name for name, edges in graph.items() if any(t.startswith(CONTRACTS + ".") for t in edges)}
    findings = []
    for name in sorted(graph):
        if not name.startswith(CONTRACTS + "."):
            continue
        for target, lineno in sorted(graph[name].items()):
            if not target.startswith(CONTRACTS) and target in users:
                path = trees[name][0].relative_to(root)
                findings.append(f"{path}:{lineno}: the contract {name} imports {target}, which uses contracts itself")
    return findings


def check_cycles(
    root: Path,
    trees: dict[str, tuple[Path, ast.AST]],
    graph: dict[str, dict[str, int]],
    allowed: frozenset[frozenset[str]],
) -> list[str]:
    findings = []
    seen = set()
    for component in sorted(cycles(graph)):
        seen.add(frozenset(component))
        if frozenset(component) in allowed:
            continue
        members = set(component)
        for name in component:
            path = trees[name][0].relative_to(root)
            for target, lineno in sorted(graph[name].items()):
                if target in members:
                    findings.append(f"{path}:{lineno}: import cycle: {name} imports {target} ({', '.join(component)})")
    for gone in sorted(allowed - seen, key=sorted):
        findings.append(f"scripts/check_layers.py: allowed import cycle gone, remove it: {', '.join(sorted(gone))}")
    return findings


def check(root: Path, allowed: frozenset[frozenset[str]] = ALLOWED_CYCLES) -> list[str]:
    findings = []
    trees: dict[str, tuple[Path, ast.AST]] = {}
    for layer, banned in (("protocol", PURE_BANNED), ("actors", SHELL_BANNED)):
        for path in sorted((root / layer).rglob("*.py")):
            rel = path.relative_to(root)
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"), str(rel))
            except SyntaxError as exc:
                findings.append(f"{rel}:{exc.lineno}: does not parse: {exc.msg}")
                continue
            trees[module_name(root, path)] = (path, tree)
            for lineno, name in imported_roots(tree):
                if name in banned:
                    findings.append(f"{rel}:{lineno}: {layer}/ imports {name}")
                if layer == "protocol" and name == "actors":
                    findings.append(f"{rel}:{lineno}: protocol/ depends on actors/ (the arrow points the other way)")
            if layer == "protocol":
                for lineno in attribute_uses(tree, "os", "environ") + attribute_uses(tree, "os", "getenv"):
                    findings.append(f"{rel}:{lineno}: protocol/ reads the environment (Config does that, once)")
            else:
                for lineno in attribute_uses(tree, "time", "sleep"):
                    findings.append(f"{rel}:{lineno}: blocking time.sleep in the trio shell")
    for path in sorted((root / "emulator").rglob("*.py")):
        try:
            trees[module_name(root, path)] = (path, ast.parse(path.read_text(encoding="utf-8"), str(path)))
        except SyntaxError as exc:
            findings.append(f"{path.relative_to(root)}:{exc.lineno}: does not parse: {exc.msg}")
    graph = import_graph(trees)
    return findings + check_cycles(root, trees, graph, allowed) + check_contracts(root, trees, graph)


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd()
    for line in check(root):
        print(line)


if __name__ == "__main__":
    main()
