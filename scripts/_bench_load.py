"""The benchmark's load generator: N concurrent streams, direct to the emulator or via the gateway.

One *run* is one path at one concurrency: ``run_load`` opens N streams, lets each send
``warmup`` requests, waits for all of them (a barrier), then each sends ``requests`` measured
requests one after the other. The paths:

- ``direct``: ``POST /v1/messages`` (SSE) to the emulator, through the caller's pooled
  ``httpx.AsyncClient``s (stream n of N uses client ``n * len(clients) // N``: the caller
  shards the streams over several clients at high concurrency, see bench.py);
- ``gateway``: the gateway's WebSocket door, one connection per stream (session
  ``bench-<n>``), one ``query`` at a time;
- ``http``: the gateway's HTTP door, ``POST /v1/messages`` (SSE) exactly as on the direct
  path (same client sharding, same SSE reader), with ``x-switchboard-session:
  bench-http-<n>`` so each stream is charged to a session of its own, as on the WebSocket
  door.
 Every
measured request becomes a ``Sample``; the run's wall time is from the start barrier to the
last stream's last answer, and the ``on_start``/``on_end`` hooks fire at those two instants
(the caller reads the processes' CPU there).

Times are ``time.perf_counter()`` in the load generator, taken when a complete event is in
hand: on the direct and http paths when the SSE chunk holding its terminating blank line
arrived, on the gateway path when its ``event`` frame was received. Both start when the request is sent.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Final

import httpx
import msgspec
import trio
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection, open_websocket_url

API_VERSION: Final = "2023-06-01"
# The emulator accepts any key; a recognisable one makes its logs easy to read.
API_KEY: Final = "sk-ant-bench"
# The run's paths: the emulator direct, the gateway's WebSocket door, its HTTP door.
PATHS: Final = ("direct", "gateway", "http")


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


def _is_comment(block: bytes) -> bool:
    """An SSE block of comment lines only (``: ...``): no event, SSE readers skip it (the
    gateway's HTTP door ends its streams with one, ``: switchboard cost_usd=...``)."""
    return all(line.startswith(b":") for line in block.strip().split(b"\n"))


async def direct_request(
    client: httpx.AsyncClient, url: str, body: bytes, expected: int, headers: Mapping[str, str] | None = None
) -> Sample:
    """POST one streaming request and time its events (a minimal SSE reader: events end at a
    blank line ``\\n\\n``, as the API and the emulator send them; comment-only blocks are
    not events). Used for the direct path
    and, with the gateway's HTTP URL, for the http path."""
    sample = Sample()
    times: list[float] = []
    start = time.perf_counter()
    try:
        async with client.stream("POST", url, content=body, headers=headers or direct_headers()) as response:
            if response.status_code != 200:
                await response.aread()
                sample.error = f"HTTP {response.status_code}"
                return _finish(sample, start, times)
            pending = b""
            last = b""
            async for chunk in response.aiter_raw():
                pending += chunk
                if b"\n\n" not in pending:
                    continue
                *blocks, pending = pending.split(b"\n\n")
                now = time.perf_counter()
                for block in blocks:
                    if not block.strip() or _is_comment(block):
                        continue
                    if sample.ttfe is None:
                        sample.ttfe = now - start
                    times.append(now)
                    last = block
                    if block.startswith(b"event: error"):
                        sample.error = "event: error in the stream"
            if sample.error is None and not last.startswith(b"event: message_stop"):
                sample.error = "stream ended without message_stop"
    except httpx.HTTPError as exc:
        sample.error = f"{type(exc).__name__}: {exc}"
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


def query_frame(query_id: str, workload: Workload) -> str:
    """A ``query`` frame as text (the protocol wants text frames; bytes would go binary)."""
    return msgspec.json.encode({"type": "query", "id": query_id, "request": workload.request()}).decode()


async def gateway_request(ws: WebSocketConnection, query_id: str, frame: str, expected: int) -> Sample:
    """Send one query and time its ``event`` frames until its terminal frame.

    Raises trio_websocket.ConnectionClosed when the connection ends first.
    """
    sample = Sample()
    times: list[float] = []
    start = time.perf_counter()
    await ws.send_message(frame)
    while True:
        raw = await ws.get_message()
        now = time.perf_counter()
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
    """One run: which path (``direct``/``gateway``/``http``), its target URL (the emulator's,
    the gateway's WebSocket or HTTP door) and the load's shape."""

    path: str
    url: str
    concurrency: int
    warmup: int
    requests: int
    workload: Workload


async def run_load(
    spec: RunSpec,
    *,
    deadline: float,
    on_start: Callable[[], None],
    on_end: Callable[[], None],
    clients: Sequence[httpx.AsyncClient] = (),
) -> RunOutcome:
    """Run ``spec`` (see the module docstring); give up at ``deadline`` (trio clock).

    The direct and http paths need ``clients`` (one or more; the streams are spread over
    them in contiguous groups). Never raises for a failed request or stream: failures
    are samples or ``stream_failures``, and requests not measured by the deadline are
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
            for i in range(spec.requests):
                outcome.samples.append(await send(i))
            arrived_end = True
            end.arrive()

        try:
            if spec.path in ("direct", "http"):
                assert clients, "the direct and http paths need an HTTP client"
                client = clients[n * len(clients) // spec.concurrency]
                url = spec.url + "/v1/messages"
                body = spec.workload.upstream_body()
                expected = spec.workload.expected_events
                headers = direct_headers(f"bench-http-{n}" if spec.path == "http" else None)

                async def send_direct(_: int) -> Sample:
                    return await direct_request(client, url, body, expected, headers)

                await measured(send_direct)
            else:
                async with open_websocket_url(f"{spec.url}/v1/sessions/bench-{n}") as ws:
                    head = _HEAD.decode(await ws.get_message())
                    if head.type != "ready":
                        raise _NotReady(f"first frame was {head.type!r}, not 'ready'")

                    async def send_query(i: int) -> Sample:
                        query_id = f"w{-i}" if i < 0 else f"q{i}"
                        frame = query_frame(query_id, spec.workload)
                        return await gateway_request(ws, query_id, frame, spec.workload.expected_events)

                    await measured(send_query)
        except (ConnectionClosed, HandshakeError, OSError, _NotReady) as exc:
            # trio-websocket raises a bare HandshakeError for a failed connect: say its cause.
            why = exc.__cause__ if isinstance(exc, HandshakeError) and exc.__cause__ else exc
            outcome.stream_failures[f"{type(why).__name__}: {why}"] += 1
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
