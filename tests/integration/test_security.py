"""Security: ownerless sessions, redacted upstream errors, passwords in URLs, connection
limits of the HTTP door, and what the WebSocket door does with bytes that are not text."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Final

import h11
import httpx
import msgspec
import pytest
import trio
import trio.testing
import wsproto.events
from harness import API_VERSION, chat, clean_env, connect, serve_process
from test_door import rejected_status
from trio_websocket import open_websocket_url
from wsproto import ConnectionType, WSConnection

from actors.cli.commands import main
from actors.config.from_env import config_from_env
from actors.config.settings import Config, Secret
from actors.doors.http_messages import BODY_IDLE_TIMEOUT, KEEP_ALIVE_TIMEOUT
from actors.observe.log import Redactor
from actors.server import Server, run_server
from emulator import Emulator
from protocol.frames import Done, ErrorFrame, RetryFrame, encode_frame

ORPHAN: Final = "orphan"
# The gateway's API key in tests/conftest.py's ``config``.
TEST_KEY: Final = "sk-ant-test-key-0123456789"
PROXY_PASSWORD: Final = "pr0xy-pw"
URL_PASSWORD: Final = "ba5e-pw"
# An upstream error text that echoes the gateway's key, a proxy's and the base URL's password.
ECHO: Final = f"echo {TEST_KEY} {PROXY_PASSWORD} {URL_PASSWORD}"
REDACTED: Final = "echo *** *** ***"
# Passwords in the URLs of the logging tests.
URL_SECRET: Final = "s3cret-in-url"
PROXY_SECRET: Final = "s3cret-of-proxy"


async def test_a_session_without_an_owner_is_refused_once_tokens_are_configured(
    config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = str(tmp_path / "ledger.sqlite3")
    open_config = msgspec.structs.replace(config, ledger_path=ledger, http_port=0)
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(functools.partial(run_server, open_config))
        async with connect(server, ORPHAN) as client:
            await client.receive()
            await client.send(type="query", id="q", request=chat())
            done = (await client.until_terminal("q"))[-1]
        nursery.cancel_scope.cancel()
    assert isinstance(done, Done) and done.cost_usd > 0
    # The same ledger, now with access tokens: no token may open, resume, charge or take
    # over the session created while there were none.
    guarded = msgspec.structs.replace(open_config, access_tokens=(Secret("tok-alice"),))
    async with trio.open_nursery() as nursery:
        server = await nursery.start(functools.partial(run_server, guarded))
        assert await rejected_status(f"{server.ws_url}/v1/sessions/{ORPHAN}", token="tok-alice") == 403
        async with httpx.AsyncClient(headers=API_VERSION, base_url=str(server.http_url), timeout=None) as http:
            refused = await http.post(
                "/v1/messages",
                json=chat(),
                headers={"x-api-key": "tok-alice", "x-switchboard-session": ORPHAN},
            )
        assert refused.status_code == 403
        assert msgspec.json.decode(refused.content)["error"]["type"] == "permission_error"
        assert (await server.gateway.cost(ORPHAN)).total_cost_usd == pytest.approx(done.cost_usd)
        nursery.cancel_scope.cancel()
    # Nothing was charged, and `switchboard cost` still reports the session.
    main(["cost", ORPHAN, "--json", "--ledger", ledger])
    reported = msgspec.json.decode(capsys.readouterr().out)
    assert reported["session_id"] == ORPHAN
    assert reported["total_cost_usd"] == pytest.approx(done.cost_usd)


async def _raw_http(server: Server, request: h11.Request, body: bytes) -> tuple[int, float]:
    """One request over a fresh loopback connection, spoken with h11: its status, and how
    long after the response ended the server closed the connection."""
    assert server.http_url is not None
    host, _, port = server.http_url.removeprefix("http://").rpartition(":")
    conn = h11.Connection(h11.CLIENT)
    async with await trio.open_tcp_stream(host, int(port)) as stream:
        await stream.send_all(conn.send(request) + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
        status = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some())
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.EndOfMessage):
                break
        ended = trio.current_time()
        assert await stream.receive_some() == b"", "the server sent more than one response"
        return status, trio.current_time() - ended


def _request(method: str, target: str, body: bytes, *, close: bool) -> h11.Request:
    headers = [("host", "gateway"), ("content-length", str(len(body))), *API_VERSION.items()]
    if body:
        headers.append(("content-type", "application/json"))
    if close:
        headers.append(("connection", "close"))
    return h11.Request(method=method, target=target, headers=headers)


_EXCHANGES: Final = {
    "GET /healthz": ("GET", "/healthz", b""),
    "POST /v1/messages": ("POST", "/v1/messages", msgspec.json.encode(chat())),
    "POST /v1/messages, streaming": ("POST", "/v1/messages", msgspec.json.encode({**chat(), "stream": True})),
    "POST /v1/messages/count_tokens": (
        "POST", "/v1/messages/count_tokens", msgspec.json.encode({"model": "claude-sonnet-4-6", "messages": chat()["messages"]})
    ),
    "POST, refused": ("POST", "/v1/messages", b"[]"),
}


@pytest.mark.parametrize("exchange", list(_EXCHANGES))
async def test_the_http_door_closes_connections_after_connection_close_and_when_idle(
    nursery: trio.Nursery, config: Config, autojump_clock: trio.testing.MockClock, exchange: str
) -> None:
    server: Server = await nursery.start(
        functools.partial(run_server, msgspec.structs.replace(config, http_port=0))
    )
    method, target, body = _EXCHANGES[exchange]
    with trio.fail_after(1):
        status, after = await _raw_http(server, _request(method, target, body, close=True), body)
    assert status in (200, 400) and after == 0
    # Kept alive, the connection is closed once idle for the keep-alive timeout (virtual time).
    with trio.fail_after(KEEP_ALIVE_TIMEOUT + 1):
        status, after = await _raw_http(server, _request(method, target, body, close=False), body)
    assert status in (200, 400) and after == pytest.approx(KEEP_ALIVE_TIMEOUT)


def _client_frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked client frame (RFC 6455 5.2), built by hand: wsproto refuses to send
    a text frame that is not UTF-8."""
    mask = b"\x37\xfa\x21\x3d"
    assert len(payload) < 126
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


class _RawWebSocket:
    """A WebSocket client on wsproto over a loopback socket, sending hand-made frames."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.pending: list[wsproto.events.Event] = []

    async def next_event(self) -> wsproto.events.Event | None:
        """The next event, or None when the server closed the TCP connection."""
        while not self.pending:
            data = await self.stream.receive_some()
            if not data:
                return None
            self.ws.receive_data(data)
            self.pending.extend(self.ws.events())
        return self.pending.pop(0)

    async def next_frame(self) -> dict[str, object]:
        event = await self.next_event()
        assert isinstance(event, wsproto.events.TextMessage), event
        decoded: dict[str, object] = msgspec.json.decode(event.data)
        return decoded


async def _open_raw(server: Server, session: str) -> _RawWebSocket:
    host, _, port = server.ws_url.removeprefix("ws://").rpartition(":")
    client = _RawWebSocket(await trio.open_tcp_stream(host, int(port)))
    await client.stream.send_all(client.ws.send(wsproto.events.Request(host=host, target=f"/v1/sessions/{session}")))
    assert isinstance(await client.next_event(), wsproto.events.AcceptConnection)
    assert (await client.next_frame())["type"] == "ready"
    return client


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (_client_frame(0x1, b'{"type":"get_cost","x":"\xff"}'), 1007),
        # A client frame without a mask breaks the framing rules (RFC 6455 5.1).
        (bytes([0x81, 19]) + b'{"type":"get_cost"}', 1002),
    ],
    ids=["invalid UTF-8", "unmasked"],
)
async def test_a_text_frame_that_breaks_the_protocol_closes_with_its_code(
    server: Server, frame: bytes, code: int
) -> None:
    client = await _open_raw(server, "bytes")
    async with client.stream:
        await client.stream.send_all(frame)
        closed = await client.next_event()
        assert isinstance(closed, wsproto.events.CloseConnection) and closed.code == code
        assert await client.next_event() is None


async def test_a_binary_frame_is_read_as_utf8_json(server: Server) -> None:
    client = await _open_raw(server, "bytes")
    async with client.stream:
        await client.stream.send_all(_client_frame(0x2, b'{"type":"get_cost"}'))
        assert (await client.next_frame())["type"] == "cost"
        # Not UTF-8: refused like any frame that is not JSON; the connection stays open.
        await client.stream.send_all(_client_frame(0x2, b'{"type":"get_cost","x":"\xff"}'))
        refused = await client.next_frame()
        error = refused["error"]
        assert refused["type"] == "rejected" and isinstance(error, dict) and error["type"] == "bad_frame"
        await client.stream.send_all(_client_frame(0x1, b'{"type":"get_cost"}'))
        assert (await client.next_frame())["type"] == "cost"


@pytest.fixture
def leaky_config(config: Config) -> Config:
    """The gateway with a proxy password and a base-URL password registered (the proxy is for
    https only, so the emulator is reached directly)."""
    return msgspec.structs.replace(
        config,
        base_url=config.base_url.replace("http://", f"http://user:{URL_PASSWORD}@"),
        proxies=(("https", f"http://me:{PROXY_PASSWORD}@127.0.0.1:9"),),
        http_port=0,
    )


def _no_secret(text: str | bytes) -> None:
    text = text if isinstance(text, str) else text.decode()
    for secret in (TEST_KEY, PROXY_PASSWORD, URL_PASSWORD):
        assert secret not in text
    assert REDACTED in text


async def test_upstream_error_text_is_redacted_on_the_websocket_door(
    nursery: trio.Nursery, leaky_config: Config, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    server: Server = await nursery.start(functools.partial(run_server, leaky_config))
    emulator.script(f"529:message={ECHO}", f"400:message={ECHO}", f"400:message={ECHO}")
    async with connect(server) as client:
        await client.receive()
        await client.send(type="query", id="q", request=chat())
        retry, error = await client.until_terminal("q")
        await client.send(type="count_tokens", id="c", request={"model": "claude-sonnet-4-6", "messages": chat()["messages"]})
        counted = await client.receive()
    assert isinstance(retry, RetryFrame) and isinstance(error, ErrorFrame) and isinstance(counted, ErrorFrame)
    for frame in (retry, error, counted):
        assert frame.error.message == REDACTED, frame
        _no_secret(encode_frame(frame))


async def test_upstream_error_text_is_redacted_on_the_http_door(
    nursery: trio.Nursery, leaky_config: Config, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    server: Server = await nursery.start(functools.partial(run_server, leaky_config))
    emulator.script(
        f"400:message={ECHO}",
        f"error_midstream:after=4,type=overloaded_error,message={ECHO}",
        f"400:message={ECHO}",
    )
    async with httpx.AsyncClient(headers=API_VERSION, base_url=str(server.http_url), timeout=None) as http:
        plain = await http.post("/v1/messages", json=chat())
        streamed = await http.post("/v1/messages", json={**chat(), "stream": True})
        counted = await http.post(
            "/v1/messages/count_tokens", json={"model": "claude-sonnet-4-6", "messages": chat()["messages"]}
        )
    assert plain.status_code == 400 and msgspec.json.decode(plain.content)["error"]["message"] == REDACTED
    assert streamed.status_code == 200 and b"event: error\n" in streamed.content
    assert counted.status_code == 400
    for response in (plain, streamed, counted):
        _no_secret(response.content)


def test_every_configured_url_password_is_a_secret_and_urls_are_redacted_by_shape() -> None:
    config = config_from_env(
        {
            "ANTHROPIC_BASE_URL": "http://user:p%40ss-1@gateway.example",
            "ANTHROPIC_BEDROCK_BASE_URL": "https://u:bedrock-pw@bedrock.example",
            "ANTHROPIC_VERTEX_BASE_URL": "https://u:vertex-pw@vertex.example/v1",
            "ANTHROPIC_FOUNDRY_BASE_URL": "https://u:foundry-pw@foundry.example/anthropic",
            "HTTPS_PROXY": "http://me:proxy-pw@proxy.example:3128",
        }
    )
    assert {"p%40ss-1", "p@ss-1", "bedrock-pw", "vertex-pw", "foundry-pw", "proxy-pw"} <= set(config.secrets())
    redact = Redactor().redact
    assert redact("GET http://user:s3cret@127.0.0.1:80/x") == "GET http://user:***@127.0.0.1:80/x"
    assert redact("socks5://:s3cret@proxy:1 and http://bearer:s3cret@h") == "socks5://:***@proxy:1 and http://bearer:***@h"
    assert redact("https://user@host/path?q=a:b@c") == "https://user@host/path?q=a:b@c"


async def test_a_password_in_the_base_url_or_a_proxy_url_never_reaches_a_log(
    nursery: trio.Nursery, config: Config, emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    for name in (None, "httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)
    port = httpx.URL(config.base_url).port
    config = msgspec.structs.replace(
        config,
        base_url=config.base_url.replace("http://", f"http://user:{URL_SECRET}@"),
        # The emulator serves absolute-form requests too: it is the Messages requests' proxy.
        proxies=(("http", config.base_url.replace("http://", f"http://me:{PROXY_SECRET}@")),),
        disable_nonessential_traffic=False,  # the bootstrap fetch too, through the pool's client
        http_port=0,
    )
    server: Server = await nursery.start(functools.partial(run_server, config))
    assert (await server.gateway.bootstrap(settled=True)).settled
    async with connect(server) as client:
        await client.receive()
        await client.send(type="query", id="q", request=chat())
        assert isinstance((await client.until_terminal("q"))[-1], Done)
    async with httpx.AsyncClient(headers=API_VERSION, base_url=str(server.http_url), timeout=None) as http:
        assert (await http.post("/v1/messages", json=chat())).status_code == 200
    lines = [record.getMessage() for record in caplog.records]
    for secret in (URL_SECRET, PROXY_SECRET):
        assert secret not in caplog.text and not any(secret in line for line in lines)
    # Not vacuous: the Messages requests and the bootstrap fetch went through the proxy, and
    # the HTTP client logged its connections.
    proxied = [r for r in emulator.requests if r.path.startswith("http://") and "/v1/messages" in r.path]
    assert len(proxied) == 2 and all(r.headers["proxy-authorization"].startswith("Basic ") for r in proxied)
    assert any(r.path.startswith("http://") and r.path.endswith("/api/claude_cli/bootstrap") for r in emulator.requests)
    assert sum(f"port={port}" in line for line in lines if line.startswith("connect_tcp.started")) >= 2


async def test_a_password_in_the_base_url_never_reaches_the_stderr_of_serve(
    config: Config, emulator: Emulator
) -> None:
    port = httpx.URL(config.base_url).port
    env = clean_env(
        ANTHROPIC_API_KEY=TEST_KEY,
        ANTHROPIC_BASE_URL=config.base_url.replace("http://", f"http://user:{URL_SECRET}@"),
        ANTHROPIC_LOG="debug",
        SWITCHBOARD_DEBUG_HTTP="1",  # the HTTP client's own lines too: they are the ones that leaked
    )
    async with serve_process(env) as served:
        url = await served.read_line()
        # The startup fetches (bootstrap, GET /v1/models) lease from the pool in either order.
        first_two = [await emulator.wait_for_request(n) for n in (0, 1)]
        [bootstrap] = [r for r in first_two if r.path == "/api/claude_cli/bootstrap"]
        await bootstrap.finished.wait()
        async with open_websocket_url(url + "/v1/sessions/logged") as ws:
            assert msgspec.json.decode(await ws.get_message())["type"] == "ready"
            await ws.send_message(msgspec.json.encode({"type": "query", "id": "q", "request": chat()}).decode())
            while msgspec.json.decode(await ws.get_message())["type"] != "done":
                pass
    stderr = bytes(served.stderr).decode()
    assert URL_SECRET not in stderr
    # Not vacuous: the HTTP client's lines were logged (the bootstrap request was answered
    # before the query began; both went through the pool's client).
    assert f"connect_tcp.started host='127.0.0.1' port={port}" in stderr


async def test_a_request_body_that_stops_arriving_gets_408_and_the_connection_closed(
    nursery: trio.Nursery, config: Config, autojump_clock: trio.testing.MockClock
) -> None:
    server: Server = await nursery.start(
        functools.partial(run_server, msgspec.structs.replace(config, http_port=0))
    )
    assert server.http_url is not None
    host, _, port = server.http_url.removeprefix("http://").rpartition(":")
    conn = h11.Connection(h11.CLIENT)
    request = h11.Request(
        method="POST",
        target="/v1/messages",
        headers=[("host", "gateway"), ("content-length", "1000"), *API_VERSION.items()],
    )
    async with await trio.open_tcp_stream(host, int(port)) as stream:
        await stream.send_all(conn.send(request) + conn.send(h11.Data(data=b'{"model": ')))
        sent = trio.current_time()
        with trio.fail_after(BODY_IDLE_TIMEOUT + 1):
            answer = b""
            while chunk := await stream.receive_some():
                answer += chunk
        assert trio.current_time() - sent == pytest.approx(BODY_IDLE_TIMEOUT)
    conn.receive_data(answer)
    response = conn.next_event()
    assert isinstance(response, h11.Response) and response.status_code == 408
    body = conn.next_event()
    assert isinstance(body, h11.Data)
    assert msgspec.json.decode(body.data)["error"]["type"] == "timeout_error"
