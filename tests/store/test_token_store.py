"""Access tokens in the ledger's store, and atomic reservations (actors/token_store.py),
on SQLite and PostgreSQL (``ledger_location``)."""

from __future__ import annotations

import concurrent.futures
import datetime
import pathlib

import pytest

from actors.token_store import new_token, open_token_store, token_hash
from protocol.budget import Limits
from protocol.errors import ConfigError

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
