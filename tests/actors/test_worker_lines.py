"""The parent of ``serve --workers N`` reads each worker's URLs from its stdout
(actors/cli/workers.py ``_Lines``): whatever the chunks, the lines come out whole and in order,
and a line past ``MAX_LINE`` fails instead of growing without bound."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from actors.cli.workers import MAX_LINE, _Lines, worker_command
from protocol.errors import ServiceFailed

LINE = st.text(st.characters(codec="utf-8", exclude_characters="\n"), max_size=40)


async def read_all(chunks: list[bytes]) -> list[str]:
    send, receive = trio.testing.memory_stream_one_way_pair()
    for chunk in chunks:
        await send.send_all(chunk)  # buffered: never blocks
    await send.aclose()
    lines = _Lines(receive)
    found: list[str] = []
    while (line := await lines.next()) is not None:
        found.append(line)
    return found


@given(st.lists(LINE, max_size=5), st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=5))
def test_lines_come_out_whole_whatever_the_chunks(lines: list[str], sizes: list[int]) -> None:
    data = "".join(line + "\n" for line in lines).encode()
    chunks: list[bytes] = []
    at, turn = 0, 0
    while at < len(data):
        size = sizes[turn % len(sizes)]
        chunks.append(data[at : at + size])
        at, turn = at + size, turn + 1
    assert trio.run(read_all, chunks) == lines


def test_a_line_too_long_fails() -> None:
    with pytest.raises(ServiceFailed, match="too long"):
        trio.run(read_all, [b"x" * (MAX_LINE + 1)])


def test_a_worker_runs_the_parents_own_arguments_with_the_count_and_ports_fixed() -> None:
    command = worker_command(["serve", "--port", "0", "--workers", "auto"], 2, 4242, None)
    assert command[1:3] == ["-m", "actors.cli.commands"]
    assert command[-4:] == ["--workers", "2", "--port", "4242"]
    with_http = worker_command(["serve"], 3, 1, 2)
    assert with_http[-6:] == ["--workers", "3", "--port", "1", "--http-port", "2"]
