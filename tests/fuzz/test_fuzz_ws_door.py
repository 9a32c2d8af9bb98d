"""Hostile clients at the WebSocket door (docs/protocol.md section 1), over real loopback
sockets and the real trio-websocket server.

Every refused frame gets exactly one ``rejected`` and disturbs nothing else; a frame that
starts a query ends it with exactly one terminal frame; a frame that breaks the WebSocket
protocol itself (invalid UTF-8 in a text frame) closes that connection with the code
RFC 6455 gives it. After each case the bystander session completes, the gateway serves a
new connection, and the ledger is consistent (``fuzzkit.run_case``).
"""

from __future__ import annotations

import base64
import os
import struct
from typing import Final

import trio
from fuzzkit import (
    FUZZ,
    Stack,
    barrier,
    connect,
    finish_query,
    hypothesis_note,
    receive,
    run_case,
    terminal_cost,
)
from harness import Client
from hostile import Frame, client_frame, deep
from hypothesis import example, given
from hypothesis import strategies as st

from protocol.frames import (
    CostFrame,
    ErrorFrame,
    GatewayFrame,
    Ready,
    Rejected,
    TokenCount,
    decode_frame,
)

# RFC 6455 7.4.1: a text frame whose payload is not UTF-8 closes the connection with 1007.
INVALID_PAYLOAD: Final = 1007
# Per frame, the answer comes within this (a silent gateway fails the example).
ANSWER_TIMEOUT: Final = 20.0


async def expect_answer(client: Client, frame: Frame, stack: Stack) -> None:
    """The gateway's whole answer to one hostile frame, checked against the protocol."""
    before = await barrier(client)
    rejected = [f for f in before if isinstance(f, Rejected)]
    mine: list[GatewayFrame] = [f for f in before if getattr(f, "id", None) == "bad" and not isinstance(f, Rejected)]
    if frame.kind in ("other", "abort") or rejected:
        assert len(rejected) == 1 and not mine, before
        assert rejected[0].error.message, rejected[0]
        # The refused frame's id when it was a string and could be read (a hostile frame's id
        # may be any string; one with a number past msgspec's range cannot be read at all).
        if frame.kind != "other":
            assert rejected[0].id in ("bad", None), rejected[0]
        if frame.kind == "abort":
            assert rejected[0].error.type == "unknown_query"
        return
    if frame.kind == "count":
        if not mine:
            mine = [await receive(client)]
        assert len(mine) == 1 and isinstance(mine[0], (TokenCount, ErrorFrame)), mine
        return
    end = await finish_query(client, "bad", before)
    stack.report("hostile", terminal_cost(end))


@FUZZ
@given(frames=st.lists(client_frame(), min_size=1, max_size=3), binary=st.lists(st.booleans(), min_size=3, max_size=3))
@example([Frame(deep(100_000, "array"), "other")], [False, False, False])
@example([Frame('{"type":"query","id":"bad","request":{"model":"claude-sonnet-4-6","max_tokens":64,'
                '"messages":[{"role":"user","content":"hi"}],"metadata":' + deep(900, "object") + "}}", "query")],
         [True, False, False])
def test_hostile_frames_are_refused_or_end_their_query_once(frames: list[Frame], binary: list[bool]) -> None:
    async def case(stack: Stack) -> None:
        async with connect(stack.server, "hostile") as client:
            assert isinstance(await client.receive(), Ready)
            for frame, as_bytes in zip(frames, binary, strict=False):
                hypothesis_note(repr(frame))
                with trio.fail_after(ANSWER_TIMEOUT):
                    await client.ws.send_message(frame.text.encode() if as_bytes else frame.text)
                    await expect_answer(client, frame, stack)

    run_case(case)


@FUZZ
@given(payload=st.binary(min_size=1, max_size=4096))
def test_random_bytes_in_a_binary_frame_are_refused(payload: bytes) -> None:
    async def case(stack: Stack) -> None:
        async with connect(stack.server, "hostile") as client:
            assert isinstance(await client.receive(), Ready)
            await client.ws.send_message(payload)
            with trio.fail_after(ANSWER_TIMEOUT):
                before = await barrier(client)
            assert [type(f) for f in before] == [Rejected], before

    run_case(case)


# --- below trio-websocket's client: raw frames ------------------------------------------------


def client_frame_bytes(opcode: int, payload: bytes) -> bytes:
    """One final, masked client frame (RFC 6455 5.2)."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


class RawSocket:
    """A WebSocket client speaking frames by hand, to send what no library will."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def _need(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise EOFError(bytes(self.buffer))
            self.buffer += chunk
        taken = bytes(self.buffer[:n])
        del self.buffer[:n]
        return taken

    async def handshake(self, host: str, port: int, path: str) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket", "Connection: Upgrade",
                 f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
        await self.stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
        while b"\r\n\r\n" not in self.buffer:
            chunk = await self.stream.receive_some(65536)
            assert chunk, "closed during the handshake"
            self.buffer += chunk
        head, _, rest = bytes(self.buffer).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        self.buffer = bytearray(rest)

    async def frame(self) -> tuple[int, bytes]:
        """The next server frame: (opcode, payload); servers never mask."""
        first, second = await self._need(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self._need(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self._need(8))
        return first & 0x0F, await self._need(length)


# Valid text around one byte sequence UTF-8 forbids (a stray continuation byte, an overlong
# form, a surrogate, a truncated sequence, a byte never used).
INVALID_UTF8: Final = st.tuples(
    st.text(max_size=100).map(str.encode),
    st.sampled_from([b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\x80", b"\xf8\x88\x80\x80\x80", b"\xe2\x82"]),
    st.binary(max_size=100),
).map(b"".join).filter(lambda b: not _is_utf8(b))


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@FUZZ
@given(payload=INVALID_UTF8)
def test_invalid_utf8_in_a_text_frame_closes_only_that_connection(payload: bytes) -> None:
    """RFC 6455 8.1 fails such a connection with 1007. trio-websocket (through wsproto's
    parse failure) closes the TCP connection without a close frame instead: either is
    accepted here, and the session and every other connection stay as they were."""

    async def case(stack: Stack) -> None:
        host, _, port = stack.server.ws_url.removeprefix("ws://").rpartition(":")
        async with await trio.open_tcp_stream(host, int(port)) as stream:
            raw = RawSocket(stream)
            await raw.handshake(host, int(port), "/v1/sessions/hostile")
            with trio.fail_after(ANSWER_TIMEOUT):
                opcode, _ = await raw.frame()
                assert opcode == 0x1  # ready
                await stream.send_all(client_frame_bytes(0x1, payload))
                try:
                    while (frame := await raw.frame())[0] != 0x8:
                        assert frame[0] != 0x1 or not isinstance(decode_frame(frame[1]), Rejected)
                    (code,) = struct.unpack("!H", frame[1][:2])
                    assert code == INVALID_PAYLOAD, frame
                except (EOFError, trio.BrokenResourceError):
                    pass
        # The session itself is fine: a new connection resumes it.
        async with connect(stack.server, "hostile") as client:
            ready = await client.receive()
            assert isinstance(ready, Ready) and ready.resumed
            assert [type(f) for f in await barrier(client)] == []

    run_case(case)


@FUZZ
@given(frames=st.lists(st.tuples(st.sampled_from([0x0, 0x3, 0x4, 0x9, 0xA, 0xB, 0xF]), st.binary(max_size=125)), min_size=1, max_size=4))
def test_reserved_and_stray_opcodes_never_reach_another_session(frames: list[tuple[int, bytes]]) -> None:
    """Continuation frames with nothing to continue, reserved opcodes, pings and pongs: the
    connection may be closed for a protocol error; nothing else is disturbed."""

    async def case(stack: Stack) -> None:
        host, _, port = stack.server.ws_url.removeprefix("ws://").rpartition(":")
        async with await trio.open_tcp_stream(host, int(port)) as stream:
            raw = RawSocket(stream)
            await raw.handshake(host, int(port), "/v1/sessions/hostile")
            with trio.fail_after(ANSWER_TIMEOUT):
                assert (await raw.frame())[0] == 0x1
                try:
                    for opcode, payload in frames:
                        await stream.send_all(client_frame_bytes(opcode, payload))
                    await stream.send_all(client_frame_bytes(0x1, b'{"type":"get_cost"}'))
                    while True:
                        opcode, body = await raw.frame()
                        if opcode == 0x8:
                            (code,) = struct.unpack("!H", body[:2])
                            assert code in (1002, 1007), body  # a protocol error, said so
                            break
                        if opcode == 0x1 and isinstance(decode_frame(body), CostFrame):
                            break  # the stray frames were ignored (pings, pongs)
                except (trio.BrokenResourceError, EOFError):
                    pass  # closed at once: allowed for a protocol error

    run_case(case)

