"""The ``switchboard cost`` report: sessions' totals in the reference client's format (pure).

docs/reference/reference-client.md 3.4 (``formatTotalCost``): labels padded to 23 characters, then one line
per model under ``Usage by model:``, the model's short (canonical) name right-aligned in 21
characters::

    Total cost:            $0.0480
    Total duration (API):  1m 5s
    Usage by model:
        claude-sonnet-4-6:  12.3k input, 1.0k output, 0 cache read, 0 cache write ($0.0480)

With no usage the last two lines are one ``Usage:`` line with zeros. The reference also
prints the wall duration and code changes; a gateway knows neither, so they are left out.

Estimated figures (streams cut short before the upstream's final output count,
protocol/estimate.py) are marked, and only then does the text differ from the reference's::

    Total cost:            $0.0480 (of which $0.0031 estimated)
        claude-sonnet-4-6:  12.3k input, 1.0k output (~200 estimated), 0 cache read, ...
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from protocol.ledger import ModelTotals, SessionTotals, short_name
from protocol.pricing import format_cost, format_number, usd

_LABEL_WIDTH: Final = 23
_MODEL_WIDTH: Final = 21
UNKNOWN_MODEL_NOTE: Final = " (costs may be inaccurate due to usage of unknown models)"
NO_USAGE: Final = "Usage:                 0 input, 0 output, 0 cache read, 0 cache write"


def format_duration(ms: int) -> str:
    """The reference's ``formatDuration``: ``0s``, ``42s`` under a minute (whole seconds,
    rounded down), else ``1m 5s``, ``2h 0m 3s``, ``1d 2h 3m 4s`` (seconds rounded, with
    carries), leading zero units left out."""
    if ms < 60_000:
        return f"{max(ms, 0) // 1000}s"
    days, rest = divmod(ms, 86_400_000)
    hours, rest = divmod(rest, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds = (rest + 500) // 1000
    if seconds == 60:
        seconds, minutes = 0, minutes + 1
    if minutes == 60:
        minutes, hours = 0, hours + 1
    if hours == 24:
        hours, days = 0, days + 1
    if days:
        return f"{days}d {hours}h {minutes}m {seconds}s"
    if hours:
        return f"{hours}h {minutes}m {seconds}s"
    return f"{minutes}m {seconds}s"


def _usage_line(name: str, totals: ModelTotals) -> str:
    web_search = (
        f", {format_number(totals.web_search_requests)} web search"
        if totals.web_search_requests > 0
        else ""
    )
    estimated = (
        f" (~{format_number(totals.estimated_output_tokens)} estimated)"
        if totals.estimated_output_tokens > 0
        else ""
    )
    return (
        f"{name + ':':>{_MODEL_WIDTH}}"
        f"  {format_number(totals.input_tokens)} input,"
        f" {format_number(totals.output_tokens)} output{estimated},"
        f" {format_number(totals.cache_read_input_tokens)} cache read,"
        f" {format_number(totals.cache_creation_input_tokens)} cache write"
        f"{web_search} ({format_cost(usd(totals.cost_pico))})"
    )


def format_totals(totals: SessionTotals) -> str:
    """One session's (or a sum of sessions') block, lines joined by newlines, no final one."""
    cost = format_cost(usd(totals.total_pico))
    if totals.estimated_pico > 0:
        cost += f" (of which {format_cost(usd(totals.estimated_pico))} estimated)"
    if totals.unknown_model_cost:
        cost += UNKNOWN_MODEL_NOTE
    lines = [
        f"{'Total cost:':<{_LABEL_WIDTH}}{cost}",
        f"{'Total duration (API):':<{_LABEL_WIDTH}}{format_duration(totals.api_duration_ms)}",
    ]
    by_name: dict[str, ModelTotals] = {}
    for model, model_totals in totals.models.items():
        name = short_name(model)
        by_name[name] = by_name.get(name, ModelTotals()).merged(model_totals)
    if not by_name:
        lines.append(NO_USAGE)
    else:
        lines.append("Usage by model:")
        lines += [_usage_line(name, model_totals) for name, model_totals in by_name.items()]
    return "\n".join(lines)


def format_report(sessions: Sequence[tuple[str, SessionTotals]]) -> str:
    """The whole report, ending with a newline.

    One session: its block. Several: a ``Session ID`` heading before each block, blocks
    separated by a blank line, and an ``All sessions`` block with the sums last. None: a
    one-line note.
    """
    if not sessions:
        return "No sessions in the ledger.\n"
    if len(sessions) == 1:
        return format_totals(sessions[0][1]) + "\n"
    blocks = [f"Session {session_id}\n{format_totals(totals)}" for session_id, totals in sessions]
    everything = SessionTotals()
    for _, totals in sessions:
        everything = everything.merged(totals)
    blocks.append(f"All sessions ({len(sessions)})\n{format_totals(everything)}")
    return "\n\n".join(blocks) + "\n"
