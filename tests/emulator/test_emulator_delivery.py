"""How the emulator writes a stream: one event per write with ``write_per_event``, as the API
writes while it generates, and the whole answer in one write without it (the bursty mode).

Every write of the server side is counted by wrapping ``HttpConnection.send`` (the one place
the emulator writes to its socket), over a real loopback connection.
"""

from __future__ import annotations

import socket

import httpx
import pytest
import trio
from emulator_testkit import body, parse_sse

from emulator import Emulator
from emulator.connection import HttpConnection


@pytest.fixture
def sends(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every non-empty write of the emulator, in order; asserts each went to a TCP socket
    with TCP_NODELAY, so that each write leaves as a segment of its own."""
    writes: list[bytes] = []
    original = HttpConnection.send

    async def send(self: HttpConnection, data: bytes) -> None:
        if data:
            stream = self._stream
            assert isinstance(stream, trio.SocketStream)
            assert stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            writes.append(data)
        await original(self, data)

    monkeypatch.setattr(HttpConnection, "send", send)
    return writes


_FIVE_DELTAS = {"x-emulator-deltas": "5"}


def _events_in(write: bytes) -> int:
    return write.count(b"\nevent: ") + write.startswith(b"event: ")


async def test_per_event_writes_each_event_on_its_own(
    client: httpx.AsyncClient, emu: Emulator, sends: list[bytes]
) -> None:
    emu.write_per_event = True
    request = body("one two three four five", stream=True)
    response = await client.post("/v1/messages", json=request, headers=_FIVE_DELTAS)
    events = parse_sse(response.text)
    # message_start, content_block_start, ping, 5 deltas, content_block_stop, message_delta,
    # message_stop: one write each, the head riding with the first, the terminator with the last.
    assert len(events) == 11
    assert len(sends) == len(events)
    assert [_events_in(write) for write in sends] == [1] * len(events)
    assert sends[0].startswith(b"HTTP/1.1 200") and b"event: message_start" in sends[0]
    assert b"event: message_stop" in sends[-1] and sends[-1].endswith(b"0\r\n\r\n")


async def test_without_it_an_unpaced_answer_is_one_write(
    client: httpx.AsyncClient, emu: Emulator, sends: list[bytes]
) -> None:
    request = body("one two three", stream=True)
    response = await client.post("/v1/messages", json=request, headers=_FIVE_DELTAS)
    assert len(sends) == 1
    assert _events_in(sends[0]) == len(parse_sse(response.text)) == 11


async def test_per_event_writes_keep_the_fault_point(
    client: httpx.AsyncClient, emu: Emulator, sends: list[bytes]
) -> None:
    emu.write_per_event = True
    emu.script("overloaded_midstream:after=4")
    response = await client.post("/v1/messages", json=body("one two three", stream=True))
    events = parse_sse(response.text)
    assert [name for name, _ in events][-1] == "error" and len(events) == 5
    # Four events one by one, then the error event with the body's end.
    assert [_events_in(write) for write in sends] == [1, 1, 1, 1, 1]
