"""The benchmark's numbers: one run reduced to metrics, runs summarised, the table and JSON.

Percentiles are nearest-rank over the successful requests of a run (with 20 requests, p99
is the slowest one). A summary takes the median of each metric over the repeats; errors,
dropped events and retries are summed over the repeats instead, so one bad repeat is never
averaged away.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
from _bench_load import RunOutcome

MIB: Final = 1024 * 1024


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile of ``values`` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


@dataclass(frozen=True, slots=True)
class CpuUse:
    """CPU seconds each process spent during a run's measured phase (None: not measured)."""

    gateway: float | None
    emulator: float | None
    loadgen: float
    others: float | None


@dataclass(slots=True)
class RunMetrics:
    """One run (one path, one concurrency, one repeat), reduced. Times in ms."""

    path: str
    concurrency: int
    repeat: int
    requests: int
    ok: int
    errors: int
    dropped: int
    retries: int
    timed_out: bool
    wall_s: float
    requests_per_s: float
    events_per_s: float
    events: int
    ttfe_p50_ms: float | None
    ttfe_p99_ms: float | None
    gap_p99_ms: float | None
    gateway_cpu_ms_per_req: float | None
    gateway_cpu_us_per_event: float | None
    emulator_cpu_ms_per_req: float | None
    loadgen_cpu_ms_per_req: float | None
    gateway_cpu_pct: float | None
    load_cpu_pct: float | None
    other_cpu_pct: float | None
    gateway_rss_mib: float | None
    gateway_peak_rss_mib: float | None
    warmup_errors: int
    error_reasons: dict[str, int] = field(default_factory=dict)
    warmup_reasons: dict[str, int] = field(default_factory=dict)


def reduce_run(
    path: str,
    concurrency: int,
    repeat: int,
    outcome: RunOutcome,
    *,
    expected_events: int,
    cpu: CpuUse,
    gateway_rss: int | None,
    gateway_peak_rss: int | None,
) -> RunMetrics:
    """Reduce one run's samples to its metrics (see the module docstring).

    ``gateway_rss``: the largest ``VmRSS`` seen while the measured phase ran (every stream
    open); ``gateway_peak_rss``: ``VmHWM`` at the run's end (reset at its start when the
    kernel allows it).
    """
    samples = outcome.samples
    good = [s for s in samples if s.error is None]
    bad = [s for s in samples if s.error is not None]
    reasons: Counter[str] = Counter(s.error for s in bad if s.error)
    reasons.update(outcome.stream_failures)
    if outcome.missing:
        reasons[f"not finished ({'timed out' if outcome.timed_out else 'stream failed'})"] += outcome.missing
    wall = outcome.wall
    measured = len(samples)
    # Every event the load generator received in the measured phase: each one the gateway
    # relayed (read upstream, written to the client).
    events = sum(s.events for s in samples)

    def per_request(seconds: float | None) -> float | None:
        return None if seconds is None or not measured else seconds * 1000 / measured

    def busy(seconds: float | None) -> float | None:
        return None if seconds is None or not wall else seconds / wall * 100

    # The emulator and the load generator share their CPUs when pinned: their sum tells
    # whether that side, rather than the gateway, was the bottleneck.
    load = None if cpu.emulator is None else cpu.emulator + cpu.loadgen

    return RunMetrics(
        path=path,
        concurrency=concurrency,
        repeat=repeat,
        requests=len(samples) + outcome.missing,
        ok=len(good),
        errors=len(bad) + outcome.missing,
        dropped=sum(max(0, expected_events - s.events) for s in bad),
        retries=sum(s.retries for s in samples),
        timed_out=outcome.timed_out,
        wall_s=wall,
        requests_per_s=len(good) / wall if wall else 0.0,
        events_per_s=events / wall if wall else 0.0,
        events=events,
        ttfe_p50_ms=_ms(percentile([s.ttfe for s in good if s.ttfe is not None], 50)),
        ttfe_p99_ms=_ms(percentile([s.ttfe for s in good if s.ttfe is not None], 99)),
        gap_p99_ms=_ms(percentile([g for s in good for g in s.gaps], 99)),
        gateway_cpu_ms_per_req=per_request(cpu.gateway),
        gateway_cpu_us_per_event=None if cpu.gateway is None or not events else cpu.gateway * 1e6 / events,
        emulator_cpu_ms_per_req=per_request(cpu.emulator),
        loadgen_cpu_ms_per_req=per_request(cpu.loadgen),
        gateway_cpu_pct=busy(cpu.gateway),
        load_cpu_pct=busy(load),
        other_cpu_pct=busy(cpu.others),
        gateway_rss_mib=None if gateway_rss is None else gateway_rss / MIB,
        gateway_peak_rss_mib=None if gateway_peak_rss is None else gateway_peak_rss / MIB,
        warmup_errors=outcome.warmup_errors,
        error_reasons=dict(reasons.most_common()),
        warmup_reasons=dict(outcome.warmup_reasons.most_common()),
    )


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


@dataclass(slots=True)
class Summary:
    """One path at one concurrency over its repeats (medians; counts summed)."""

    path: str
    concurrency: int
    repeats: int
    requests: int
    errors: int
    dropped: int
    retries: int
    timed_out: bool
    requests_per_s: float | None
    events_per_s: float | None
    ttfe_p50_ms: float | None
    ttfe_p99_ms: float | None
    added_ttfe_p50_ms: float | None
    added_ttfe_p99_ms: float | None
    gap_p99_ms: float | None
    added_gap_p99_ms: float | None
    gateway_cpu_ms_per_req: float | None
    gateway_cpu_us_per_event: float | None
    emulator_cpu_ms_per_req: float | None
    loadgen_cpu_ms_per_req: float | None
    gateway_cpu_pct: float | None
    load_cpu_pct: float | None
    other_cpu_pct: float | None
    gateway_rss_mib: float | None
    gateway_peak_rss_mib: float | None
    warmup_errors: int
    error_reasons: dict[str, int]
    warmup_reasons: dict[str, int]
    runs: list[RunMetrics]


def summarise(runs: list[RunMetrics], direct: Summary | None = None) -> Summary:
    """Summarise the repeats of one path and level; ``direct`` (that level's direct summary)
    gives the gateway's added TTFE and gap: its median minus the direct median. Memory is
    the largest over the repeats, not their median."""
    first = runs[0]
    reasons: Counter[str] = Counter()
    warmup_reasons: Counter[str] = Counter()
    for run in runs:
        reasons.update(run.error_reasons)
        warmup_reasons.update(run.warmup_reasons)
    summary = Summary(
        path=first.path,
        concurrency=first.concurrency,
        repeats=len(runs),
        requests=sum(r.requests for r in runs),
        errors=sum(r.errors for r in runs),
        dropped=sum(r.dropped for r in runs),
        retries=sum(r.retries for r in runs),
        timed_out=any(r.timed_out for r in runs),
        requests_per_s=_median([r.requests_per_s for r in runs]),
        events_per_s=_median([r.events_per_s for r in runs]),
        ttfe_p50_ms=_median([r.ttfe_p50_ms for r in runs]),
        ttfe_p99_ms=_median([r.ttfe_p99_ms for r in runs]),
        added_ttfe_p50_ms=None,
        added_ttfe_p99_ms=None,
        gap_p99_ms=_median([r.gap_p99_ms for r in runs]),
        added_gap_p99_ms=None,
        gateway_cpu_ms_per_req=_median([r.gateway_cpu_ms_per_req for r in runs]),
        gateway_cpu_us_per_event=_median([r.gateway_cpu_us_per_event for r in runs]),
        emulator_cpu_ms_per_req=_median([r.emulator_cpu_ms_per_req for r in runs]),
        loadgen_cpu_ms_per_req=_median([r.loadgen_cpu_ms_per_req for r in runs]),
        gateway_cpu_pct=_median([r.gateway_cpu_pct for r in runs]),
        load_cpu_pct=_median([r.load_cpu_pct for r in runs]),
        other_cpu_pct=_median([r.other_cpu_pct for r in runs]),
        gateway_rss_mib=max((r.gateway_rss_mib for r in runs if r.gateway_rss_mib), default=None),
        gateway_peak_rss_mib=max((r.gateway_peak_rss_mib for r in runs if r.gateway_peak_rss_mib), default=None),
        warmup_errors=sum(r.warmup_errors for r in runs),
        error_reasons=dict(reasons.most_common()),
        warmup_reasons=dict(warmup_reasons.most_common()),
        runs=runs,
    )
    if direct is not None:
        summary.added_ttfe_p50_ms = _difference(summary.ttfe_p50_ms, direct.ttfe_p50_ms)
        summary.added_ttfe_p99_ms = _difference(summary.ttfe_p99_ms, direct.ttfe_p99_ms)
        summary.added_gap_p99_ms = _difference(summary.gap_p99_ms, direct.gap_p99_ms)
    return summary


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


# --- output -------------------------------------------------------------------------------

# (header, Summary attribute, decimals); None decimals: an integer count.
_COLUMNS: Final[tuple[tuple[str, str, int | None], ...]] = (
    ("path", "path", None),
    ("conc", "concurrency", None),
    ("req/s", "requests_per_s", 1),
    ("events/s", "events_per_s", 0),
    ("ttfe p50", "ttfe_p50_ms", 2),
    ("ttfe p99", "ttfe_p99_ms", 2),
    ("+ttfe p50", "added_ttfe_p50_ms", 2),
    ("+ttfe p99", "added_ttfe_p99_ms", 2),
    ("gap p99", "gap_p99_ms", 2),
    ("+gap p99", "added_gap_p99_ms", 2),
    ("gw cpu/req", "gateway_cpu_ms_per_req", 2),
    ("gw us/event", "gateway_cpu_us_per_event", 0),
    ("gw %cpu", "gateway_cpu_pct", 0),
    ("load %cpu", "load_cpu_pct", 0),
    ("other %cpu", "other_cpu_pct", 0),
    ("gw rss MiB", "gateway_rss_mib", 1),
    ("gw hwm MiB", "gateway_peak_rss_mib", 1),
    ("errors", "errors", None),
    ("dropped", "dropped", None),
)


def _cell(value: object, decimals: int | None) -> str:
    if value is None:
        return "-"
    if decimals is None or not isinstance(value, float):
        return str(value)
    return f"{value:.{decimals}f}"


def render_table(summaries: list[Summary], header: list[str]) -> str:
    """The plain-text table: ``header`` lines, aligned columns, then any error reasons."""
    rows = [[name for name, _, _ in _COLUMNS]]
    for summary in summaries:
        rows.append([_cell(getattr(summary, attr), decimals) for _, attr, decimals in _COLUMNS])
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = list(header)
    for index, row in enumerate(rows):
        cells = [cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    notes = [
        f"  {s.path} x{s.concurrency}: {count} x {reason}"
        for s in summaries
        for reason, count in s.error_reasons.items()
    ]
    notes += [
        f"  {s.path} x{s.concurrency}: warm-up (not measured): {count} x {reason}"
        for s in summaries
        for reason, count in s.warmup_reasons.items()
    ]
    notes += [f"  {s.path} x{s.concurrency}: {s.retries} retr(y/ies) by the gateway" for s in summaries if s.retries]
    if notes:
        lines += ["", "problems (summed over repeats):", *notes]
    return "\n".join(lines)


def render_json(document: dict[str, Any]) -> str:
    """The JSON document (dataclasses encode as objects)."""
    return msgspec.json.format(msgspec.json.encode(document), indent=2).decode()
