"""The benchmark's load generator: N concurrent streams, direct to the emulator or via the gateway.

One *run* is one path at one concurrency: ``run_load`` opens N streams, lets each send
``warmup`` requests, waits for all of them (a barrier), then each sends ``requests`` measured
requests one after the other (with pacing, stream n of N first waits n/N of one answer's
duration, so that the streams' requests and events do not all land in the same instant, as
independent clients' would not). The paths, each stream on a connection of its own (the lean clients of
``_bench_wire``, so the load generator's own cost per event stays small next to the
gateway's):

- ``direct``: ``POST /v1/messages`` (SSE) to the emulator, on a keep-alive connection;
- ``gateway``: the gateway's WebSocket door (session ``bench-<n>``), one ``query`` at a time;
- ``http``: the gateway's HTTP door, ``POST /v1/messages`` (SSE) exactly as on the direct
  path (same body, same reader), with ``x-switchboard-session: bench-http-<n>`` so each
  stream is charged to a session of its own, as on the WebSocket door.
- ``other``: another gateway (``--other-gateway``, ``_bench_other``), spoken to exactly as
  the HTTP door (the session header is one it may ignore).

Every measured request becomes a ``Sample``; the run's wall time is from the start barrier
to the last stream's last answer, and the ``on_start``/``on_end`` hooks fire at those two
instants (the caller reads the processes' CPU there).

Times are ``time.perf_counter()`` in the load generator, taken when the read that completed
an event returned: on the direct and http paths the read holding the event's terminating
blank line, on the gateway path the read holding its ``event`` frame. Both start when the
request is sent.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Final

import msgspec
import trio
from _bench_wire import HttpConnection, WebSocketConnection, WireError

API_VERSION: Final = "2023-06-01"
# The emulator accepts any key; a recognisable one makes its logs easy to read.
API_KEY: Final = "sk-ant-bench"
# The run's paths: the emulator direct, the gateway's WebSocket door, its HTTP door, and
# another gateway's HTTP API when one is given.
PATHS: Final = ("direct", "gateway", "http", "other")
# The paths spoken as HTTP with SSE answers (the others: the WebSocket door).
HTTP_PATHS: Final = frozenset({"direct", "http", "other"})


@dataclass(frozen=True, slots=True)
class Workload:
    """What every request asks for; ``expected_events`` is what a complete stream carries."""

    model: str
    deltas: int
    pace_ms: int
    max_tokens: int = 1024

    @property
    def expected_events(self) -> int:
        # message_start, content_block_start, ping, the deltas, content_block_stop,
        # message_delta, message_stop.
        return self.deltas + 6

    @property
    def answer_seconds(self) -> float:
        """How long the emulator takes to pace out one answer (0 without pacing)."""
        return self.expected_events * self.pace_ms / 1000

    def prompt(self) -> str:
        options = f"deltas={self.deltas}" + (f",pace_ms={self.pace_ms}" if self.pace_ms else "")
        # The directive travels in the body, so both paths ask the emulator the same thing
        # (the gateway does not forward client headers).
        return f"<<emulator:ok:{options}>> Benchmark request."

    def request(self) -> dict[str, Any]:
        """The Messages request of a query (what the client sends the gateway)."""
        return {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "messages": [{"role": "user", "content": self.prompt()}],
        }

    def upstream_body(self) -> bytes:
        """What the gateway POSTs upstream for that query: the request with ``stream: true``."""
        return msgspec.json.encode({**self.request(), "stream": True})


@dataclass(slots=True)
class Sample:
    """One measured request. ``error`` None and ``events == expected``: it succeeded."""

    events: int = 0
    ttfe: float | None = None
    gaps: list[float] = field(default_factory=list)
    total: float = 0.0
    error: str | None = None
    retries: int = 0
    discarded: int = 0


@dataclass(slots=True)
class RunOutcome:
    """What one run measured; ``missing`` counts requests that never produced a sample."""

    samples: list[Sample] = field(default_factory=list)
    wall: float = 0.0
    missing: int = 0
    timed_out: bool = False
    stream_failures: Counter[str] = field(default_factory=Counter)
    warmup_errors: int = 0
    warmup_reasons: Counter[str] = field(default_factory=Counter)


class _NotReady(Exception):
    """The gateway's first frame on a connection was not ``ready``."""


class _Barrier:
    """Releases its waiters when ``parties`` arrivals came; runs ``on_release`` first."""

    def __init__(self, parties: int, on_release: Callable[[], None]) -> None:
        self._left = parties
        self._on_release = on_release
        self._released = trio.Event()

    def arrive(self) -> None:
        self._left -= 1
        if self._left == 0:
            self._on_release()
            self._released.set()

    async def wait(self) -> None:
        await self._released.wait()


def _finish(sample: Sample, start: float, times: list[float]) -> Sample:
    sample.events = len(times)
    sample.total = time.perf_counter() - start
    sample.gaps = [b - a for a, b in pairwise(times)]
    return sample


# --- direct path --------------------------------------------------------------------------


def direct_headers(session: str | None = None) -> dict[str, str]:
    """The Messages API headers (any key does for the emulator and for a gateway without
    access tokens); ``session`` names the gateway session the HTTP door charges."""
    headers = {"x-api-key": API_KEY, "anthropic-version": API_VERSION, "content-type": "application/json"}
    if session is not None:
        headers["x-switchboard-session"] = session
    return headers


async def direct_request(
    connection: HttpConnection, path: str, body: bytes, expected: int, headers: dict[str, str]
) -> Sample:
    """POST one streaming request on ``connection`` and time its events (see
    ``_bench_wire.SSECounter``: comment-only blocks, such as the HTTP door's closing
    ``: switchboard cost_usd=...``, are not events). Used for the direct path and, on a
    connection to the gateway's HTTP door, for the http path."""
    sample = Sample()
    start = time.perf_counter()
    try:
        result = await connection.post_stream(path, body, headers)
    except (WireError, OSError) as exc:
        sample.error = f"{type(exc).__name__}: {exc}"
        return _finish(sample, start, [])
    times = result.times
    if times:
        sample.ttfe = times[0] - start
    if result.status != 200:
        sample.error = f"HTTP {result.status}"
    elif result.sse.error:
        sample.error = "event: error in the stream"
    elif not result.sse.last.startswith(b"event: message_stop"):
        sample.error = "stream ended without message_stop"
    _finish(sample, start, times)
    if sample.error is None and sample.events != expected:
        sample.error = f"{sample.events} events, expected {expected}"
    return sample


# --- gateway path -------------------------------------------------------------------------


class _Head(msgspec.Struct):
    """Enough of a gateway frame to time it (msgspec skips the rest without building it)."""

    type: str
    id: str | None = None
    attempt: int | None = None


class _ErrorInfo(msgspec.Struct):
    type: str
    message: str = ""


class _Failed(msgspec.Struct):
    error: _ErrorInfo | None = None


_HEAD: Final = msgspec.json.Decoder(_Head)
_FAILED: Final = msgspec.json.Decoder(_Failed)


def query_frame(query_id: str, workload: Workload) -> bytes:
    """A ``query`` frame's JSON (sent as a text message)."""
    return msgspec.json.encode({"type": "query", "id": query_id, "request": workload.request()})


async def gateway_request(ws: WebSocketConnection, query_id: str, frame: bytes, expected: int) -> Sample:
    """Send one query and time its ``event`` frames until its terminal frame.

    Raises _bench_wire.WireError (``Closed`` included) when the connection ends first.
    """
    sample = Sample()
    times: list[float] = []
    start = time.perf_counter()
    await ws.send_text(frame)
    while True:
        raw = await ws.receive()
        now = ws.read_at
        head = _HEAD.decode(raw)
        if head.id != query_id:
            continue
        match head.type:
            case "event":
                if sample.ttfe is None:
                    sample.ttfe = now - start
                times.append(now)
            case "tombstone":
                # The attempt's events are void; the retry's are the ones that count.
                sample.discarded += len(times)
                times.clear()
            case "retry":
                sample.retries += 1
            case "done":
                break
            case "aborted" | "error" | "rejected":
                info = _FAILED.decode(raw).error
                detail = f"{info.type}: {info.message}" if info else ""
                sample.error = f"{head.type} frame {detail}".strip()
                break
            case _:
                pass
    _finish(sample, start, times)
    if sample.error is None and sample.events != expected:
        sample.error = f"{sample.events} events, expected {expected}"
    return sample


# --- a run --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunSpec:
    """One run: which path (``direct``/``gateway``/``http``/``other``), its target URL (the
    emulator's, the gateway's WebSocket or HTTP door, the other gateway's) and the load's
    shape. ``expected_events``: what a complete stream carries on this path when it is not
    the workload's (another gateway may drop or add events; its preflight tells)."""

    path: str
    url: str
    concurrency: int
    warmup: int
    requests: int
    workload: Workload
    expected_events: int | None = None

    @property
    def expected(self) -> int:
        return self.workload.expected_events if self.expected_events is None else self.expected_events


async def run_load(
    spec: RunSpec,
    *,
    deadline: float,
    on_start: Callable[[], None],
    on_end: Callable[[], None],
) -> RunOutcome:
    """Run ``spec`` (see the module docstring); give up at ``deadline`` (trio clock).

    Never raises for a failed request or stream: failures are samples or ``stream_failures``, and requests not measured by the deadline are
    ``missing``.
    """
    outcome = RunOutcome()
    started_at: float | None = None
    stopped = False

    def start_clock() -> None:
        nonlocal started_at
        on_start()
        started_at = time.perf_counter()

    def stop_clock() -> None:
        nonlocal stopped
        if started_at is not None and not stopped:
            stopped = True
            outcome.wall = time.perf_counter() - started_at
            on_end()

    start = _Barrier(spec.concurrency, start_clock)
    end = _Barrier(spec.concurrency, stop_clock)

    async def stream(n: int) -> None:
        arrived_start = arrived_end = False

        async def measured(send: Callable[[int], Awaitable[Sample]]) -> None:
            nonlocal arrived_start, arrived_end
            for i in range(spec.warmup):
                warm = await send(-1 - i)
                if warm.error is not None:
                    outcome.warmup_errors += 1
                    outcome.warmup_reasons[warm.error] += 1
            arrived_start = True
            start.arrive()
            await start.wait()
            if spec.workload.pace_ms:
                # Independent clients do not start in step: spread the streams' starts over
                # one answer's duration, or every stream's request (and each of its events)
                # lands in the same instant, every answer long.
                await trio.sleep(spec.workload.answer_seconds * n / spec.concurrency)
            for i in range(spec.requests):
                outcome.samples.append(await send(i))
            arrived_end = True
            end.arrive()

        host, _, port = spec.url.split("://", 1)[1].rpartition(":")
        try:
            if spec.path in HTTP_PATHS:
                connection = HttpConnection(host, int(port))
                body = spec.workload.upstream_body()
                expected = spec.expected
                headers = direct_headers(None if spec.path == "direct" else f"bench-http-{n}")

                async def send_direct(_: int) -> Sample:
                    return await direct_request(connection, "/v1/messages", body, expected, headers)

                try:
                    await measured(send_direct)
                finally:
                    await connection.aclose()
            else:
                ws = await WebSocketConnection.connect(host, int(port), f"/v1/sessions/bench-{n}")
                try:
                    head = _HEAD.decode(await ws.receive())
                    if head.type != "ready":
                        raise _NotReady(f"first frame was {head.type!r}, not 'ready'")

                    async def send_query(i: int) -> Sample:
                        query_id = f"w{-i}" if i < 0 else f"q{i}"
                        frame = query_frame(query_id, spec.workload)
                        return await gateway_request(ws, query_id, frame, spec.expected)

                    await measured(send_query)
                finally:
                    await ws.aclose()
        except (WireError, OSError, _NotReady) as exc:
            outcome.stream_failures[f"{type(exc).__name__}: {exc}"] += 1
        finally:
            # A failed stream still arrives, so the others are not held at a barrier forever;
            # past the deadline nobody waits any more, and a release would start the clock.
            if not scope.cancel_called:
                if not arrived_start:
                    start.arrive()
                if not arrived_end:
                    end.arrive()

    scope = trio.CancelScope(deadline=deadline)
    with scope:
        async with trio.open_nursery() as nursery:
            for n in range(spec.concurrency):
                nursery.start_soon(stream, n)
    if scope.cancelled_caught:
        outcome.timed_out = True
        # The end barrier never released: the measured phase ends at the deadline.
        stop_clock()
    outcome.missing = spec.concurrency * spec.requests - len(outcome.samples)
    return outcome
