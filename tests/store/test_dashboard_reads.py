"""The dashboard's reads (``Store.spend``, ``top_sessions``, ``top_owners``) answer the same
on both stores for the same records: per bucket and model, per session, per owner."""

from __future__ import annotations

from pathlib import Path

import msgspec

from actors.store.rows import RecordWrite, SessionRow
from actors.store.stores import open_store
from protocol.dashboard import EVERYONE, OwnerSpend, Scope, SessionSpend, SpendRow
from protocol.ledger import RecordPart

RECORDS = [
    # (session, owner, record id, recorded at, model, input, output, cache read, cost)
    ("a", "alice", "r1", "2026-11-25T09:15:00+00:00", "claude-sonnet-4-6", 100, 10, 0, 450_000_000),
    ("a", "alice", "r2", "2026-11-26T10:05:00+00:00", "claude-opus-4-8", 200, 20, 50, 1_525_000_000),
    ("b", "bob", "r3", "2026-11-26T10:59:59+00:00", "claude-sonnet-4-6", 300, 30, 0, 1_350_000_000),
    ("c", None, "r4", "2026-11-26T23:00:00+00:00", "claude-haiku-4-5", 400, 40, 400, 640_000_000),
]


# The six reads' answers, in the order ``_answers`` makes them.
Answers = tuple[
    list[SpendRow], list[SpendRow], list[SpendRow], list[SessionSpend], list[OwnerSpend], list[OwnerSpend]
]


def _answers(location: str) -> Answers:
    """Write ``RECORDS`` into a new store at ``location``; its answers to six reads."""
    store = open_store(location)
    try:
        sessions: dict[str, SessionRow] = {}
        for sid, owner, _, at, *_ in RECORDS:
            sessions.setdefault(sid, SessionRow(
                session_id=sid, owner=owner, created_at=at, updated_at=at,
                api_duration_ms=0, api_duration_without_retries_ms=0,
            ))
        records = [
            RecordWrite(
                session_id=sid, record_id=rid, query_id=rid, attempt=1, final=True,
                parts=(RecordPart(model=model, canonical=model, input_tokens=inp, output_tokens=out,
                                  cache_read_input_tokens=read, cost_pico=cost),),
                speed=None, service_tier=None, long_context=False, priced_on=at[:10], recorded_at=at,
                replaces=False,
            )
            for sid, _, rid, at, model, inp, out, read, cost in RECORDS
        ]
        store.write(list(sessions.values()), records)
        return (
            store.spend("2026-11-25", "day", EVERYONE),
            store.spend("2026-11-26T10", "hour", EVERYONE),
            store.spend("2026-11-01", "day", Scope(everyone=False, owner="alice")),
            store.top_sessions("2026-11-01", EVERYONE, 2),
            store.top_owners("2026-11-01", EVERYONE, 10),
            store.top_owners("2026-11-01", Scope(everyone=False, owner=None), 10),
        )
    finally:
        store.close()


def _without_times(rows: object) -> object:
    # first_at / last_at are instants whose text form is each store's own.
    if isinstance(rows, list):
        return [msgspec.structs.replace(r, first_at="", last_at="") if hasattr(r, "first_at") else r for r in rows]
    return rows


def test_the_dashboard_reads_agree_on_both_stores(tmp_path: Path, pg_url: str) -> None:
    lite, pg = _answers(str(tmp_path / "ledger.sqlite3")), _answers(pg_url)
    assert [_without_times(a) for a in pg] == [_without_times(a) for a in lite]
    day, hour, alice, top, owners, nobody = lite
    assert [(r.bucket, r.canonical, r.cost_pico) for r in day] == [
        ("2026-11-25", "claude-sonnet-4-6", 450_000_000),
        ("2026-11-26", "claude-haiku-4-5", 640_000_000),
        ("2026-11-26", "claude-opus-4-8", 1_525_000_000),
        ("2026-11-26", "claude-sonnet-4-6", 1_350_000_000),
    ]
    assert [(r.bucket, r.owner) for r in hour] == [
        ("2026-11-26T10", "alice"), ("2026-11-26T10", "bob"), ("2026-11-26T23", None)
    ]
    assert {r.owner for r in alice} == {"alice"} and sum(r.cost_pico for r in alice) == 1_975_000_000
    assert [s.session_id for s in top] == ["a", "b"]
    assert [(o.owner, o.sessions, o.cost_pico, o.messages) for o in owners] == [
        ("alice", 1, 1_975_000_000, 2), ("bob", 1, 1_350_000_000, 1), (None, 1, 640_000_000, 1)
    ]
    assert [o.owner for o in nobody] == [None]
