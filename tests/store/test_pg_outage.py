"""The PostgreSQL server goes away under the ledger: the fault rules of docs/protocol.md
("Cost ledger faults") apply, the pool reconnects, nothing reported recorded is lost.

``test_a_server_that_vanishes_...`` cuts a loopback TCP proxy between the store and the
server (its listener closed: connection refused; its connections reset), on the autojump
clock with the store on the event loop, so the retry schedule runs in virtual time.
``test_a_real_restart_...`` restarts the machine's PostgreSQL cluster (``pg_ctlcluster``)
while writers record: the slow test (``-m "not slow"`` leaves it out), bounded by
``RESTART_BUDGET``.
"""

from __future__ import annotations

import datetime
import itertools
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from urllib.parse import urlsplit

import psycopg
import pytest
import trio
import trio.testing
from pg_testkit import HOST, PORT, restart_cluster, restart_cluster_or_skip

import actors.store.postgres
from actors._util import ask
from actors.cost_ledger import CostLedger
from actors.messages.ledger import CostLedgerAddress, RecordUsage, UsageRecorded
from actors.observe.metrics import Metrics
from actors.store.stores import read_sessions
from protocol.usage import Usage

DAY = datetime.datetime(2026, 11, 26, 12, 0, tzinfo=datetime.UTC)
USAGE = Usage(input_tokens=1000, output_tokens=100)
USAGE_PICO = 1000 * 3_000_000 + 100 * 15_000_000
# The real restart test's bound, in seconds: a restart takes 2-3 s here, the pool's
# reconnection and the ledger's retry a few more.
RESTART_BUDGET = 90


class Proxy:
    """A loopback TCP proxy to the server that can be cut (``down``) and restored (``up``)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._stopping = False
        self._listener = self._listen(0)
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _listen(self, port: int) -> socket.socket:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, port))
        listener.listen(16)
        listener.settimeout(0.05)  # the accept loop looks at its state this often
        return listener

    def _accept(self) -> None:
        while not self._stopping:
            listener = self._listener
            try:
                client, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            upstream = socket.create_connection(self.target)
            with self._lock:
                if listener is not self._listener:  # went down meanwhile
                    client.close()
                    upstream.close()
                    continue
                self._sockets |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for end in (source, sink):
            with suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def down(self) -> None:
        """The server is gone: new connections are refused, open ones reset."""
        self._listener.close()
        with self._lock:
            for end in self._sockets:
                with suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()
            self._sockets.clear()

    def up(self) -> None:
        self._listener = self._listen(self.port)

    def close(self) -> None:
        self._stopping = True
        self.down()
        self._thread.join()


@contextmanager
def proxied(url: str) -> Iterator[tuple[str, Proxy]]:
    proxy = Proxy((HOST, PORT))
    try:
        parts = urlsplit(url)
        yield parts._replace(netloc=f"{parts.username}@{HOST}:{proxy.port}").geturl(), proxy
    finally:
        proxy.close()


async def record(ledger: CostLedgerAddress, record_id: str, session: str = "s") -> UsageRecorded:
    return await ask(
        ledger,
        lambda reply: RecordUsage(
            session_id=session, model="claude-sonnet-4-6", usage=USAGE, record_id=record_id, reply=reply
        ),
    )


async def test_a_server_that_vanishes_degrades_the_ledger_which_recovers_without_a_restart(
    pg_url: str, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Short pool waits: each blocks the event loop here (the store runs on it).
    monkeypatch.setattr(actors.store.postgres, "GETCONN_TIMEOUT", 0.3)
    monkeypatch.setattr(actors.store.postgres, "RECONNECT_TIMEOUT", 0.5)
    metrics = Metrics()
    with proxied(pg_url) as (url, proxy):
        ledger = CostLedger(url, offload=False, now=lambda: DAY, metrics=metrics)
        async with trio.open_nursery() as nursery:
            address: CostLedgerAddress = await nursery.start(ledger.run)
            with address:
                assert (await record(address, "before")).recorded
                proxy.down()
                during = await record(address, "during")
                assert not during.recorded and during.session_cost_pico == 2 * USAGE_PICO
                health = ledger.health
                assert not health.healthy and not health.committing and health.pending_records == 1
                assert health.reason is not None and health.reason.startswith("cost ledger cannot commit: ")
                assert health.refusal is not None  # new queries are refused meanwhile
                # A session not in memory cannot be read: it fails alone.
                assert not (await record(address, "cold", session="elsewhere")).recorded
                proxy.up()
                with trio.fail_after(300):  # virtual seconds: the retry's backoff, 15 s at most
                    while not ledger.health.healthy:  # noqa: ASYNC110 (the health has no event)
                        await trio.sleep(1)
                after = ledger.health
                assert after.refusal is None and after.pending_records == 0
                assert (await record(address, "after")).recorded
    stored = dict(read_sessions(pg_url))
    assert stored["s"].total_pico == 3 * USAGE_PICO


@pytest.mark.slow
async def test_a_real_restart_under_load_loses_nothing_reported_as_recorded(pg_url: str) -> None:
    restart_cluster_or_skip()
    writers = 8
    recorded: set[str] = set()
    loaded, restarted = trio.Event(), trio.Event()
    ledger = CostLedger(pg_url, now=lambda: DAY)  # the store on worker threads, as in production
    with trio.fail_after(RESTART_BUDGET):
        async with trio.open_nursery() as nursery:
            address: CostLedgerAddress = await nursery.start(ledger.run)
            with address:

                async def writer(n: int) -> None:
                    # Records until one made after the restart is committed: that commit held
                    # everything kept in memory before it.
                    for i in itertools.count():
                        if ledger.health.refusal is not None:
                            # What the Gateway does with a new query now: refuse it. The
                            # server's restart is real time, so is this pause.
                            await trio.sleep(0.05)
                            continue
                        record_id = f"w{n}:{i}"
                        if (await record(address, record_id, session=f"s{n}")).recorded:
                            recorded.add(record_id)
                            if restarted.is_set():
                                return
                            if len(recorded) >= 4 * writers:
                                loaded.set()

                async with trio.open_nursery() as load:
                    for n in range(writers):
                        load.start_soon(writer, n)
                    await loaded.wait()  # under load
                    await trio.to_thread.run_sync(restart_cluster)
                    restarted.set()
                assert ledger.health.healthy
    stats = ledger.statistics()
    with psycopg.connect(pg_url) as conn:
        stored = {row[0] for row in conn.execute("SELECT record_id FROM switchboard.usage WHERE final")}
    assert recorded <= stored  # nothing reported as recorded was lost
    assert stats.messages == len(stored)  # and what was kept in memory was committed after
    totals = dict(read_sessions(pg_url))
    assert sum(t.total_pico for t in totals.values()) == len(stored) * USAGE_PICO
