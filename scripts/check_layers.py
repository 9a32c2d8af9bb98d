#!/usr/bin/env python3
"""Report code that crosses the layer lines (README "Architecture"; protocol/ is pure).

protocol/ is the functional core: no I/O, no clock, no random source, no environment.
actors/ is the trio shell: no asyncio, no blocking sleeps.
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


def check(root: Path) -> list[str]:
    findings = []
    for layer, banned in (("protocol", PURE_BANNED), ("actors", SHELL_BANNED)):
        for path in sorted((root / layer).rglob("*.py")):
            rel = path.relative_to(root)
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"), str(rel))
            except SyntaxError as exc:
                findings.append(f"{rel}:{exc.lineno}: does not parse: {exc.msg}")
                continue
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
    return findings


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd()
    for line in check(root):
        print(line)


if __name__ == "__main__":
    main()
