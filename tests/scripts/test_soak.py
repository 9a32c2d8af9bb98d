"""scripts/soak.py's bookkeeping on a tiny scripted case: which costs count as reported, and
the check of the ledger against them (the soak itself runs for minutes: not here)."""

from __future__ import annotations

import pytest
from soak import Stats, check_ledger, reported_cost, sse_reported_cost, summarize, to_pico


def test_a_done_reports_its_cost_unless_it_says_it_was_not_recorded() -> None:
    assert reported_cost({"type": "done", "id": "q", "cost_usd": 0.000123456789}) == 123_456_789
    assert reported_cost({"type": "done", "id": "q", "cost_usd": 0.5, "cost_recorded": True}) == to_pico("0.5")
    assert reported_cost({"type": "done", "id": "q", "cost_usd": 0.5, "cost_recorded": False}) is None
    # An aborted query is charged, but nothing promised the client it was recorded.
    assert reported_cost({"type": "aborted", "id": "q", "cost_usd": 0.5}) is None
    assert reported_cost({"type": "error", "id": "q", "error": {}}) is None


def test_an_sse_stream_reports_the_cost_of_its_closing_comment() -> None:
    body = (
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
        b": switchboard cost_usd=0.000201 session_cost_usd=0.004\n\n"
    )
    assert sse_reported_cost(body) == 201_000_000
    assert sse_reported_cost(b"event: error\ndata: {}\n\n") is None


def test_the_ledger_may_hold_more_but_never_less_than_reported(capsys: pytest.CaptureFixture[str]) -> None:
    stats = Stats()
    for session, cost in [("a", "0.000100"), ("a", "0.000250"), ("b", "0.001"), ("c", "0.000002")]:
        stats.report(session, to_pico(cost))
    stats.report("a", None)  # a done with cost_recorded false: not counted
    ledger = [
        {"session_id": "a", "total_cost_usd": 0.000350},  # exactly what was reported
        {"session_id": "b", "total_cost_usd": 0.0015},  # more: an aborted attempt was charged
        {"session_id": "d", "total_cost_usd": 0.2},  # a session that reported nothing
        # "c" is missing altogether
    ]
    checks = {check.session_id: check for check in check_ledger(stats.reported, ledger)}
    assert sorted(checks) == ["a", "b", "c"]
    assert checks["a"].missing_pico == 0 and checks["b"].missing_pico == 0
    assert checks["c"].missing_pico == 2_000_000  # two micro-dollars
    assert summarize(stats, list(checks.values())) == 1
    ledger.append({"session_id": "c", "total_cost_usd": 0.000002})
    stats.outcomes.update(done=4, refused=2)
    assert summarize(stats, check_ledger(stats.reported, ledger)) == 0
    out = capsys.readouterr().out
    assert "MISSING c" in out
    assert "queries 6: done 4," in out and "refused as malformed (HTTP 400) 2" in out


def test_less_than_a_micro_dollar_is_within_the_check() -> None:
    # A float that lost its last picodollar in printing is not a missing record.
    checks = check_ledger({"a": 123_456_789_012}, [{"session_id": "a", "total_cost_usd": 0.123456789011}])
    assert checks[0].missing_pico == 0
    checks = check_ledger({"a": 123_457_000_000}, [{"session_id": "a", "total_cost_usd": 0.123456}])
    assert checks[0].missing_pico == 1_000_000
