"""Supervision boundaries (docs/supervision.md): an unexpected exception injected into a
query's run, a relay attempt, a WebSocket connection's reader or writer, or an HTTP request
ends that query (or connection, or request) alone, with ``internal_error``; it is counted in
``switchboard_internal_errors_total{where}`` and logged once; the gateway serves the next
query normally, and a session streaming on another connection meanwhile is undisturbed.

The failures are injected with ``harness.poison``: the patched function raises only for an
input carrying the marker, the way a real bug is hit by one input. The healthy session's
query is held mid-stream on the ``mock_clock`` until the bad one is over.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import httpx
import msgspec
import pytest
import trio
import trio.testing
from harness import (
    API_VERSION,
    POISON,
    Client,
    chat,
    connect,
    healthy_session,
    internal_errors,
    poison,
)
from test_door import rejected_status
from trio_websocket import ConnectionClosed

import actors.cli.commands
import actors.doors.http
import actors.doors.http_messages
import actors.doors.websocket
import actors.doors.ws_connection
import actors.supervisor.attempt_build
import actors.supervisor.run
from actors.config.settings import Config
from actors.doors.ws_connection import Connection
from actors.gateway import Gateway
from actors.server import Server, run_server
from actors.store.ledger_sessions import LedgerSessions
from emulator import Emulator
from protocol.assembly import MessageAssembler
from protocol.errors import ServiceFailed
from protocol.frames import (
    TERMINAL_FRAMES,
    Aborted,
    Done,
    ErrorFrame,
    EventFrame,
    GatewayFrame,
    Rejected,
    Tombstone,
    encode_frame,
)


def only_terminal(frames: list[GatewayFrame]) -> GatewayFrame:
    """The one terminal frame of a query's frames, last."""
    terminals = [frame for frame in frames if isinstance(frame, TERMINAL_FRAMES)]
    assert terminals == frames[-1:], frames
    return terminals[0]


def assert_internal_error(frame: GatewayFrame, query_id: str) -> None:
    assert isinstance(frame, ErrorFrame) and frame.id == query_id, frame
    assert frame.error.type == "internal_error"
    assert "internal error" in frame.error.message


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.exc_info and record.name.startswith("switchboard")]


async def closed_without_terminal(client: Client) -> ConnectionClosed:
    """Read until the connection closes; no frame read may be a terminal one."""
    while True:
        try:
            frame = await client.receive()
        except ConnectionClosed as closed:
            return closed
        assert not isinstance(frame, TERMINAL_FRAMES), frame


async def next_query_is_served(server: Server, session: str = "s1") -> None:
    async with connect(server, session) as client:
        await client.receive()
        await client.send(type="query", id="next", request=chat("and the next one"))
        assert isinstance(only_terminal(await client.until_terminal("next")), Done)


@pytest.fixture
async def server(nursery: trio.Nursery, config: Config) -> Server:
    config = msgspec.structs.replace(config, http_port=0)
    server: Server = await nursery.start(run_server, config)
    return server


async def test_a_failing_query_run_ends_that_query_alone(
    server: Server, mock_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    poison(monkeypatch, actors.supervisor.attempt_build, "build_request")
    async with healthy_session(server, mock_clock), connect(server) as client:
        await client.receive()
        await client.send(type="query", id="bad", request=chat(POISON))
        assert_internal_error(only_terminal(await client.until_terminal("bad")), "bad")
        await client.send(type="query", id="good", request=chat("the same connection goes on"))
        assert isinstance(only_terminal(await client.until_terminal("good")), Done)
    assert internal_errors(server) == {"query": 1}
    [logged] = tracebacks(caplog)
    assert "query bad" in logged.getMessage()


async def test_a_recursion_error_at_a_relay_decode_point_is_contained_and_charged(
    server: Server, mock_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # What deep JSON raises today: the assembler decodes each event's data.
    poison(monkeypatch, MessageAssembler, "feed", RecursionError)
    async with healthy_session(server, mock_clock), connect(server) as client:
        await client.receive()
        await client.send(type="query", id="bad", request=chat(POISON))
        frames = await client.until_terminal("bad")
        assert_internal_error(only_terminal(frames), "bad")
        # message_start was relayed before the poisoned delta: the attempt is voided first.
        assert any(isinstance(frame, EventFrame) for frame in frames)
        assert isinstance(frames[-2], Tombstone)
        assert "RecursionError" in frames[-1].error.message  # type: ignore[union-attr]
    # What the attempt used reached the ledger, as for any failed attempt.
    summary = await server.gateway.cost("s1")
    assert summary.model_usage["claude-sonnet-4-6"].input_tokens > 0
    # Counted and logged once, where it happened (the query's boundary only says it ended).
    assert internal_errors(server) == {"relay": 1}
    [logged] = tracebacks(caplog)
    assert "query bad attempt 1" in logged.getMessage()
    await next_query_is_served(server)


async def test_a_frame_whose_decoding_fails_is_refused_and_the_connection_goes_on(
    server: Server, mock_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    poison(monkeypatch, actors.doors.ws_connection, "decode_command", RecursionError)
    async with healthy_session(server, mock_clock), connect(server) as client:
        await client.receive()
        await client.send(type="query", id="bad", request=chat(POISON))
        rejected = await client.receive()
        assert isinstance(rejected, Rejected) and rejected.id is None
        assert rejected.error.type == "internal_error"
        await client.send(type="query", id="good", request=chat("still here"))
        assert isinstance(only_terminal(await client.until_terminal("good")), Done)
    assert internal_errors(server) == {"ws_reader": 1}


async def test_a_query_that_fails_to_start_gets_its_one_terminal_error(
    server: Server, mock_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    poison(monkeypatch, Gateway, "start_query")
    async with healthy_session(server, mock_clock), connect(server) as client:
        await client.receive()
        await client.send(type="query", id="bad", request=chat(POISON))
        assert_internal_error(only_terminal(await client.until_terminal("bad")), "bad")
        # The id is free again: it was never in flight.
        await client.send(type="query", id="bad", request=chat("a fresh start"))
        assert isinstance(only_terminal(await client.until_terminal("bad")), Done)
    assert internal_errors(server) == {"ws_reader": 1}


async def test_a_failing_reader_loop_ends_its_connection_with_1011_and_charges_its_queries(
    server: Server, emulator: Emulator, mock_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    poison(monkeypatch, Connection, "_dispatch")
    async with healthy_session(server, mock_clock):
        async with connect(server) as client:
            await client.receive()
            await client.send(type="query", id="held", request=chat("<<emulator:stall:after=3>> held"))
            for _ in range(3):
                assert isinstance(await client.receive(), EventFrame)
            await client.send(type="get_cost", note=POISON)
            frames = await client.until_terminal("held")
            assert isinstance(only_terminal(frames), Aborted)
            with pytest.raises(ConnectionClosed) as closed:
                await client.receive()
            assert closed.value.reason is not None
            assert closed.value.reason.code == 1011
        summary = await server.gateway.cost("s1")
        assert summary.model_usage["claude-sonnet-4-6"].input_tokens > 0
    assert internal_errors(server) == {"ws_reader": 1}
    await next_query_is_served(server)


async def test_a_failing_writer_ends_its_connection_with_1011(
    server: Server, mock_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = encode_frame  # the function ws_connection imported from protocol.frames

    def encode(frame: GatewayFrame) -> bytes:
        if isinstance(frame, Done) and frame.id == "bad":
            raise RuntimeError("injected failure in encode_frame")
        return real(frame)

    monkeypatch.setattr(actors.doors.ws_connection, "encode_frame", encode)
    async with healthy_session(server, mock_clock):
        async with connect(server) as client:
            await client.receive()
            await client.send(type="query", id="bad", request=chat("its done frame cannot be written"))
            closed = await closed_without_terminal(client)
            assert closed.reason is not None
            assert closed.reason.code == 1011
    assert internal_errors(server) == {"ws_writer": 1}
    await next_query_is_served(server)


async def test_a_failing_http_request_gets_a_500_envelope_and_the_door_goes_on(
    server: Server, mock_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    poison(monkeypatch, actors.doors.http_messages, "parse_body", RecursionError)
    async with healthy_session(server, mock_clock), httpx.AsyncClient(headers=API_VERSION, base_url=str(server.http_url)) as http:
        response = await http.post("/v1/messages", json=chat(POISON))
        assert response.status_code == 500
        body = response.json()
        assert body["type"] == "error" and body["error"]["type"] == "api_error"
        assert "internal error" in body["error"]["message"]
        assert body["request_id"] == response.headers["request-id"]
        assert response.headers["x-should-retry"] == "false"
        good = await http.post("/v1/messages", json=chat("the next request"))
        assert good.status_code == 200 and good.json()["type"] == "message"
    assert internal_errors(server) == {"http_request": 1}


async def test_a_query_failing_under_the_http_door_is_a_500_api_error(
    server: Server, mock_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    poison(monkeypatch, MessageAssembler, "feed", RecursionError)
    async with healthy_session(server, mock_clock), httpx.AsyncClient(headers=API_VERSION, base_url=str(server.http_url)) as http:
        response = await http.post("/v1/messages", json=chat(POISON))
        assert response.status_code == 500
        body = response.json()
        assert body["type"] == "error" and body["error"]["type"] == "api_error"
        assert body["request_id"] == response.headers["request-id"]
        assert response.headers["x-should-retry"] == "false"
        good = await http.post("/v1/messages", json=chat("the next request"))
        assert good.status_code == 200
    assert internal_errors(server) == {"relay": 1}


async def test_a_stream_failing_after_content_ends_with_the_api_error_event(
    server: Server, mock_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    poison(monkeypatch, MessageAssembler, "feed", RecursionError)
    async with healthy_session(server, mock_clock), httpx.AsyncClient(headers=API_VERSION, base_url=str(server.http_url)) as http:
        # "Echo: " is relayed (the stream has begun) before the poisoned word is decoded.
        response = await http.post("/v1/messages", json={**chat(POISON), "stream": True})
        assert response.status_code == 200
        events = response.text.strip().split("\n\n")
        assert "content_block_delta" in response.text
        assert events[-1].startswith("event: error\n")
        assert '"type":"api_error"' in events[-1].replace(" ", "")
        good = await http.post("/v1/messages", json={**chat("the next request"), "stream": True})
        assert good.status_code == 200 and "message_stop" in good.text
    assert internal_errors(server) == {"relay": 1}


# --- the process: only what makes the whole service unusable ends it ------------------------


async def failure_of(run: Callable[..., Awaitable[None]]) -> BaseException:
    """What ``run`` ended with (the first of a group), under its own nursery."""
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, trio.TASK_STATUS_IGNORED)
    except BaseExceptionGroup as group:
        failed: BaseException = group
        while isinstance(failed, BaseExceptionGroup):
            failed = failed.exceptions[0]
        return failed
    raise AssertionError("it ended without a failure")


async def test_a_lost_listener_ends_the_whole_server_never_half_alive(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    lost = trio.Event()

    async def listener_that_dies(self: object, *, task_status: trio.TaskStatus[int]) -> None:
        task_status.started(1)
        await lost.wait()
        raise OSError("listening socket lost")

    monkeypatch.setattr(actors.doors.websocket.FrontDoor, "run", listener_that_dies)
    config = msgspec.structs.replace(config, http_port=0)
    urls: list[str] = []

    async def serve_until_lost(task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            server: Server = await nursery.start(run_server, config)
            assert server.http_url is not None
            urls.append(server.http_url)
            async with httpx.AsyncClient(headers=API_VERSION, base_url=server.http_url) as http:
                assert (await http.get("/healthz")).status_code == 200
            lost.set()
            await trio.sleep_forever()

    failed = await failure_of(serve_until_lost)
    assert isinstance(failed, ServiceFailed) and "WebSocket door failed" in str(failed)
    # The HTTP door went with it.
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(headers=API_VERSION, base_url=urls[0]) as http:
            await http.get("/healthz")


async def test_a_door_that_stops_serving_ends_the_server(config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    async def listener_that_returns(self: object, *, task_status: trio.TaskStatus[int]) -> None:
        task_status.started(1)

    monkeypatch.setattr(actors.doors.http.HttpDoor, "run", listener_that_returns)
    config = msgspec.structs.replace(config, http_port=0)

    async def serve(task_status: trio.TaskStatus[None]) -> None:
        await run_server(config)

    failed = await failure_of(serve)
    assert isinstance(failed, ServiceFailed) and "HTTP door stopped serving" in str(failed)


@pytest.mark.parametrize(
    ("raised", "line"),
    [
        (
            ServiceFailed("the WebSocket door failed: OSError('lost')"),
            "switchboard: the WebSocket door failed: OSError('lost')",
        ),
        (RuntimeError("a bug"), "switchboard: internal error: RuntimeError('a bug')"),
    ],
)
def test_serve_exits_non_zero_with_one_line_on_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], raised: Exception, line: str
) -> None:
    async def broken(config: Config, *, task_status: trio.TaskStatus[object]) -> None:
        raise raised

    monkeypatch.setattr(actors.cli.commands, "run_server", broken)
    monkeypatch.setattr(actors.cli.commands, "configure_logging", lambda **kwargs: None)
    with pytest.raises(SystemExit) as exit_info:
        actors.cli.commands.main(["serve", "--port", "0", "--ledger", ":memory:"])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == line


async def test_a_handshake_that_fails_is_answered_500_and_the_door_goes_on(
    server: Server, mock_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    poison(monkeypatch, LedgerSessions, "apply")  # the session cannot be opened
    async with healthy_session(server, mock_clock):
        assert await rejected_status(server.ws_url + "/v1/sessions/" + POISON) == 500
    assert internal_errors(server) == {"actor:CostLedger": 1}
    await next_query_is_served(server)


async def test_an_actor_failure_under_the_http_door_is_counted_once(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    poison(monkeypatch, LedgerSessions, "apply")  # the request's session cannot be opened
    async with httpx.AsyncClient(headers=API_VERSION, base_url=str(server.http_url)) as http:
        response = await http.post("/v1/messages", json=chat(), headers={"x-switchboard-session": POISON})
        assert response.status_code == 500 and response.json()["error"]["type"] == "api_error"
        assert (await http.post("/v1/messages", json=chat())).status_code == 200
    assert internal_errors(server) == {"actor:CostLedger": 1}


async def test_a_deeply_nested_document_ends_only_its_own_request(
    server: Server, mock_clock: trio.testing.MockClock
) -> None:
    # Real input, no injection: today's decoders raise RecursionError on it. Whatever refuses
    # it (the boundary, or a bounded decoder), only its own request ends.
    messages = "[" * 200_000 + "]" * 200_000
    body = '{"model":"claude-sonnet-4-6","max_tokens":5,"messages":' + messages + "}"
    async with healthy_session(server, mock_clock):
        async with connect(server) as client:
            await client.receive()
            await client.ws.send_message('{"type":"query","id":"deep","request":' + body + "}")
            assert isinstance(await client.receive(), Rejected)
            await client.send(type="query", id="next", request=chat("the connection goes on"))
            assert isinstance(only_terminal(await client.until_terminal("next")), Done)
        async with httpx.AsyncClient(headers=API_VERSION, base_url=str(server.http_url)) as http:
            response = await http.post("/v1/messages", content=body)
            assert response.status_code in (400, 500)
            assert response.json()["type"] == "error"
            assert (await http.post("/v1/messages", json=chat())).status_code == 200
