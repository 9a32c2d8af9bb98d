"""The dashboard's JSON endpoints (docs/protocol.md, "Dashboard"), against the emulator, with
exact numbers: what ``/v1/switchboard/spend`` and ``/sessions`` answer is what the ledger
file holds (``read_sessions``, the reader of ``switchboard cost``), per token.

Queries go through the HTTP door with httpx on the real clock: no test waits on a timer.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio
from harness import API_VERSION

from actors.config.settings import Config, Secret
from actors.server import Server, run_server
from actors.store.ledger_sessions import owner_digest
from actors.store.stores import read_sessions
from protocol.dashboard import savings_pico, token_label
from protocol.pricing import canonical_model

ALICE, BOB, ADMIN = "tok-alice", "tok-bob", "tok-admin"
SONNET, HAIKU = "claude-sonnet-4-6", "claude-haiku-4-5"
# Over Sonnet 4.6's minimum cacheable length (1024 tokens, emulator/models.py), so the second
# query reads it from the cache.
SYSTEM = "You are a careful assistant. " * 300


def message(text: str, *, model: str = SONNET, cached: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": text}]}
    if cached:
        body["system"] = [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}]
    return body


async def run_queries(http: httpx.AsyncClient) -> None:
    """The scripted load: alice two sessions (one reading the cache), bob one on haiku."""
    plan = [
        (ALICE, "alice-1", message("hello", cached=True)),
        (ALICE, "alice-1", message("hello again", cached=True)),
        (ALICE, "alice-2", message("a second session")),
        (BOB, "bob-1", message("bob here", model=HAIKU)),
    ]
    for token, session, body in plan:
        answer = await http.post(
            "/v1/messages", json=body, headers={"x-api-key": token, "x-switchboard-session": session}
        )
        assert answer.status_code == 200, answer.text


@pytest.fixture
async def ledger(tmp_path: Path) -> Path:
    return tmp_path / "ledger.sqlite3"


@pytest.fixture
async def server(nursery: trio.Nursery, config: Config, ledger: Path) -> Server:
    config = msgspec.structs.replace(
        config,
        http_port=0,
        ledger_path=str(ledger),
        access_tokens=(Secret(ALICE), Secret(BOB)),
        admin_tokens=(Secret(ADMIN),),
    )
    server: Server = await nursery.start(functools.partial(run_server, config))
    return server


@pytest.fixture
async def http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.http_url or "", timeout=30, headers=API_VERSION) as client:
        yield client


async def get(http: httpx.AsyncClient, path: str, token: str | None) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    answer = await http.get(path, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    result: dict[str, Any] = answer.json()
    return result


async def test_spend_and_sessions_are_what_the_ledger_holds_per_token(
    http: httpx.AsyncClient, ledger: Path
) -> None:
    await run_queries(http)
    stored = dict(read_sessions(str(ledger)))
    assert set(stored) == {"alice-1", "alice-2", "bob-1"}
    alice_pico = stored["alice-1"].total_pico + stored["alice-2"].total_pico
    bob_pico = stored["bob-1"].total_pico
    reads = stored["alice-1"].models[SONNET].cache_read_input_tokens
    assert reads > 0  # the second query read the system prompt from the cache

    alice = await get(http, "/v1/switchboard/spend?bucket=hour", ALICE)
    assert alice["totals"]["cost_pico"] == alice_pico
    assert alice["totals"]["messages"] == 3
    assert [s["key"] for s in alice["series"]] == [SONNET]
    assert sum(alice["series"][0]["cost_usd"]) == pytest.approx(alice_pico / 1e12)
    assert alice["totals"]["cache_read_input_tokens"] == reads
    today = alice["buckets"][-1][:10]
    assert alice["totals"]["cache_savings_pico"] == savings_pico(SONNET, today, reads)
    writes = sum(stored[s].models[SONNET].cache_creation_input_tokens for s in ("alice-1", "alice-2"))
    inputs = sum(stored[s].models[SONNET].input_tokens for s in ("alice-1", "alice-2"))
    assert alice["totals"]["cache_hit_rate"] == pytest.approx(reads / (inputs + reads + writes))

    bob = await get(http, "/v1/switchboard/spend?by=token&bucket=day", BOB)
    assert bob["totals"]["cost_pico"] == bob_pico
    assert [s["key"] for s in bob["series"]] == [token_label(owner_digest(BOB))]
    assert [m["model"] for m in bob["models"]] == [canonical_model(HAIKU)]
    assert bob["totals"]["cache_savings_pico"] == 0 and bob["totals"]["cache_hit_rate"] == 0

    admin = await get(http, "/v1/switchboard/spend?by=token", ADMIN)
    assert admin["totals"]["cost_pico"] == alice_pico + bob_pico
    assert {s["key"]: s["total_usd"] for s in admin["series"]} == {
        token_label(owner_digest(ALICE)): pytest.approx(alice_pico / 1e12),
        token_label(owner_digest(BOB)): pytest.approx(bob_pico / 1e12),
    }

    top = await get(http, "/v1/switchboard/sessions?top=10", ALICE)
    assert [(s["session_id"], s["cost_pico"]) for s in top["sessions"]] == sorted(
        [("alice-1", stored["alice-1"].total_pico), ("alice-2", stored["alice-2"].total_pico)],
        key=lambda item: -item[1],
    )
    assert [(t["token"], t["sessions"], t["cost_pico"]) for t in top["tokens"]] == [
        (token_label(owner_digest(ALICE)), 2, alice_pico)
    ]
    bobs = await get(http, "/v1/switchboard/sessions", BOB)
    assert [s["session_id"] for s in bobs["sessions"]] == ["bob-1"]
    everyone = await get(http, "/v1/switchboard/sessions?top=2", ADMIN)
    assert len(everyone["sessions"]) == 2
    assert {t["token"] for t in everyone["tokens"]} == {
        token_label(owner_digest(ALICE)), token_label(owner_digest(BOB))
    }

    live = await get(http, "/v1/switchboard/live", ADMIN)
    assert live["active_queries"] == 0 and live["live_sessions"] == []
    assert live["last_hour"]["queries"] == {"done": 4}
    assert live["overloaded_now"] == []
    health = await get(http, "/v1/switchboard/health", ALICE)
    assert health["status"] == "ok" and health["ledger"]["healthy"] is True
    assert health["store"]["readable"] is True
    assert await get(http, "/v1/switchboard/budgets", BOB) == {"budgets": []}


async def test_a_live_session_is_listed_for_its_owner_only(
    http: httpx.AsyncClient, nursery: trio.Nursery
) -> None:
    streaming = trio.Event()
    release = trio.Event()

    async def stalled_stream() -> None:
        body = {**message("<<emulator:stall:after=6>> keep me open"), "stream": True}
        headers = {"x-api-key": ALICE, "x-switchboard-session": "alice-live"}
        async with http.stream("POST", "/v1/messages", json=body, headers=headers) as answer:
            assert answer.status_code == 200
            streaming.set()
            await release.wait()

    with trio.CancelScope() as scope:
        nursery.start_soon(stalled_stream)
        await streaming.wait()
        alice = await get(http, "/v1/switchboard/live", ALICE)
        assert alice["live_sessions"] == ["alice-live"] and alice["live_session_count"] == 1
        assert alice["active_queries"] == 1
        assert (await get(http, "/v1/switchboard/live", BOB))["live_sessions"] == []
        assert (await get(http, "/v1/switchboard/live", ADMIN))["live_sessions"] == ["alice-live"]
        top = await get(http, "/v1/switchboard/sessions", ALICE)
        assert [(s["session_id"], s["live"]) for s in top["sessions"]] == [("alice-live", True)]
        scope.cancel()
    release.set()


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1/switchboard/spend?bucket=week", 400),
        ("/v1/switchboard/spend?by=session", 400),
        ("/v1/switchboard/spend?bucket=hour&since=2000-01-01", 400),
        ("/v1/switchboard/spend?since=not-a-date", 400),
        ("/v1/switchboard/spend?since=2999-01-01", 400),
        ("/v1/switchboard/spend?colour=red", 400),
        ("/v1/switchboard/sessions?top=0", 400),
        ("/v1/switchboard/sessions?top=101", 400),
        ("/v1/switchboard/sessions?top=1e3", 400),
        ("/v1/switchboard/live?x=1", 400),
        ("/v1/switchboard/nothing", 404),
        ("/dashboard/../../etc/passwd", 404),
        ("/dashboard/app.py", 404),
    ],
)
async def test_bad_requests_are_refused(http: httpx.AsyncClient, path: str, status: int) -> None:
    answer = await http.get(path, headers={"authorization": f"Bearer {ADMIN}"})
    assert answer.status_code == status
    assert answer.json()["type"] == "error"


async def test_tokens_are_required_and_the_page_is_not_data(http: httpx.AsyncClient) -> None:
    for path in ("/v1/switchboard/spend", "/v1/switchboard/sessions", "/v1/switchboard/live"):
        assert (await http.get(path)).status_code == 401
        assert (await http.get(path, headers={"x-api-key": "tok-mallory"})).status_code == 401
    page = await http.get("/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("app.js", "style.css", "uPlot.iife.min.js", "uPlot.min.css"):
        assert (await http.get(f"/dashboard/{asset}")).status_code == 200
    assert (await http.post("/v1/switchboard/spend", headers={"x-api-key": ADMIN})).status_code == 405
    # An admin token is the dashboard's only: it sends no query.
    refused = await http.post("/v1/messages", json=message("hi"), headers={"x-api-key": ADMIN})
    assert refused.status_code == 401


async def test_no_tokens_configured_shows_everything(nursery: trio.Nursery, config: Config) -> None:
    server: Server = await nursery.start(
        functools.partial(run_server, msgspec.structs.replace(config, http_port=0))
    )
    async with httpx.AsyncClient(base_url=server.http_url or "", timeout=30, headers=API_VERSION) as http:
        for session in ("one", "two"):
            answer = await http.post(
                "/v1/messages", json=message("hi"), headers={"x-switchboard-session": session}
            )
            assert answer.status_code == 200
        top = await get(http, "/v1/switchboard/sessions", None)
        assert {s["session_id"] for s in top["sessions"]} == {"one", "two"}
        assert [t["token"] for t in top["tokens"]] == ["no token"]
        spend = await get(http, "/v1/switchboard/spend", None)
        assert spend["totals"]["cost_pico"] == sum(s["cost_pico"] for s in top["sessions"])
