"""The error tree drawn in protocol/errors.py is the one the classes make: every exception
class of protocol/ and actors/ is on it, under its real base, with its module named."""

from __future__ import annotations

import importlib
import pkgutil
import re
from dataclasses import dataclass, field

import actors
import protocol
import protocol.errors

_NODE = re.compile(r"^(?P<indent>[\s│]*)(?:[├└]── )?(?P<name>[\w.]+)\s{2,}(?P<text>.*)$")


@dataclass
class Node:
    name: str
    parent: str | None
    text: list[str] = field(default_factory=list)


def drawn() -> dict[str, Node]:
    """The drawing's classes (last name part), each with its parent and its description."""
    doc = protocol.errors.__doc__ or ""
    lines = doc.split("::\n\n", 1)[1].splitlines()
    end = next(i for i, line in enumerate(lines) if line.strip() and not line.startswith("    "))
    nodes: dict[str, Node] = {}
    path: list[str] = []
    last: Node | None = None
    for line in lines[:end]:
        if not line.strip():
            path, last = [], None
            continue
        body = line[4:]  # the literal block's indent
        if "── " not in body and not body.startswith((" ", "│")):
            match = _NODE.match(body)
            assert match is not None, line
            name = match["name"].rpartition(".")[2]
            last = nodes[name] = Node(name, None, [match["text"]])
            path = [name]
        elif "── " in body:
            match = _NODE.match(body)
            assert match is not None, line
            depth = len(match["indent"]) // 4 + 1
            name = match["name"]
            path = [*path[:depth], name]
            last = nodes[name] = Node(name, path[depth - 1], [match["text"]])
        else:
            assert last is not None, line
            last.text.append(body.strip(" │"))
    return nodes


def defined() -> dict[str, type[BaseException]]:
    """Every exception class defined in a module of protocol/ or actors/ (private ones too)."""
    found: dict[str, type[BaseException]] = {}
    for package in (protocol, actors):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            module = importlib.import_module(info.name)
            for value in vars(module).values():
                if isinstance(value, type) and issubclass(value, BaseException) and value.__module__ == info.name:
                    assert value.__name__ not in found, f"two exception classes named {value.__name__}"
                    found[value.__name__] = value
    return found


def test_every_exception_class_is_drawn_under_its_base() -> None:
    nodes, classes = drawn(), defined()
    assert set(classes) == set(nodes) - {"DecodeError"}  # msgspec's, drawn as JsonLimitError's base
    for name, cls in classes.items():
        [base] = cls.__bases__
        assert nodes[name].parent == (None if base is Exception else base.__name__), name


def test_a_class_outside_protocol_errors_names_its_module() -> None:
    nodes = drawn()
    for name, cls in defined().items():
        if cls.__module__ != "protocol.errors":
            where = cls.__module__.replace(".", "/") + ".py"
            assert where in " ".join(nodes[name].text), f"{name}: its line should name {where}"


def test_the_roots_are_ours_or_named_as_foreign() -> None:
    roots = [name for name, node in drawn().items() if node.parent is None]
    assert roots == ["SwitchboardError", "DecodeError"]
    assert protocol.errors.SwitchboardError.__bases__ == (Exception,)


def test_there_is_one_client_gone() -> None:
    assert [name for name in defined() if name == "ClientGone"] == ["ClientGone"]
    assert defined()["ClientGone"] is protocol.errors.ClientGone
