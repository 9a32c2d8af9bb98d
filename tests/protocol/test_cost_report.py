"""The ``switchboard cost`` report in the reference client's format (docs/reference/reference-client.md 3.4)."""

from __future__ import annotations

import pytest

from protocol.cost_report import format_duration, format_report, format_totals
from protocol.ledger import SessionTotals, record_parts
from protocol.usage import Usage

ON = "2026-11-26"


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0s"),
        (999, "0s"),
        (42_700, "42s"),
        (59_999, "59s"),
        (60_000, "1m 0s"),
        (65_400, "1m 5s"),
        (119_600, "2m 0s"),
        (3_599_600, "1h 0m 0s"),
        (7_203_000, "2h 0m 3s"),
        (93_784_000, "1d 2h 3m 4s"),
    ],
)
def test_durations(ms: int, text: str) -> None:
    assert format_duration(ms) == text


def session() -> SessionTotals:
    totals = SessionTotals()
    # Two ids of one model group under its canonical name; the sums are exact.
    totals.add(record_parts(Usage(input_tokens=12_000, output_tokens=800, cache_read_input_tokens=2_500), "claude-sonnet-4-6", on=ON))
    totals.add(record_parts(Usage(input_tokens=300, output_tokens=200, web_search_requests=2), "claude-sonnet-4-6@20260217", on=ON))
    totals.add(record_parts(Usage(input_tokens=1_000, cache_creation_input_tokens=4_000), "claude-haiku-4-5", on=ON))
    totals.add_duration(65_400, 30_000)
    return totals


def test_one_session_in_the_reference_format() -> None:
    # sonnet: (12300 * 3 + 1000 * 15 + 2500 * 0.30) / 1e6 + 2 * 0.01 = 0.07265; haiku: 0.001 + 0.005;
    # the total 0.07865 is a binary fraction just under the tie, so toFixed(4) gives 0.0786.
    assert format_totals(session()) == (
        "Total cost:            $0.0786\n"
        "Total duration (API):  1m 5s\n"
        "Usage by model:\n"
        "   claude-sonnet-4-6:  12.3k input, 1.0k output, 2.5k cache read, 0 cache write, 2 web search ($0.0727)\n"
        "    claude-haiku-4-5:  1.0k input, 0 output, 0 cache read, 4.0k cache write ($0.0060)"
    )


def test_no_usage_and_unknown_models() -> None:
    assert format_totals(SessionTotals()) == (
        "Total cost:            $0.0000\n"
        "Total duration (API):  0s\n"
        "Usage:                 0 input, 0 output, 0 cache read, 0 cache write"
    )
    totals = SessionTotals()
    totals.add(record_parts(Usage(input_tokens=200_000_000), "mystery-model-1", on=ON))
    assert format_totals(totals).splitlines()[0] == (
        "Total cost:            $600.00 (costs may be inaccurate due to usage of unknown models)"
    )
    assert format_totals(totals).splitlines()[-1] == "     mystery-model-1:  200.0m input, 0 output, 0 cache read, 0 cache write ($600.00)"


def test_several_sessions_get_headings_and_a_sum() -> None:
    report = format_report([("a", session()), ("b", session())])
    blocks = report.split("\n\n")
    assert [b.splitlines()[0] for b in blocks] == ["Session a", "Session b", "All sessions (2)"]
    assert blocks[2].splitlines()[1] == "Total cost:            $0.1573"
    assert blocks[2].splitlines()[2] == "Total duration (API):  2m 11s"
    assert report.endswith("($0.0120)\n")
    assert format_report([("a", session())]) == format_totals(session()) + "\n"
    assert format_report([]) == "No sessions in the ledger.\n"
