"""Access tokens with limits on both doors: authentication, the refusal's shape, and the
settlement of a query's reservation to its cost (docs/protocol.md "Access tokens and budgets").

The ledger is in memory (the conftest's default), so its token store is too, and the tests
add tokens to it directly (``Gateway.budgets.store``)."""

from __future__ import annotations

import datetime
import functools

import httpx
import msgspec
import pytest
import trio
from harness import API_VERSION, chat, connect
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import ConnectionRejected

from actors.access.budgets import HeldReservation
from actors.config.settings import Config, Secret
from actors.server import Server, run_server
from actors.store.token_rows import new_token
from actors.store.tokens import TokenStore
from emulator import Emulator
from protocol.budget import Limits, Refusal, worst_case_pico
from protocol.frames import CostFrame, Done, ErrorFrame, Ready, TokenBudget
from protocol.pricing import PICO_PER_USD

NOW = datetime.datetime.now(datetime.UTC)


async def start(nursery: trio.Nursery, config: Config) -> Server:
    config = msgspec.structs.replace(config, http_port=0)
    server: Server = await nursery.start(functools.partial(run_server, config))
    return server


def store(server: Server) -> TokenStore:
    assert server.gateway.budgets is not None
    return server.gateway.budgets.store


def bearer(token: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {token}".encode())]


async def test_a_query_over_budget_is_refused_on_the_websocket_door(nursery: trio.Nursery, config: Config) -> None:
    server = await start(nursery, config)
    token = new_token()
    store(server).add("ci", token, Limits(budget_pico=1_000_000, period="day"), NOW)  # $0.000001
    async with connect(server, "s1", extra_headers=bearer(token)) as client:
        await client.receive()  # ready
        await client.send(type="query", id="q", request=chat())
        frames = await client.until_terminal("q")
    error = frames[-1]
    assert isinstance(error, ErrorFrame)
    assert (error.error.type, error.error.status) == ("rate_limit_error", 429)
    assert "token ci: budget of $0.000001 per day reached" in error.error.message
    assert "renews at " in error.error.message
    assert error.error.retry_after_s is not None and 0 < error.error.retry_after_s <= 86_400
    info = store(server).list()[0]
    assert (info.account.spent_pico, info.account.reserved_pico, info.account.in_flight) == (0, 0, 0)


async def test_a_query_within_budget_settles_to_its_exact_cost(nursery: trio.Nursery, config: Config) -> None:
    server = await start(nursery, config)
    token = new_token()
    store(server).add("ci", token, Limits(budget_pico=PICO_PER_USD, period="month", max_concurrent=2), NOW)
    async with connect(server, "s1", extra_headers=bearer(token)) as client:
        await client.receive()
        for query_id in ("q1", "q2"):
            await client.send(type="query", id=query_id, request=chat())
            done = (await client.until_terminal(query_id))[-1]
            assert isinstance(done, Done)
    assert server.gateway.budgets is not None
    await server.gateway.budgets.settled()
    info = store(server).list()[0]
    session = await server.gateway.cost("s1")
    assert info.account.reserved_pico == 0 and info.account.in_flight == 0
    # Exact to the picodollar: the spend is the ledger's own total for the session.
    assert info.account.spent_pico == round(session.total_cost_usd * PICO_PER_USD) > 0


async def test_the_http_door_refuses_with_the_apis_429_and_retry_after(nursery: trio.Nursery, config: Config) -> None:
    server = await start(nursery, config)
    token = new_token()
    store(server).add("ci", token, Limits(budget_pico=1_000_000, period="day"), NOW)
    async with httpx.AsyncClient(headers=API_VERSION, base_url=str(server.http_url), timeout=None) as http:
        refused = await http.post("/v1/messages", json=chat(), headers={"x-api-key": token})
        unknown = await http.post("/v1/messages", json=chat(), headers={"x-api-key": new_token()})
        anonymous = await http.post("/v1/messages", json=chat())
    assert refused.status_code == 429
    body = msgspec.json.decode(refused.content)
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    assert "budget of $0.000001 per day reached" in body["error"]["message"]
    assert 0 < int(refused.headers["retry-after"]) <= 86_400
    # With tokens in the ledger a token is required: an unknown one and none are refused.
    assert unknown.status_code == anonymous.status_code == 401


async def test_rpm_and_models_limits_apply_on_the_http_door(nursery: trio.Nursery, config: Config) -> None:
    server = await start(nursery, config)
    token = new_token()
    store(server).add("ci", token, Limits(rpm=1, models=("claude-sonnet-4-6",)), NOW)
    async with httpx.AsyncClient(headers=API_VERSION, base_url=str(server.http_url), timeout=None) as http:
        wrong_model = await http.post(
            "/v1/messages", json=chat(model="claude-haiku-4-5"), headers={"x-api-key": token}
        )
        first = await http.post("/v1/messages", json=chat(), headers={"x-api-key": token})
        second = await http.post("/v1/messages", json=chat(), headers={"x-api-key": token})
    assert wrong_model.status_code == 403
    assert first.status_code == 200
    assert second.status_code == 429 and "requests per minute" in second.text
    assert 0 < int(second.headers["retry-after"]) <= 60


async def test_env_tokens_still_work_beside_ledger_tokens_and_a_revoked_token_is_refused(
    nursery: trio.Nursery, config: Config
) -> None:
    server = await start(nursery, msgspec.structs.replace(config, access_tokens=(Secret("tok-plain"),)))
    token = new_token()
    store(server).add("ci", token, Limits(), NOW)
    async with connect(server, "plain", extra_headers=bearer("tok-plain")) as client:
        await client.receive()
    async with connect(server, "mine", extra_headers=bearer(token)) as client:
        await client.receive()
    store(server).revoke("ci", NOW)
    with pytest.raises(BaseExceptionGroup) as raised:
        async with connect(server, "mine", extra_headers=bearer(token)):
            raise AssertionError("a revoked token was accepted")
    rejected = raised.value.subgroup(lambda exc: isinstance(exc, ConnectionRejected))
    assert rejected is not None
    assert [exc.status_code for exc in _leaves(rejected)] == [401]


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[ConnectionRejected]:
    found: list[ConnectionRejected] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found.extend(_leaves(exc))
        elif isinstance(exc, ConnectionRejected):
            found.append(exc)
    return found


def test_the_worst_case_of_the_test_request_is_what_the_refusal_quotes() -> None:
    # Not vacuous: the request of these tests costs more than the tiny budget.
    assert worst_case_pico(chat(), len(msgspec.json.encode(chat())), on="2026-12-07") > 1_000_000


async def test_spend_is_visible_in_ready_cost_headers_metrics_and_dashboard(nursery: trio.Nursery, config: Config) -> None:
    server = await start(nursery, config)
    token = new_token()
    store(server).add("ci", token, Limits(budget_pico=PICO_PER_USD, period="total"), NOW)
    store(server).add("free", new_token(), Limits(), NOW)
    async with connect(server, "s1", extra_headers=bearer(token)) as client:
        ready = await client.receive()
        assert isinstance(ready, Ready) and isinstance(ready.budget, TokenBudget)
        assert (ready.budget.name, ready.budget.limit_usd, ready.budget.remaining_usd) == ("ci", 1.0, 1.0)
        assert ready.budget.period == "total" and ready.budget.renews_at is None
        await client.send(type="query", id="q", request=chat())
        done = (await client.until_terminal("q"))[-1]
        assert isinstance(done, Done)
        assert server.gateway.budgets is not None
        await server.gateway.budgets.settled()
        await client.send(type="get_cost")
        answer = await client.receive()
    assert isinstance(answer, CostFrame) and isinstance(answer.budget, TokenBudget)
    assert answer.budget.spent_usd == pytest.approx(done.cost_usd, abs=1e-6)
    assert answer.budget.remaining_usd == pytest.approx(1.0 - done.cost_usd, abs=1e-6)
    async with httpx.AsyncClient(headers=API_VERSION, base_url=str(server.http_url), timeout=None) as http:
        answered = await http.post("/v1/messages", json=chat(), headers={"x-api-key": token})
        await server.gateway.budgets.settled()
        board = await http.get("/v1/switchboard/budgets", headers={"x-api-key": token})
        metrics = await http.get("/metrics", headers={"x-api-key": token})
    assert answered.status_code == 200
    assert float(answered.headers["x-switchboard-budget-remaining-usd"]) == pytest.approx(1.0 - done.cost_usd, abs=1e-6)
    rows = msgspec.json.decode(board.content)["budgets"]
    assert [row["name"] for row in rows] == ["ci"]  # its own; "free" has no budget anyway
    assert rows[0]["left_usd"] == rows[0]["remaining_usd"] and rows[0]["limit_usd"] == 1.0
    spent = store(server).get("ci")
    assert spent is not None
    (sample,) = [
        sample
        for family in text_string_to_metric_families(metrics.text)
        for sample in family.samples
        if sample.name == "switchboard_token_spend_usd_total"
    ]
    assert sample.labels == {"token": "ci"}
    assert sample.value == pytest.approx(spent.account.spent_pico / PICO_PER_USD) and sample.value > done.cost_usd
    # A connection without a budget gets no budget field at all.
    server2 = await start(nursery, config)
    async with connect(server2, "s2") as client:
        raw = msgspec.json.decode(await client.ws.get_message())
    assert "budget" not in raw


async def test_a_token_revoked_while_connected_ends_its_next_query(nursery: trio.Nursery, config: Config) -> None:
    server = await start(nursery, config)
    token = new_token()
    store(server).add("ci", token, Limits(), NOW)
    async with connect(server, "s1", extra_headers=bearer(token)) as client:
        await client.receive()
        store(server).revoke("ci", NOW)
        await client.send(type="query", id="q", request=chat())
        [error] = await client.until_terminal("q")
    assert isinstance(error, ErrorFrame)
    assert (error.error.type, error.error.status, error.error.retry_after_s) == ("authentication_error", 401, None)


def _worst_case() -> int:
    return worst_case_pico(chat(), len(msgspec.json.encode(chat())), on=NOW.date().isoformat())


async def test_a_retry_that_does_not_fit_the_budget_is_refused_and_the_spend_stays_within_it(
    nursery: trio.Nursery, config: Config, emulator: Emulator
) -> None:
    server = await start(nursery, config)
    token = new_token()
    # Room for exactly one worst case: the first attempt's reservation.
    store(server).add("ci", token, Limits(budget_pico=_worst_case(), period="month"), NOW)
    emulator.script("overloaded_midstream:after=4")
    async with connect(server, "s1", extra_headers=bearer(token)) as client:
        await client.receive()
        await client.send(type="query", id="q", request=chat())
        frames = await client.until_terminal("q")
    error = frames[-1]
    assert isinstance(error, ErrorFrame)
    assert (error.error.type, error.error.status) == ("rate_limit_error", 429)
    assert "reached before a retry" in error.error.message
    assert len([r for r in emulator.requests if r.path.split("?")[0] == "/v1/messages"]) == 1  # no retry upstream
    assert server.gateway.budgets is not None
    await server.gateway.budgets.settled()
    info = store(server).list()[0]
    session = await server.gateway.cost("s1")
    # The failed attempt was billed: spent, exactly, and within the budget.
    assert info.account.spent_pico == round(session.total_cost_usd * PICO_PER_USD) > 0
    assert info.account.spent_pico <= _worst_case()
    assert (info.account.reserved_pico, info.account.in_flight) == (0, 0)


async def test_a_retry_tops_up_the_reservation_and_settles_to_the_real_total(
    nursery: trio.Nursery, config: Config, emulator: Emulator
) -> None:
    server = await start(nursery, config)
    token = new_token()
    store(server).add("ci", token, Limits(budget_pico=PICO_PER_USD, period="month"), NOW)
    emulator.script("overloaded_midstream:after=4")
    assert server.gateway.budgets is not None
    budgets = server.gateway.budgets
    topped: list[int] = []
    original = budgets.top_up

    async def spy(held: HeldReservation, request: dict[str, object], request_bytes: int) -> Refusal | None:
        refusal = await original(held, request, request_bytes)
        topped.append(held.reserved_pico)
        return refusal

    budgets.top_up = spy  # type: ignore[method-assign]
    async with connect(server, "s1", extra_headers=bearer(token)) as client:
        await client.receive()
        await client.send(type="query", id="q", request=chat())
        done = (await client.until_terminal("q"))[-1]
    assert isinstance(done, Done) and done.attempts == 2
    # One top-up, by the same worst case: two reserved while the retry ran.
    assert topped == [2 * _worst_case()]
    await budgets.settled()
    info = store(server).list()[0]
    session = await server.gateway.cost("s1")
    assert (info.account.reserved_pico, info.account.in_flight) == (0, 0)
    # Both attempts' cost, exactly: the top-up settled with the rest.
    assert info.account.spent_pico == round(session.total_cost_usd * PICO_PER_USD) == round(done.cost_usd * PICO_PER_USD)
