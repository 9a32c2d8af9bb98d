"""The benchmark's ``--idle-sessions N`` mode: the gateway's memory per idle WebSocket session.

``measure_idle`` opens and closes one warm-up session (so the first connection's one-off
costs, imports and caches, are not charged to the idle ones), reads the gateway's ``VmRSS``,
opens N sessions ``bench-idle-<n>`` (at most ``HANDSHAKES`` handshakes at a time), each kept
open once its ``ready`` frame came, waits ``SETTLE`` s, reads ``VmRSS`` and ``VmHWM``,
closes every session and reads ``VmRSS`` once more after ``SETTLE`` s. A session that fails
or is not ready by the time limit is counted, with its reason, never left out silently.
"""

from __future__ import annotations

import time
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Final

import msgspec
import trio
from _bench_procs import memory_bytes, peak_rss_bytes, reset_peak_rss
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

HANDSHAKES: Final = 32
SETTLE: Final = 1.0
KIB: Final = 1024
MIB: Final = 1024 * 1024


class _Head(msgspec.Struct):
    type: str


_HEAD: Final = msgspec.json.Decoder(_Head)


@dataclass(slots=True)
class IdleResult:
    """What ``measure_idle`` saw; memory in MiB, per session in KiB (None: /proc did not say)."""

    sessions: int
    opened: int
    failed: int
    open_seconds: float
    rss_before_mib: float | None
    rss_open_mib: float | None
    hwm_open_mib: float | None
    rss_after_close_mib: float | None
    kib_per_session: float | None
    warmup_error: str | None = None
    failure_reasons: dict[str, int] = field(default_factory=dict)


def _mib(value: int | None) -> float | None:
    return None if value is None else value / MIB


class _NotReady(Exception):
    """The first frame of a session was not ``ready``."""


async def _ready_session(url: str, stack: AsyncExitStack) -> None:
    ws = await stack.enter_async_context(open_websocket_url(url))
    head = _HEAD.decode(await ws.get_message())
    if head.type != "ready":
        raise _NotReady(f"first frame was {head.type!r}, not 'ready'")


async def measure_idle(gateway_url: str, pid: int, sessions: int, *, time_limit: float) -> IdleResult:
    """Open ``sessions`` idle sessions on the gateway at ``gateway_url`` (process ``pid``) and
    measure its memory (see the module docstring); everything within ``time_limit`` s."""
    reasons: Counter[str] = Counter()
    opened = 0
    all_in = trio.Event()
    release = trio.Event()
    limiter = trio.CapacityLimiter(HANDSHAKES)

    def settled() -> None:
        if opened + sum(reasons.values()) == sessions:
            all_in.set()

    async def hold(n: int) -> None:
        nonlocal opened
        try:
            async with AsyncExitStack() as stack:
                async with limiter:
                    await _ready_session(f"{gateway_url}/v1/sessions/bench-idle-{n}", stack)
                opened += 1
                settled()
                await release.wait()
        except (ConnectionClosed, HandshakeError, OSError, _NotReady, msgspec.DecodeError) as exc:
            why = exc.__cause__ if isinstance(exc, HandshakeError) and exc.__cause__ else exc
            reasons[f"{type(why).__name__}: {why}"] += 1
            settled()

    deadline = trio.current_time() + time_limit
    warmup_error = None
    with trio.move_on_at(deadline):
        try:
            async with AsyncExitStack() as warmup:
                await _ready_session(f"{gateway_url}/v1/sessions/bench-idle-warmup", warmup)
        except (ConnectionClosed, HandshakeError, OSError, _NotReady, msgspec.DecodeError) as exc:
            warmup_error = f"{type(exc).__name__}: {exc}"
        await trio.sleep(SETTLE)
    before = memory_bytes(pid)
    reset_peak_rss(pid)
    started = time.perf_counter()
    open_seconds = 0.0
    rss_open = hwm_open = None
    with trio.move_on_at(deadline) as scope:
        async with trio.open_nursery() as nursery:
            for n in range(sessions):
                nursery.start_soon(hold, n)
            await all_in.wait()
            open_seconds = time.perf_counter() - started
            await trio.sleep(SETTLE)
            rss_open = memory_bytes(pid)
            hwm_open = peak_rss_bytes(pid)
            release.set()
    if scope.cancelled_caught:
        missing = sessions - opened - sum(reasons.values())
        if missing:
            reasons["not ready by the deadline"] += missing
        if rss_open is None:
            # Still worth knowing: the memory with the sessions that did open.
            rss_open, hwm_open = memory_bytes(pid), peak_rss_bytes(pid)
    with trio.move_on_after(SETTLE * 5):
        await trio.sleep(SETTLE)
    after_close = memory_bytes(pid)
    per_session = None
    if before is not None and rss_open is not None and opened:
        per_session = (rss_open - before) / opened / KIB
    return IdleResult(
        sessions=sessions,
        opened=opened,
        failed=sessions - opened,
        open_seconds=open_seconds,
        rss_before_mib=_mib(before),
        rss_open_mib=_mib(rss_open),
        hwm_open_mib=_mib(hwm_open),
        rss_after_close_mib=_mib(after_close),
        kib_per_session=per_session,
        warmup_error=warmup_error,
        failure_reasons=dict(reasons.most_common()),
    )


def _fmt(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{value:.1f} {unit}"


def render_idle(result: IdleResult, header: list[str]) -> str:
    """The idle mode's plain-text report."""
    lines = [
        *header,
        f"sessions ready          {result.opened} of {result.sessions} (in {result.open_seconds:.2f} s)",
        f"gateway VmRSS before    {_fmt(result.rss_before_mib, 'MiB')}",
        f"gateway VmRSS open      {_fmt(result.rss_open_mib, 'MiB')}",
        f"gateway VmHWM open      {_fmt(result.hwm_open_mib, 'MiB')}",
        f"gateway VmRSS closed    {_fmt(result.rss_after_close_mib, 'MiB')}",
        f"memory per idle session {_fmt(result.kib_per_session, 'KB')}",
    ]
    problems = [f"  {count} x {reason}" for reason, count in result.failure_reasons.items()]
    if result.warmup_error:
        problems.append(f"  the warm-up session failed: {result.warmup_error}")
    if problems:
        lines += ["", "problems:", *problems]
    return "\n".join(lines)
