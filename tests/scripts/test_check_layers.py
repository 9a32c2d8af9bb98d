"""scripts/check_layers.py: the layer rules and the import-cycle check, on small trees."""

from __future__ import annotations

from pathlib import Path

import check_layers
from hypothesis import given
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[2]


def tree(root: Path, files: dict[str, str]) -> Path:
    for name in ("actors", "protocol", "emulator"):
        (root / name).mkdir(exist_ok=True)
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    return root


def test_the_repository_is_clean() -> None:
    assert check_layers.check(REPO) == []


def test_a_module_level_cycle_is_reported_on_both_sides(tmp_path: Path) -> None:
    root = tree(tmp_path, {"actors/a.py": "from actors.b import X\n", "actors/b.py": "\n\nimport actors.a\n"})
    assert check_layers.check(root, frozenset()) == [
        "actors/a.py:1: import cycle: actors.a imports actors.b (actors.a, actors.b)",
        "actors/b.py:3: import cycle: actors.b imports actors.a (actors.a, actors.b)",
    ]


def test_type_checking_and_deferred_imports_count(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "actors/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from actors.b import X\n",
            "actors/b.py": "def f() -> None:\n    from actors.c import Y\n",
            "actors/c.py": "from actors import a\n",
        },
    )
    found = check_layers.check(root, frozenset())
    assert len(found) == 3 and all("(actors.a, actors.b, actors.c)" in line for line in found)


def test_a_package_import_is_an_edge_to_the_package_not_its_modules(tmp_path: Path) -> None:
    (tmp_path / "actors" / "messages").mkdir(parents=True)
    root = tree(
        tmp_path,
        {
            "actors/messages/__init__.py": '"""Contracts."""\n',
            "actors/messages/pool.py": "from protocol.wire import J\n",
            "actors/pool.py": "from actors.messages.pool import Lease\n",
            "protocol/wire.py": "J = 1\n",
        },
    )
    assert check_layers.check(root, frozenset()) == []


def test_a_cycle_across_layers_is_found(tmp_path: Path) -> None:
    root = tree(tmp_path, {"emulator/e.py": "from actors.a import X\n", "actors/a.py": "from emulator.e import Y\n"})
    assert [line.split(":")[0] for line in check_layers.check(root, frozenset())] == ["actors/a.py", "emulator/e.py"]


def test_an_allowed_cycle_that_is_gone_is_reported(tmp_path: Path) -> None:
    cycle = frozenset({"actors.a", "actors.b"})
    found = check_layers.check(tree(tmp_path, {"actors/a.py": "X = 1\n"}), frozenset({cycle}))
    assert found == ["scripts/check_layers.py: allowed import cycle gone, remove it: actors.a, actors.b"]


def test_an_allowed_cycle_is_not_reported(tmp_path: Path) -> None:
    root = tree(tmp_path, {"actors/a.py": "from actors.b import X\n", "actors/b.py": "import actors.a\n"})
    assert check_layers.check(root, frozenset({frozenset({"actors.a", "actors.b"})})) == []


@given(st.sets(st.tuples(st.integers(0, 7), st.integers(0, 7)), max_size=30))
def test_cycles_are_exactly_the_nodes_that_reach_each_other(edges: set[tuple[int, int]]) -> None:
    graph: dict[str, dict[str, int]] = {f"m{n}": {} for n in range(8)}
    for a, b in edges:
        if a != b:
            graph[f"m{a}"][f"m{b}"] = 1

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    reachable = {name: reach(name) for name in graph}
    expected = {
        frozenset({m for m in graph if m == name or (m in reachable[name] and name in reachable[m])})
        for name in graph
    }
    assert {frozenset(c) for c in check_layers.cycles(graph)} == {c for c in expected if len(c) > 1}


def test_a_contract_may_not_import_an_actor(tmp_path: Path) -> None:
    (tmp_path / "actors" / "messages").mkdir(parents=True)
    root = tree(
        tmp_path,
        {
            "actors/messages/__init__.py": "",
            "actors/messages/pool.py": "from actors.config.settings import C\n",
            "actors/messages/relay.py": "from actors.messages.pool import Lease\nfrom actors.pool import Pool\n",
            "actors/config/settings.py": "C = 1\n",
            "actors/pool.py": "from actors.messages.pool import Lease\n",
        },
    )
    assert check_layers.check(root, frozenset()) == [
        "actors/messages/relay.py:2: the contract actors.messages.relay imports actors.pool, which uses contracts itself"
    ]
