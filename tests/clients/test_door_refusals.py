"""The HTTP door's own refusals tell a client not to retry (``x-should-retry: false``).

The same request would get the same answer, and Claude Code retries a 401 unless told not
to (ten times, with backoff): a wrong gateway token must end its run at once
(``test_claude_code.py::test_wrong_token_fails_at_once`` shows it with the real client).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator

import httpx
import msgspec
import pytest
import trio
from claude_code import GATEWAY_TOKEN, Door
from harness import API_VERSION, chat

from actors.config.settings import Config, Secret
from actors.server import Server, run_server
from emulator import Emulator


@pytest.fixture
async def http(door: Door) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=door.url, timeout=None, headers=API_VERSION) as client:
        yield client


async def test_own_refusals_say_do_not_retry(
    http: httpx.AsyncClient, door: Door, emulator: Emulator
) -> None:
    ok = {"x-api-key": GATEWAY_TOKEN}
    answers = {
        "wrong token": await http.post("/v1/messages", json=chat(), headers={"x-api-key": "no"}),
        "no token": await http.post("/v1/messages", json=chat()),
        "body not JSON": await http.post("/v1/messages", content=b"[1, 2", headers=ok),
        "bad session": await http.post(
            "/v1/messages", json=chat(), headers={**ok, "x-switchboard-session": "a b"}
        ),
        "no route": await http.get("/v2/nothing", headers=ok),
        "wrong method": await http.get("/v1/messages", headers=ok),
        "unknown model": await http.get("/v1/models/claude-nothing-1", headers=ok),
    }
    statuses = {name: answer.status_code for name, answer in answers.items()}
    assert statuses == {
        "wrong token": 401,
        "no token": 401,
        "body not JSON": 400,
        "bad session": 400,
        "no route": 404,
        "wrong method": 405,
        "unknown model": 404,
    }
    for name, answer in answers.items():
        assert answer.headers.get("x-should-retry") == "false", name
        assert msgspec.json.decode(answer.content)["type"] == "error", name
    assert emulator.requests == []


async def test_too_large_and_foreign_session_say_do_not_retry(
    nursery: trio.Nursery, config: Config
) -> None:
    tokens = (Secret("tok-alice"), Secret("tok-bob"))
    changed = msgspec.structs.replace(
        config, http_port=0, access_tokens=tokens, max_frame_bytes=4096
    )
    server: Server = await nursery.start(functools.partial(run_server, changed))
    async with httpx.AsyncClient(base_url=str(server.http_url), timeout=None, headers=API_VERSION) as http:
        alice = {"x-api-key": "tok-alice", "x-switchboard-session": "alices"}
        assert (await http.post("/v1/messages", json=chat(), headers=alice)).status_code == 200
        bob = {"x-api-key": "tok-bob", "x-switchboard-session": "alices"}
        foreign = await http.post("/v1/messages", json=chat(), headers=bob)
        too_large = await http.post("/v1/messages", content=b" " * 5000, headers=alice)
    assert (foreign.status_code, too_large.status_code) == (403, 413)
    assert foreign.headers.get("x-should-retry") == "false"
    assert too_large.headers.get("x-should-retry") == "false"


async def test_success_and_retryable_answers_carry_no_such_header(http: httpx.AsyncClient) -> None:
    answer = await http.post("/v1/messages", json=chat(), headers={"x-api-key": GATEWAY_TOKEN})
    assert answer.status_code == 200 and "x-should-retry" not in answer.headers
    health = await http.get("/healthz")
    assert health.status_code == 200 and "x-should-retry" not in health.headers
