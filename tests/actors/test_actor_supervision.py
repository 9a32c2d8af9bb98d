"""Each actor survives a message that makes its handler fail (docs/supervision.md): the
sender gets an error (``ActorFailed`` from ``ask``; a query its ``internal_error`` frame),
the failure is counted as ``actor:<name>``, and the actor serves the next message."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing
from harness import POISON, chat, connect, healthy_session, internal_errors, poison

import actors.bootstrap_fetcher
import actors.retry_supervisor
from actors.bootstrap_fetcher import BootstrapFetcher
from actors.client_pool import ClientPool
from actors.config.settings import Config
from actors.retry_supervisor import RetrySupervisor
from actors.server import Server, run_server
from actors.store.ledger_sessions import LedgerSessions
from actors.stream_relay import StreamRelay
from protocol.errors import ActorFailed
from protocol.frames import TERMINAL_FRAMES, Done, ErrorFrame, GatewayFrame, TokenCount


def fail_once(monkeypatch: pytest.MonkeyPatch, target: Any, name: str) -> None:
    """Make the next call of ``target.name`` raise; the calls after it go through."""
    real: Callable[..., Any] = getattr(target, name)
    armed = [True]

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if armed.pop() if armed else False:
            raise RuntimeError(f"injected failure in {name}")
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, wrapper)


async def run_query(server: Server, query_id: str, text: str, session: str = "s1") -> GatewayFrame:
    """The one terminal frame of a query on a fresh connection."""
    async with connect(server, session) as client:
        await client.receive()
        await client.send(type="query", id=query_id, request=chat(text))
        frames = await client.until_terminal(query_id)
    terminals = [frame for frame in frames if isinstance(frame, TERMINAL_FRAMES)]
    assert terminals == frames[-1:], frames
    return frames[-1]


async def count_tokens(server: Server, count_id: str, text: str) -> GatewayFrame:
    async with connect(server) as client:
        await client.receive()
        await client.send(type="count_tokens", id=count_id, request=chat(text))
        while True:
            frame = await client.receive()
            if getattr(frame, "id", None) == count_id:
                return frame


def assert_internal_error(frame: GatewayFrame) -> None:
    assert isinstance(frame, ErrorFrame) and frame.error.type == "internal_error", frame


async def a_bad_query_then_a_good_one(server: Server, clock: trio.testing.MockClock, session: str = "s1") -> None:
    async with healthy_session(server, clock):
        assert_internal_error(await run_query(server, "bad", POISON, session))
        assert isinstance(await run_query(server, "good", "the next message is served"), Done)


async def test_retry_supervisor_survives_a_query_it_cannot_start(
    server: Server, mock_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    poison(monkeypatch, RetrySupervisor, "_query_run")
    await a_bad_query_then_a_good_one(server, mock_clock)
    assert internal_errors(server) == {"actor:RetrySupervisor": 1}
    # The query that never started is no longer counted in flight, nor holds a slot.
    assert (server.gateway.drain.in_flight, server.gateway.drain.admission.in_use) == (0, 0)


async def test_retry_supervisor_survives_a_count_request_that_fails(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    poison(monkeypatch, actors.retry_supervisor, "count_tokens_request")
    assert_internal_error(await count_tokens(server, "c1", POISON))
    assert isinstance(await count_tokens(server, "c2", "counted"), TokenCount)
    with pytest.raises(ActorFailed):
        await server.gateway.count_tokens(chat(POISON))
    assert internal_errors(server) == {"actor:RetrySupervisor": 2}


async def test_stream_relay_survives_an_attempt_it_cannot_run(
    server: Server, mock_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    poison(monkeypatch, StreamRelay, "_attempt_task")
    await a_bad_query_then_a_good_one(server, mock_clock)
    assert internal_errors(server) == {"actor:StreamRelay": 1}


async def test_stream_relay_survives_a_count_that_fails(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    poison(monkeypatch, StreamRelay, "_count")
    assert_internal_error(await count_tokens(server, "c1", POISON))
    assert isinstance(await count_tokens(server, "c2", "counted"), TokenCount)
    assert internal_errors(server) == {"actor:StreamRelay": 1}


async def test_client_pool_survives_a_lease_it_cannot_make(
    server: Server, mock_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with healthy_session(server, mock_clock):
        fail_once(monkeypatch, ClientPool, "_current_lease")
        assert_internal_error(await run_query(server, "bad", "no lease for this one"))
        assert isinstance(await run_query(server, "good", "the next lease is made"), Done)
    assert internal_errors(server) == {"actor:ClientPool": 1}


async def test_cost_ledger_survives_a_record_it_cannot_price(
    server: Server, mock_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    poison(monkeypatch, LedgerSessions, "record")
    # The poisoned session's usage records fail (the provisional one and the final one).
    await a_bad_query_then_a_good_one(server, mock_clock, session=POISON)
    assert set(internal_errors(server)) == {"actor:CostLedger"}
    summary = await server.gateway.cost("s1")
    assert summary.total_cost_usd > 0


async def test_cost_ledger_answers_a_failed_request_with_actor_failed(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    poison(monkeypatch, LedgerSessions, "apply")
    with pytest.raises(ActorFailed):
        await server.gateway.cost(POISON)
    assert (await server.gateway.cost("s1")).session_id == "s1"
    assert internal_errors(server) == {"actor:CostLedger": 1}


async def test_bootstrap_fetcher_survives_a_request_it_cannot_answer(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    fail_once(monkeypatch, actors.bootstrap_fetcher, "answer")
    with pytest.raises(ActorFailed):
        await server.gateway.bootstrap()
    assert (await server.gateway.bootstrap(settled=True)).settled
    assert internal_errors(server) == {"actor:BootstrapFetcher": 1}


async def test_a_failed_startup_fetch_still_settles_the_bootstrap_state(
    nursery: trio.Nursery, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    fail_once(monkeypatch, BootstrapFetcher, "_read_cache")
    server: Server = await nursery.start(functools.partial(run_server, config))
    state = await server.gateway.bootstrap(settled=True)
    assert state.settled and state.source == "none"
    assert isinstance(await run_query(server, "q", "the gateway serves"), Done)
    assert internal_errors(server) == {"actor:BootstrapFetcher": 1}
