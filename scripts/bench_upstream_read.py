"""What reading one upstream stream costs the gateway per event, layer by layer, in-process.

``scripts/bench.py`` measures the whole gateway; on a shared machine its CPU per event
moves by tens of percent from run to run. This one isolates the relay's upstream read: it
starts the emulator (``switchboard emulator --write-per-event``, one event per TCP
segment), pinned to the second CPU when there are two, and, pinned to the first, streams
``--requests`` answers of ``--deltas`` text deltas through ``actors.upstream.client.UpstreamClient``
(the gateway's client), reading each body one of these ways, round-robin so that the
machine's load falls on all alike:

- ``httpx``: ``response.aiter_bytes()`` (httpx's client layer over httpcore, as the relay
  read before ``actors.upstream.client.body_chunks``);
- ``lean``: ``actors.upstream.client.body_chunks`` (h11 and the socket stream driven directly);
- ``+sse``: ``body_chunks`` and the relay's SSE decoding (``protocol.sse.SSEDecoder``);
- ``+assemble``: that and ``protocol.assembly.MessageAssembler.feed`` per event, as the
  relay does.

With ``--wakeup-floor`` it measures instead what one wake-up costs a bare trio program on
this machine: a child process writes 100 bytes every millisecond to a socket that a trio
task receives from; it prints this process's CPU per wake-up (the floor under the gateway's
CPU per event at one paced stream), and the same for a plain ``select.epoll`` loop.

For each way it prints this process's CPU time (``time.process_time``) per event in
microseconds: the median over the requests, and the lowest. Run it::

    .venv/bin/python scripts/bench_upstream_read.py                 # 200 requests of 200 deltas
    .venv/bin/python scripts/bench_upstream_read.py --requests 400 --deltas 50
    .venv/bin/python scripts/bench_upstream_read.py --requests 30 --pace-ms 1   # one event per read
    .venv/bin/python scripts/bench_upstream_read.py --wakeup-floor              # a bare wake-up's cost
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Final

import httpx
import msgspec
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _bench_procs import child_env, open_child, plan_pinning

from actors.upstream.client import UpstreamClient, body_chunks
from protocol.assembly import MessageAssembler
from protocol.sse import SSEDecoder

WAYS = ("httpx", "lean", "+sse", "+assemble")


def _chunks(way: str, response: httpx.Response) -> AsyncIterator[bytes]:
    return response.aiter_bytes() if way == "httpx" else body_chunks(response)


def _consumer(way: str) -> Callable[[bytes], int]:
    """A function taking each chunk, returning how many events it completed."""
    sse = SSEDecoder()
    assembler = MessageAssembler()
    count_only = way in ("httpx", "lean")
    pending = bytearray()

    def take(chunk: bytes) -> int:
        if count_only:
            # Count events by their closing blank line (the emulator writes LF only).
            pending.extend(chunk)
            found = pending.count(b"\n\n")
            del pending[: pending.rfind(b"\n\n") + 2 if found else 0]
            return found
        events = sse.feed(chunk)
        if way == "+assemble":
            for event in events:
                assembler.feed(event.event, event.data)
        return len(events)

    return take


async def _one(client: UpstreamClient, url: str, body: bytes, way: str) -> tuple[float, int]:
    headers = {"x-api-key": "sk-ant-bench", "anthropic-version": "2023-06-01", "content-type": "application/json"}
    take = _consumer(way)
    async with client.stream("POST", url, content=body, headers=headers) as response:
        if response.status_code != 200:
            raise SystemExit(f"emulator answered {response.status_code}")
        events = 0
        started = time.process_time()
        async for chunk in _chunks(way, response):
            events += take(chunk)
        spent = time.process_time() - started
    return spent, events


async def _main(args: argparse.Namespace) -> None:
    pinning = plan_pinning()
    if pinning.gateway is not None:
        os.sched_setaffinity(0, pinning.gateway)
    pace = f",pace_ms={args.pace_ms}" if args.pace_ms else ""
    body = msgspec.json.encode(
        {
            "model": "claude-sonnet-4-6",
            "max_tokens": 4096,
            "stream": True,
            "messages": [{"role": "user", "content": f"<<emulator:ok:deltas={args.deltas}{pace}>> read bench"}],
        }
    )
    client = UpstreamClient(
        tls=ssl.create_default_context(), timeout=httpx.Timeout(60.0), limits=httpx.Limits(max_connections=4)
    )
    results: dict[str, list[float]] = {way: [] for way in WAYS}
    with tempfile.TemporaryDirectory() as tmp:
        async with open_child(
            "emulator",
            ["emulator", "--port", "0", "--write-per-event"],
            env=child_env({}),
            cpus=pinning.others,
            log_path=Path(tmp) / "emulator.log",
            url_prefix="http://",
        ) as emulator:
            url = emulator.url.rstrip("/") + "/v1/messages"
            for way in WAYS:  # warm-up
                await _one(client, url, body, way)
            for _ in range(args.requests):
                for way in WAYS:
                    spent, events = await _one(client, url, body, way)
                    if events != args.deltas + 6:
                        raise SystemExit(f"{way}: {events} events, expected {args.deltas + 6}")
                    results[way].append(spent / events * 1e6)
    await client.aclose()
    print(f"upstream read, {args.deltas + 6} events/request, pace {args.pace_ms} ms, {args.requests} requests per way; "
          f"pinning: {pinning.describe()}; load average {os.getloadavg()[0]:.2f}")
    print(f"{'way':10} {'us/event p50':>12} {'min':>8}")
    for way, values in results.items():
        print(f"{way:10} {statistics.median(values):12.2f} {min(values):8.2f}")


_WRITER: Final = (
    "import os, socket, sys, time\n"
    "s = socket.socket(fileno=int(sys.argv[1]))\n"
    "for _ in range(int(sys.argv[2])):\n"
    "    s.send(b'x' * 100)\n"
    "    time.sleep(0.001)\n"
    "s.close()\n"
)


def _paced_writer(count: int) -> tuple[socket.socket, subprocess.Popen[bytes]]:
    """A socket that a child process writes 100 bytes to every millisecond, ``count`` times."""
    ours, theirs = socket.socketpair()
    others = plan_pinning().others

    def pin() -> None:
        if others is not None:
            os.sched_setaffinity(0, others)

    child = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(theirs.fileno()), str(count)], pass_fds=[theirs.fileno()], preexec_fn=pin
    )
    theirs.close()
    return ours, child


async def _trio_wakeups(count: int) -> float:
    sock, child = _paced_writer(count)
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
    wakes = 0
    started = time.process_time()
    while await stream.receive_some(65536):
        wakes += 1
    spent = time.process_time() - started
    await stream.aclose()
    child.wait()
    return spent / max(wakes, 1) * 1e6


def _epoll_wakeups(count: int) -> float:
    sock, child = _paced_writer(count)
    sock.setblocking(False)
    poller = select.epoll()
    poller.register(sock.fileno(), select.EPOLLIN)
    wakes = 0
    started = time.process_time()
    while True:
        poller.poll()
        if not sock.recv(65536):
            break
        wakes += 1
    spent = time.process_time() - started
    poller.close()
    sock.close()
    child.wait()
    return spent / max(wakes, 1) * 1e6


def wakeup_floor(count: int) -> None:
    pinning = plan_pinning()
    if pinning.gateway is not None:
        os.sched_setaffinity(0, pinning.gateway)
    trio_us = trio.run(_trio_wakeups, count)
    epoll_us = _epoll_wakeups(count)
    print(f"wake-ups paced 1 ms apart, {count} each; pinning: {pinning.describe()}; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"trio SocketStream.receive_some loop: {trio_us:7.1f} us CPU per wake-up")
    print(f"plain select.epoll + recv loop:      {epoll_us:7.1f} us CPU per wake-up")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--deltas", type=int, default=200)
    parser.add_argument(
        "--pace-ms", type=int, default=0,
        help="the emulator pauses this long between events: each is then read on its own",
    )
    parser.add_argument(
        "--wakeup-floor", action="store_true", help="measure a bare wake-up's CPU instead (see above)"
    )
    args = parser.parse_args()
    if args.wakeup_floor:
        wakeup_floor(2000)
    else:
        trio.run(_main, args)


if __name__ == "__main__":
    main()
