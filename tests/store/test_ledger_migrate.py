"""``switchboard ledger migrate`` copies an SQLite ledger into PostgreSQL, idempotently, and
``switchboard cost`` reads either store the same."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from pg_testkit import database_text

from actors._util import ask
from actors.cli.commands import main
from actors.cost_ledger import CostLedger
from actors.messages.ledger import (
    CostLedgerAddress,
    OpenSession,
    RecordDuration,
    RecordUsage,
    SessionOpened,
    UsageRecorded,
)
from actors.store.ledger_sessions import owner_digest
from actors.store.stores import read_sessions
from protocol.usage import Usage

DAY = datetime.datetime(2026, 11, 26, 12, 0, tzinfo=datetime.UTC)
START = Usage(input_tokens=1000, cache_read_input_tokens=10_000, output_tokens=1)
FINAL = Usage(input_tokens=1000, cache_read_input_tokens=10_000, output_tokens=800)


@asynccontextmanager
async def running(location: str) -> AsyncIterator[CostLedgerAddress]:
    ledger = CostLedger(location, now=lambda: DAY)
    async with trio.open_nursery() as nursery:
        address: CostLedgerAddress = await nursery.start(ledger.run)
        with address:
            yield address


async def record(
    ledger: CostLedgerAddress,
    usage: Usage,
    *,
    session: str,
    record_id: str = "",
    final: bool = True,
    model: str = "claude-sonnet-4-6",
) -> UsageRecorded:
    return await ask(
        ledger,
        lambda reply: RecordUsage(
            session_id=session, model=model, usage=usage, record_id=record_id, final=final, reply=reply
        ),
    )


async def open_session(ledger: CostLedgerAddress, session: str, owner: str | None = None) -> SessionOpened:
    return await ask(ledger, lambda reply: OpenSession(session_id=session, owner=owner, reply=reply))


async def fill(path: str) -> None:
    """A ledger of several sessions: final and provisional records, two models, durations."""
    async with running(path) as ledger:
        await open_session(ledger, "a", owner_digest("alice"))
        await record(ledger, FINAL, session="a", record_id="a:1:x")
        await record(ledger, Usage(input_tokens=10, output_tokens=5), session="a", model="claude-haiku-4-5")
        await ledger.send(RecordDuration(session_id="a", duration_ms=4000, duration_without_retries_ms=1500))
        await record(ledger, START, session="b", record_id="b:1:open", final=False)
        await open_session(ledger, "empty")


def cost_output(location: str, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    main(["cost", "--ledger", location, *args])
    return capsys.readouterr().out


async def test_an_sqlite_ledger_is_copied_once_whatever_how_often_the_migration_runs(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = str(tmp_path / "ledger.sqlite3")
    await fill(source)
    main(["ledger", "migrate", "--from", source, "--to", pg_url])
    said = capsys.readouterr().out
    assert said.startswith(f"copied 3 session(s) and 3 usage record(s) from {source} to ")
    assert read_sessions(pg_url) == read_sessions(source)
    copied = database_text(pg_url)
    main(["ledger", "migrate", "--from", source, "--to", pg_url])
    capsys.readouterr()
    assert database_text(pg_url) == copied  # the second run changed nothing
    # `switchboard cost` says the same of both stores, as text and as JSON.
    assert cost_output(pg_url, capsys) == cost_output(source, capsys)
    assert cost_output(pg_url, capsys, "a", "--json") == cost_output(source, capsys, "a", "--json")
    # The SQLite gateway went on: the open record became final, a new one came. A second
    # migration moves the first forward and adds the second, nothing else.
    async with running(source) as ledger:
        await record(ledger, FINAL, session="b", record_id="b:1:open")
        await record(ledger, FINAL, session="c", record_id="c:1:new")
    main(["ledger", "migrate", "--from", source, "--to", pg_url])
    assert read_sessions(pg_url) == read_sessions(source)
    # A gateway on PostgreSQL resumes the copied sessions with their full summaries.
    async with running(pg_url) as ledger:
        resumed = await open_session(ledger, "a", owner_digest("alice"))
    assert resumed.resumed and resumed.owner_ok
    assert resumed.cost == dict(read_sessions(source))["a"].summary("a")


def test_migrate_refuses_what_it_cannot_copy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["ledger", "migrate", "--from", str(tmp_path / "none.sqlite3"), "--to", "postgresql://u@127.0.0.1/x"])
    assert exited.value.code == 2
    assert "no cost ledger at" in capsys.readouterr().err
    trio.run(fill, str(tmp_path / "ledger.sqlite3"))
    with pytest.raises(SystemExit):
        main(["ledger", "migrate", "--from", str(tmp_path / "ledger.sqlite3"), "--to", str(tmp_path / "other.sqlite3")])
    assert "--to must be a PostgreSQL URL" in capsys.readouterr().err
