"""The fuzz suite's kit: a gateway on a real ledger file, a scriptable hostile upstream, a
healthy bystander session, and the checks every case ends with.

Every fuzz test is a plain function under ``@given`` that runs one ``trio.run`` per example
(as ``tests/actors/test_cost_ledger.py`` does), so each example gets a fresh gateway, a fresh
ledger file and a fresh upstream: a crash in one example cannot hide in the next. On the real
clock: the ledger file's writes run on a worker thread, which an autojump clock would read as
"everyone is blocked" and leap over. Nothing here waits on a timer; every wait is for a frame
or a response, under a ``fail_after`` backstop so a hang fails the example instead of the run.

What every case checks afterwards (``finish_case``), the fault-containment contract of
``docs/protocol.md`` section 1 ("Every query ends with exactly one of done, aborted or
error"; "A frame the gateway refuses ... disturbs nothing else"):

- the bystander: a query on another session and connection, in flight while the hostile case
  ran (its upstream answer is held open until the case ends), completes with ``done``;
- the gateway is alive: a new connection gets ``ready`` and a fresh query ``done``;
- the ledger is consistent: each session's totals in the CostLedger equal the sums of its
  records in the SQLite file (``read_sessions``, what ``switchboard cost`` reads), and hold
  at least every cost a terminal frame or header reported as recorded.

``SWITCHBOARD_FUZZ_EXAMPLES`` sets the examples per test (default 25, so the suite stays fast
on two cores; above 25 the huge-event test also sends 33 MiB events);
``SWITCHBOARD_FUZZ_SHRINK=1`` shrinks a failing example (slow); pytest's
``--hypothesis-seed=N`` makes a run reproducible. Each test also runs a few explicit
examples first (``@example``): the known crash paths, so they are checked on every run.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import h11
import httpx
import hypothesis
import msgspec
import trio
from harness import Client, chat
from harness import connect as harness_connect
from hypothesis import HealthCheck, Phase, settings

from actors.config.settings import Config, Secret
from actors.server import Server, run_server
from actors.store.stores import read_sessions
from protocol.frames import (
    SESSION_ID,
    TERMINAL_FRAMES,
    Aborted,
    CostFrame,
    Done,
    EventFrame,
    GatewayFrame,
    Ready,
    Rejected,
    decode_frame,
)
from protocol.pricing import usd
from protocol.request_builder import BuildSettings

# Examples per test: modest by default (the suite runs on two shared cores); crank it up with
# the environment for a long hunt.
EXAMPLES: Final = int(os.environ.get("SWITCHBOARD_FUZZ_EXAMPLES", "25"))
# Shrinking a failure re-runs whole gateways hundreds of times (minutes on two cores): off
# unless asked for; every example's report is short anyway (reprs of hostile inputs are cut).
SHRINK: Final = os.environ.get("SWITCHBOARD_FUZZ_SHRINK", "") not in ("", "0")
FUZZ: Final = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    phases=tuple(Phase) if SHRINK else tuple(p for p in Phase if p is not Phase.shrink),
)

# Every case, setup to teardown, ends within this (a hang is a failure, not a stuck suite).
CASE_TIMEOUT: Final = 120.0
# The gateway's upstream timeout: no hostile answer here hangs (each ends by closing its
# connection), so this only bounds the bystander's held answer, which must outlast the
# slowest case (a 33 MiB event in a long hunt takes the gateway many seconds of CPU).
UPSTREAM_TIMEOUT: Final = 100.0
KEY: Final = "sk-ant-fuzz-key-0123456789"
HOSTILE_MODEL: Final = "claude-sonnet-4-6"
# The bystander uses another model: a 529 of a hostile case opens the overload gate of its
# model only (README "No retry storms"), and the bystander must not wait at that gate.
HEALTHY_MODEL: Final = "claude-haiku-4-5"
# The text that marks the bystander's request at the upstream, which holds its answer open
# after the first delta until the case ends.
HEALTHY_TEXT: Final = "healthy bystander 7f3a"
HEALTHY_SESSION: Final = "bystander"
# The largest response head the fake upstream reads, and its read size.
MAX_REQUEST_HEAD: Final = 64 * 1024
READ_SIZE: Final = 64 * 1024


# The test clients take frames as large as the gateway may send (an upstream event of 33 MiB
# is relayed whole); trio-websocket's default is 1 MiB.
CLIENT_MAX_MESSAGE: Final = 128 * 1024 * 1024


def connect(server: Server, session: str) -> AbstractAsyncContextManager[Client]:
    """``harness.connect`` with room for the largest frames."""
    return harness_connect(server, session, max_message_size=CLIENT_MAX_MESSAGE)


# --- the upstream -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One request as the fake upstream saw it: its target and raw body (never decoded: a
    hostile body may be nested too deep for any JSON decoder)."""

    target: str
    body: bytes

    @property
    def streaming(self) -> bool:
        return b'"stream":true' in self.body

    @property
    def counting(self) -> bool:
        return self.target.split("?")[0].endswith("/count_tokens")

    @property
    def healthy(self) -> bool:
        return HEALTHY_TEXT.encode() in self.body


Answer = Callable[[trio.abc.Stream], Awaitable[None]]


def sse_event(kind: str, data: bytes | str) -> bytes:
    payload = data.encode() if isinstance(data, str) else data
    return b"event: " + kind.encode() + b"\ndata: " + payload + b"\n\n"


def head(status: int, content_type: str = "application/json", extra: tuple[str, ...] = ()) -> bytes:
    """A response head for a body delimited by the connection's close."""
    reason = {200: "OK", 301: "Moved", 302: "Found", 307: "Temporary Redirect"}.get(status, "Status")
    lines = [f"HTTP/1.1 {status} {reason}", f"content-type: {content_type}", "connection: close",
             "request-id: req_fake", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def message_json(model: str, text: str = "ok", usage: str = '{"input_tokens":10,"output_tokens":5}') -> str:
    return (
        '{"id":"msg_fake","type":"message","role":"assistant","model":"' + model + '",'
        '"content":[{"type":"text","text":"' + text + '"}],"stop_reason":"end_turn",'
        '"stop_sequence":null,"usage":' + usage + "}"
    )


def healthy_events(model: str, text: str = "ok") -> list[bytes]:
    """A well-formed text answer, one SSE event per item."""
    return [
        sse_event("message_start", '{"type":"message_start","message":{"id":"msg_fake","type":"message",'
                  '"role":"assistant","model":"' + model + '","content":[],"stop_reason":null,'
                  '"stop_sequence":null,"usage":{"input_tokens":10,"output_tokens":1}}}'),
        sse_event("content_block_start", '{"type":"content_block_start","index":0,'
                  '"content_block":{"type":"text","text":""}}'),
        sse_event("content_block_delta", '{"type":"content_block_delta","index":0,'
                  '"delta":{"type":"text_delta","text":"' + text + '"}}'),
        sse_event("content_block_stop", '{"type":"content_block_stop","index":0}'),
        sse_event("message_delta", '{"type":"message_delta","delta":{"stop_reason":"end_turn",'
                  '"stop_sequence":null},"usage":{"output_tokens":5}}'),
        sse_event("message_stop", '{"type":"message_stop"}'),
    ]


def raw(*chunks: bytes) -> Answer:
    """Answer with exactly these bytes, then close."""

    async def write(stream: trio.abc.Stream) -> None:
        for chunk in chunks:
            await stream.send_all(chunk)

    return write


def normal_answer(seen: Seen, model: str = HOSTILE_MODEL) -> Answer:
    if seen.counting:
        return raw(head(200), b'{"input_tokens":12}')
    if seen.streaming:
        return raw(head(200, "text/event-stream"), *healthy_events(model))
    return raw(head(200), message_json(model).encode())


class FakeUpstream:
    """An HTTP/1.1 upstream on loopback that answers each request with whatever ``hostile``
    says (a raw-bytes writer: it may break HTTP itself), one request per connection.

    The bystander's requests (``HEALTHY_TEXT``) get a well-formed answer held open after its
    first delta until ``release`` is set; the rest get ``hostile(seen)``, by default a
    well-formed answer.
    """

    def __init__(self) -> None:
        self.hostile: Callable[[Seen], Answer] = normal_answer
        self.release = trio.Event()
        self.requests: list[Seen] = []

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(functools.partial(trio.serve_tcp, self._serve, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            task_status.started(f"http://127.0.0.1:{port}")

    async def _serve(self, stream: trio.SocketStream) -> None:
        async with stream:
            seen = await self._read_request(stream)
            if seen is None:
                return
            self.requests.append(seen)
            try:
                if seen.healthy:
                    await self._healthy(stream, seen)
                else:
                    await self.hostile(seen)(stream)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the gateway hung up first: that is its right

    async def _read_request(self, stream: trio.SocketStream) -> Seen | None:
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
        target = ""
        body = bytearray()
        while True:
            try:
                event = connection.next_event()
            except h11.RemoteProtocolError:
                return None
            if event is h11.NEED_DATA:
                try:
                    data = await stream.receive_some(READ_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return None
                connection.receive_data(data)
            elif isinstance(event, h11.Request):
                target = event.target.decode("latin-1")
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return Seen(target, bytes(body))
            else:
                return None

    async def _healthy(self, stream: trio.SocketStream, seen: Seen) -> None:
        if not seen.streaming:
            await normal_answer(seen, HEALTHY_MODEL)(stream)
            return
        events = healthy_events(HEALTHY_MODEL, "bystander")
        await stream.send_all(head(200, "text/event-stream") + b"".join(events[:3]))
        with trio.move_on_after(CASE_TIMEOUT):
            await self.release.wait()
        await stream.send_all(b"".join(events[3:]))


# --- the gateway and its ledger ---------------------------------------------------------------


@dataclass
class Stack:
    """A running gateway with both doors, its ledger file and its upstream."""

    server: Server
    upstream: FakeUpstream
    ledger_path: str
    # Per session: what terminal frames and headers reported as recorded, in picodollars.
    reported: dict[str, int] = field(default_factory=dict)

    def report(self, session_id: str, cost_usd: float | None) -> None:
        if cost_usd is not None:
            self.reported[session_id] = self.reported.get(session_id, 0) + round(cost_usd * 1e12)


@contextmanager
def ledger_directory() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="switchboard-fuzz-") as directory:
        yield os.path.join(directory, "ledger.sqlite3")


@asynccontextmanager
async def open_stack(ledger_path: str, **config: Any) -> AsyncIterator[Stack]:
    """The fake upstream and a gateway (WebSocket and HTTP doors) on the ledger file; no
    retries (a hostile answer would be retried for minutes on the real clock)."""
    async with trio.open_nursery() as nursery:
        upstream = FakeUpstream()
        url: str = await nursery.start(upstream.run)
        settings_ = Config(
            base_url=url,
            api_key=Secret(KEY),
            ledger_path=ledger_path,
            http_port=0,
            max_retries=0,
            api_timeout=UPSTREAM_TIMEOUT,
            nonstreaming_timeout=UPSTREAM_TIMEOUT,
            disable_nonessential_traffic=True,
            build=BuildSettings(disable_prompt_caching=True),
        )
        settings_ = msgspec.structs.replace(settings_, **config)
        server: Server = await nursery.start(functools.partial(run_server, settings_))
        try:
            yield Stack(server=server, upstream=upstream, ledger_path=ledger_path)
        finally:
            nursery.cancel_scope.cancel()


def run_case(case: Callable[[Stack], Awaitable[None]], **config: Any) -> None:
    """One example: a fresh stack, the bystander in flight, ``case``, then every check."""

    async def main(path: str) -> None:
        with trio.fail_after(CASE_TIMEOUT):
            async with open_stack(path, **config) as stack, connect(stack.server, HEALTHY_SESSION) as bystander:
                assert isinstance(await bystander.receive(), Ready)
                await bystander.send(type="query", id="h", request=chat(HEALTHY_TEXT, model=HEALTHY_MODEL))
                first = await bystander.receive()  # its first event: in flight from now on
                assert getattr(first, "id", None) == "h", first
                await case(stack)
                stack.upstream.release.set()
                frames = await bystander.until_terminal("h")
                assert isinstance(frames[-1], Done), f"the bystander was disturbed: {frames[-1]!r}"
                stack.report(HEALTHY_SESSION, terminal_cost(frames[-1]))
                await assert_alive(stack)
                await assert_ledger_consistent(stack)

    with ledger_directory() as path:
        trio.run(main, path)


async def assert_alive(stack: Stack) -> None:
    """A new connection is served and a fresh query completes."""
    async with connect(stack.server, "after") as client:
        assert isinstance(await client.receive(), Ready)
        await client.send(type="query", id="after", request=chat("still alive?", model=HEALTHY_MODEL))
        done = (await client.until_terminal("after"))[-1]
        assert isinstance(done, Done), f"the gateway no longer answers: {done!r}"
        stack.report("after", terminal_cost(done))


async def assert_ledger_consistent(stack: Stack) -> None:
    """Every session's totals in the CostLedger equal the sums of its records in the file,
    and hold at least what was reported as recorded (to the micro-dollar)."""
    stored = dict(read_sessions(stack.ledger_path))
    for session_id, totals in stored.items():
        live = await stack.server.gateway.cost(session_id)
        assert live.total_cost_usd == usd(totals.total_pico), (session_id, live, totals)
        for model, usage in live.model_usage.items():
            row = totals.models[model]
            assert (usage.input_tokens, usage.output_tokens) == (row.input_tokens, row.output_tokens)
    for session_id, pico in stack.reported.items():
        held = stored[session_id].total_pico if session_id in stored else 0
        assert held + 1_000_000 > pico, f"session {session_id}: reported {usd(pico)} $, ledger {usd(held)} $"


# --- the hostile query's end ------------------------------------------------------------------


def terminal_cost(frame: GatewayFrame) -> float | None:
    """The cost a terminal frame reports as recorded (None: none). A ``done`` whose
    ``cost_recorded`` is false reported nothing durable; a missing field means recorded."""
    if isinstance(frame, Done):
        return frame.cost_usd if getattr(frame, "cost_recorded", True) else None
    if isinstance(frame, Aborted):
        return frame.cost_usd
    return None


async def receive(client: Client) -> GatewayFrame:
    """The next frame; a frame that is not valid JSON or no frame of docs/protocol.md fails
    the example with its beginning."""
    text = await client.ws.get_message()
    try:
        return decode_frame(text)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise AssertionError(f"the gateway sent a malformed frame ({exc}): {text[:300]!r}") from None


async def barrier(client: Client) -> list[GatewayFrame]:
    """Ask for the session's cost and return every frame before the answer: the gateway
    handles a connection's frames in order, so whatever it answers to the frames sent
    before is in there (a query's later frames may follow)."""
    await client.send(type="get_cost")
    frames: list[GatewayFrame] = []
    while not isinstance(frame := await receive(client), CostFrame):
        frames.append(frame)
    return frames


async def finish_query(
    client: Client, query_id: str, seen: list[GatewayFrame], abort_after_events: int | None = None
) -> GatewayFrame:
    """Read ``query_id``'s frames (those in ``seen`` first) up to its terminal frame, sending
    ``abort`` after that many event frames; then prove that no frame of it follows, up to a
    barrier. Returns the terminal frame."""
    pending = [f for f in seen if getattr(f, "id", None) == query_id]
    frames: list[GatewayFrame] = []
    events = 0
    aborted = False
    while not frames or not isinstance(frames[-1], TERMINAL_FRAMES):
        if abort_after_events is not None and events >= abort_after_events and not aborted:
            await client.send(type="abort", id=query_id)
            aborted = True
        frame = pending.pop(0) if pending else await receive(client)
        if getattr(frame, "id", None) == query_id:
            frames.append(frame)
            events += isinstance(frame, EventFrame)
    after = pending + [f for f in await barrier(client) if getattr(f, "id", None) == query_id]
    # A "rejected" for an abort that crossed the terminal frame answers that abort; any other
    # frame of the query after its terminal frame breaks the contract.
    assert all(isinstance(f, Rejected) for f in after), (frames, after)
    return frames[-1]


# --- the HTTP door's answers -------------------------------------------------------------


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def door_errors() -> Iterator[list[str]]:
    """The HTTP door's errors while the block runs: hypercorn logs a handler's exception
    there instead of raising it (a hostile case may well log warnings: those are fine)."""
    handler = _Collect()
    logger = logging.getLogger("switchboard.httpdoor")
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


def check_answer(stack: Stack, path: str, headers: dict[str, str], response: httpx.Response) -> None:
    """One answer of the HTTP door, checked against the API's shapes."""
    body = response.content
    # Never a status a client acts on but as an answer or an error (a redirect it would follow).
    assert response.status_code == 200 or 400 <= response.status_code <= 599, response.status_code
    assert "location" not in response.headers
    kind = response.headers.get("content-type", "")
    assert kind.startswith(("application/json", "text/event-stream")), (response.status_code, kind, body[:300])
    if kind.startswith("text/event-stream"):
        assert response.status_code == 200
        assert body.endswith(b"\n\n"), body[-300:]
        assert b"event: message_stop" in body or b"event: error" in body, body[-300:]
        return
    decoded = msgspec.json.decode(body)
    assert isinstance(decoded, dict), decoded
    if response.status_code == 200:
        if path.startswith("/v1/messages/count_tokens"):
            assert isinstance(decoded.get("input_tokens"), int), decoded
        else:
            assert decoded.get("type") == "message", decoded
            session = headers.get("x-switchboard-session") or ""
            session = session if SESSION_ID.fullmatch(session) else response.headers["x-switchboard-session"]
            stack.report(session, float(response.headers["x-switchboard-cost-usd"]))
        return
    assert decoded.get("type") == "error" and isinstance(decoded.get("error"), dict), decoded
    assert isinstance(decoded["error"].get("type"), str) and isinstance(decoded["error"].get("message"), str)


def hypothesis_note(text: str) -> None:
    """Say in a failing example's report which case it was (short: never a 100 kB body)."""
    hypothesis.note(text[:300])
