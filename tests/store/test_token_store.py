"""Access tokens in the ledger's store, and atomic reservations (actors/store/tokens.py),
on SQLite and PostgreSQL (``ledger_location``)."""

from __future__ import annotations

import concurrent.futures
import datetime
import pathlib

import msgspec
import psycopg
import pytest

from actors.config.settings import is_postgres_url
from actors.store.rows import RecordWrite, SessionRow
from actors.store.stores import open_store, open_token_store
from actors.store.token_rows import Claim, new_token, token_hash
from actors.store.tokens import SILENT_AFTER
from protocol.budget import Limits
from protocol.errors import ConfigError
from protocol.ledger import RecordPart

NOW = datetime.datetime(2026, 12, 7, 12, 0, tzinfo=datetime.UTC)


def test_tokens_are_added_found_by_hash_listed_and_revoked(ledger_location: str) -> None:
    store = open_token_store(ledger_location)
    try:
        token = new_token()
        assert token.startswith("sb-") and len(token) >= 3 + 43
        assert not store.any_active()
        store.add("ci", token, Limits(budget_pico=5, period="day", rpm=3, models=("a", "b")), NOW)
        with pytest.raises(ConfigError, match="exists already"):
            store.add("ci", new_token(), Limits(), NOW)
        found = store.lookup(token)
        assert found is not None and found.name == "ci" and found.limits.models == ("a", "b")
        assert store.lookup(token + "x") is None
        assert [info.name for info in store.list()] == ["ci"]
        assert store.set_limits("ci", Limits(budget_pico=9, period="month"))
        assert store.list()[0].limits == Limits(budget_pico=9, period="month")
        assert store.revoke("ci", NOW) and not store.revoke("ci", NOW)
        assert store.lookup(token) is None and not store.any_active()
        store.add("ci", new_token(), Limits(), NOW)  # a revoked name may be reused
    finally:
        store.close()


def test_the_token_itself_is_never_stored(ledger_location: str) -> None:
    store = open_token_store(ledger_location)
    token = new_token()
    try:
        store.add("ci", token, Limits(), NOW)
    finally:
        store.close()
    if "://" not in ledger_location:
        data = b"".join(
            path.read_bytes() for path in pathlib.Path(ledger_location).parent.iterdir() if path.is_file()
        )
        assert token.encode() not in data and token_hash(token).encode() in data


def test_concurrent_reservations_never_pass_the_budget(ledger_location: str) -> None:
    budget = 1_000
    stores = [open_token_store(ledger_location) for _ in range(4)]
    try:
        stores[0].add("ci", new_token(), Limits(budget_pico=budget, period="total"), NOW)

        def work(index: int) -> int:
            store = stores[index % len(stores)]
            granted = 0
            for _ in range(60):
                result = store.reserve("ci", 7, model="m", now=NOW)
                assert result is not None
                if result[1] is None:
                    granted += 1
                    store.settle("ci", 7, 5, NOW)
            return granted

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            granted = sum(pool.map(work, range(4)))
        info = stores[0].list()[0]
        assert info.account.reserved_pico == 0 and info.account.in_flight == 0
        assert info.account.spent_pico == 5 * granted <= budget
        assert budget - info.account.spent_pico < 7 + 2  # it got as close as the rule allows
    finally:
        for store in stores:
            store.close()


def test_reservations_of_dead_instances_are_released_and_settled_to_their_records(ledger_location: str) -> None:
    ledger = open_store(ledger_location)
    store = open_token_store(ledger_location)
    now = datetime.datetime.now(datetime.UTC)
    try:
        ledger.write([pg_session()], [provisional("q-dead", cost_pico=4_000)])
        store.add("ci", new_token(), Limits(budget_pico=100_000, period="total"), NOW)
        shared = is_postgres_url(ledger_location)
        if shared:
            with psycopg.connect(ledger_location, autocommit=True) as conn:
                for instance, seen in (("dead", now - SILENT_AFTER - datetime.timedelta(seconds=1)), ("live", now - SILENT_AFTER * 2)):
                    conn.execute(
                        "INSERT INTO switchboard.instances (instance_id, hostname, pid, started_at, last_seen_at) "
                        "VALUES (%s, 'h', 1, %s, %s)",
                        (instance, seen, seen),
                    )
            store.heartbeat("live", now)  # the live one says so in time
        dead = Claim(reservation_id="r1", session_id="s", query_id="q-dead", instance_id="dead")
        live = Claim(reservation_id="r2", session_id="s", query_id="q-live", instance_id="live")
        for claim in (dead, live):
            result = store.reserve("ci", 10_000, model="m", now=NOW, claim=claim)
            assert result is not None and result[1] is None
        assert store.list()[0].account.reserved_pico == 20_000
        released = store.release_dead("me", now)
        info = store.list()[0].account
        if shared:
            # Only the silent instance's: released, and its query's recorded usage is spent.
            assert released == 1
            assert (info.reserved_pico, info.in_flight, info.spent_pico) == (10_000, 1, 4_000)
        else:
            # SQLite: one process holds the file, so at its start every reservation is a dead one's.
            assert released == 2
            assert (info.reserved_pico, info.in_flight, info.spent_pico) == (0, 0, 4_000)
        assert store.release_dead("me", now) == 0  # nothing is released twice
        # A settlement arriving after its reservation was released releases nothing again
        # (it still spends: counted twice rather than never).
        store.settle("ci", 10_000, 500, NOW, dead)
        after = store.list()[0].account
        assert (after.reserved_pico, after.in_flight) == (info.reserved_pico, info.in_flight)
        assert after.spent_pico == info.spent_pico + 500
        # A top-up of a released reservation is refused.
        assert store.top_up("ci", 1, NOW, dead) is not None
    finally:
        store.close()
        ledger.close()


def pg_session() -> SessionRow:
    return SessionRow(
        session_id="s", owner=None, created_at=NOW.isoformat(), updated_at=NOW.isoformat(),
        api_duration_ms=0, api_duration_without_retries_ms=0,
    )


def provisional(query_id: str, *, cost_pico: int) -> RecordWrite:
    return RecordWrite(
        session_id="s",
        record_id=f"rec-{query_id}",
        query_id=query_id,
        attempt=1,
        final=False,
        parts=(RecordPart(model="claude-sonnet-4-6", canonical="claude-sonnet-4-6", input_tokens=3, cost_pico=cost_pico),),
        speed=None,
        service_tier=None,
        long_context=False,
        priced_on=NOW.date().isoformat(),
        recorded_at=NOW.isoformat(),
        replaces=False,
    )


def test_policy_subjects_are_synced_reserved_against_and_retired(ledger_location: str) -> None:
    store = open_token_store(ledger_location)
    try:
        store.add("ci", new_token(), Limits(), NOW)
        store.sync_subjects({"user:ada": Limits(rpm=1), "group:eng": Limits(budget_pico=10, period="day")}, NOW)
        result = store.reserve("user:ada", 0, model="m", now=NOW)
        assert result is not None and result[1] is None
        refused = store.reserve("user:ada", 0, model="m", now=NOW)
        assert refused is not None and refused[1] is not None and refused[1].message.startswith("user ada: 1 requests")
        over = store.reserve("group:eng", 11, model="m", now=NOW)
        assert over is not None and over[1] is not None and over[1].message.startswith("group eng: budget")
        # Tokens stay apart: the listing and the "tokens required" check see only tokens.
        assert [info.name for info in store.list()] == ["ci"]
        # New limits keep the counters; a subject left out of the policy is retired.
        store.sync_subjects({"user:ada": Limits(rpm=5)}, NOW)
        ada = store.get("user:ada")
        assert ada is not None and ada.limits.rpm == 5 and ada.account.rpm_count == 1
        assert store.get("group:eng") is None and store.reserve("group:eng", 0, model="m", now=NOW) is None
        store.sync_subjects({"user:ada": Limits(rpm=5), "group:eng": Limits()}, NOW)
        assert store.get("group:eng") is not None
        with pytest.raises(ConfigError, match="may not begin"):
            store.add("user:mallory", new_token(), Limits(), NOW)
    finally:
        store.close()


def test_a_sessions_user_is_stored_and_loaded_on_both_stores(ledger_location: str) -> None:
    store = open_store(ledger_location)
    try:
        at = NOW.isoformat()
        row = SessionRow(
            session_id="s", owner=None, created_at=at, updated_at=at, api_duration_ms=0,
            api_duration_without_retries_ms=0, user_name="ada",
        )  # fmt: skip
        store.write([row], [])
        store.write([msgspec.structs.replace(row, user_name=None)], [])  # once named, always named
        loaded = store.load(["s"])["s"]
    finally:
        store.close()
    assert loaded.user_name == "ada"
