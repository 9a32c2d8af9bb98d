"""``switchboard serve --workers N``: one parent process and N worker processes serving the
same ports (README.md "Deployment").

Parent:
    Checks the configuration, refuses a ledger the workers cannot share (``:memory:``, also
    the default with the built-in emulator), and on an SQLite file takes its lock for the
    whole run (``actors.store.sqlite_shared.prepare_shared_ledger``). With port 0 it picks the
    ports itself (a socket bound with SO_REUSEPORT, never listening, holds each) and passes
    them on. It then starts each worker as a new interpreter (``python -m actors.cli.commands serve
    ... --worker-of I``: spawned, never forked from a running trio), reads the URLs each
    prints when it accepts connections, and prints them (the same first lines of stdout as
    one process) once every worker is ready.
Workers:
    Each is ``serve`` with ``Config.workers`` N: its doors bind with SO_REUSEPORT (the
    kernel spreads connections over them), its ledger is shared (a PostgreSQL ledger with
    ``actors.store.pg_fleet``, an SQLite file with ``actors.store.sqlite_fleet``), its log lines carry
    ``[worker I]`` and its start line its instance id. A worker whose parent dies (even
    by SIGKILL) shuts down gracefully (``stop_with_parent``: its stdin, a pipe from the
    parent, ends).
Signals:
    SIGTERM or SIGINT to the parent is forwarded to every worker as SIGTERM (each drains:
    docs/protocol.md "Shutting down"); a further one is forwarded too (each worker ends its
    grace at once). Workers run in their own session, so a terminal's Ctrl-C reaches only
    the parent, which forwards it once. The parent exits 0 once every worker has exited.
Supervision (docs/supervision.md):
    A worker that dies (any exit while the parent is not stopping) is started again after
    ``RESTART_FIRST`` seconds, doubling to ``RESTART_MAX`` while it keeps dying, back to the
    first once one ran ``STEADY_AFTER``; on an SQLite ledger its instance is marked silent
    (``actors.store.sqlite_shared.mark_dead``), so a live worker releases its budget reservations
    at its next heartbeat. A worker that fails before the first time all were
    ready ends the parent with its exit code (the configuration cannot work: 2), the others
    stopped first.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Final

import trio

from actors.config.settings import Config, is_postgres_url, ledger_file
from actors.doors.ws_server import reuse_port_socket
from actors.store.sqlite import MEMORY
from actors.store.sqlite_shared import mark_dead, prepare_shared_ledger
from protocol.errors import ConfigError, ServiceFailed, SwitchboardError

log = logging.getLogger("switchboard.workers")

RESTART_FIRST: Final = 0.5
RESTART_MAX: Final = 15.0
STEADY_AFTER: Final = 30.0
# How long a worker that was told to stop, then cancelled, gets before it is killed.
KILL_AFTER: Final = 5.0
# The first lines a worker prints (its URLs) are bounded: a line longer than this fails it.
MAX_LINE: Final = 4096
# The parent's pid, in each worker's environment (``stop_with_parent``).
PARENT_ENV: Final = "SWITCHBOARD_WORKERS_PARENT"


async def stop_with_parent(environ: Mapping[str, str] = os.environ) -> None:
    """In a worker the parent started (``PARENT_ENV`` set): wait for the end of stdin, a pipe
    from the parent that it never writes, which comes when the parent dies (even by
    SIGKILL), then send this process SIGTERM (a graceful shutdown). Elsewhere (a worker
    started by hand, tests): returns at once. (Not ``prctl(PR_SET_PDEATHSIG)``: trio starts
    processes from a worker thread, whose exit would count as the parent's death.)"""
    if PARENT_ENV not in environ:
        return
    async with trio.lowlevel.FdStream(os.dup(sys.stdin.fileno())) as stdin:
        while await stdin.receive_some():
            pass
    log.warning("the parent process is gone: shutting down")
    os.kill(os.getpid(), signal.SIGTERM)


def usable_cpus() -> int:
    """The CPUs this process may run on (``--workers auto``)."""
    return len(os.sched_getaffinity(0))


def workers_arg(text: str) -> int:
    """``--workers``: a count from 1, or ``auto`` (``usable_cpus``)."""
    if text.strip().lower() == "auto":
        return usable_cpus()
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(f"--workers takes a count from 1 or 'auto', not {text!r}")
    return count


class WorkerFailed(SwitchboardError):
    """A worker ended before every worker was first ready; ``code`` is its exit code."""

    def __init__(self, index: int, code: int) -> None:
        super().__init__(f"worker {index} exited with code {code} before it was ready")
        self.code = code


@dataclass
class _Workers:
    """The parent's state: the worker command and, per slot, the running process."""

    argv: list[str]
    count: int
    lines: int
    processes: dict[int, trio.Process] = field(default_factory=dict)
    urls: list[str] = field(default_factory=list)
    ready: set[int] = field(default_factory=set)
    all_ready: trio.Event = field(default_factory=trio.Event)
    stopping: trio.Event = field(default_factory=trio.Event)
    # The SQLite ledger's path, to mark a dead worker's instance (``mark_dead``); None: PostgreSQL.
    ledger_file: str | None = None

    def forward(self, signum: int) -> None:
        """Send SIGTERM to every live worker (docs: "Signals")."""
        for index, process in self.processes.items():
            if process.returncode is None:
                log.info("worker %d (pid %d): %s forwarded", index, process.pid, signal.Signals(signum).name)
                process.send_signal(signal.SIGTERM)

    async def keep_running(self, index: int) -> None:
        """Run worker ``index``, starting it again whenever it dies, until stopping."""
        delay = RESTART_FIRST
        while not self.stopping.is_set():
            started = trio.current_time()
            code, pid = await self._run_once(index)
            if self.stopping.is_set():
                log.info("worker %d exited with code %d", index, code)
                return
            if not self.all_ready.is_set():
                raise WorkerFailed(index, code)
            if trio.current_time() - started >= STEADY_AFTER:
                delay = RESTART_FIRST
            log.warning("worker %d exited with code %d; starting it again in %.1f s", index, code, delay)
            await self._mark_dead(pid)
            with trio.move_on_after(delay):
                await self.stopping.wait()
            delay = min(delay * 2, RESTART_MAX)

    async def _mark_dead(self, pid: int) -> None:
        """Have the live workers release the dead one's reservations soon (``mark_dead``)."""
        if self.ledger_file is None:
            return
        try:
            await trio.to_thread.run_sync(mark_dead, self.ledger_file, pid)
        except sqlite3.Error as exc:
            log.warning("the dead worker (pid %d) cannot be marked in the ledger: %s", pid, exc)

    async def _run_once(self, index: int) -> tuple[int, int]:
        """Start worker ``index``, note when it is ready, wait for its exit; its code and pid."""
        process = await trio.lowlevel.open_process(
            [*self.argv, "--worker-of", str(index)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
            env={**os.environ, PARENT_ENV: str(os.getpid())},
        )
        self.processes[index] = process
        log.info("worker %d started (pid %d)", index, process.pid)
        if self.stopping.is_set():
            process.send_signal(signal.SIGTERM)  # the signal came while it was being started
        try:
            assert process.stdout is not None
            lines = _Lines(process.stdout)
            urls: list[str] = []
            while len(urls) < self.lines and (line := await lines.next()) is not None:
                urls.append(line)
            if len(urls) == self.lines:
                self._ready(index, urls)
                while await lines.next() is not None:
                    pass  # nothing more is expected; the pipe must not fill
            return await process.wait(), process.pid
        finally:
            with trio.CancelScope(shield=True):
                await _stop(process)
                for pipe in (process.stdin, process.stdout):
                    if pipe is not None:
                        await pipe.aclose()

    def _ready(self, index: int, urls: list[str]) -> None:
        log.info("worker %d ready on %s", index, ", ".join(urls))
        self.ready.add(index)
        if not self.urls:
            self.urls = urls
        if len(self.ready) == self.count and not self.all_ready.is_set():
            self.all_ready.set()


async def _stop(process: trio.Process) -> None:
    """A worker still running when its slot is cancelled: SIGTERM, then SIGKILL."""
    if process.returncode is not None:
        return
    process.send_signal(signal.SIGTERM)
    with trio.move_on_after(KILL_AFTER):
        await process.wait()
        return
    process.kill()
    await process.wait()


class _Lines:
    """The lines of a worker's stdout, each bounded by ``MAX_LINE``."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = b""

    async def next(self) -> str | None:
        """The next line; None at the end of the stream."""
        while b"\n" not in self._buffer:
            if len(self._buffer) > MAX_LINE:
                raise ServiceFailed("a worker printed a line too long to be its URL")
            chunk = await self._stream.receive_some()
            if not chunk:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode("utf-8", "replace")


def _reserve(host: str, port: int, stack: ExitStack) -> int:
    """The port to pass on: ``port`` itself, or for 0 one picked now and held by a socket
    bound with SO_REUSEPORT (never listening: it takes no connection) until the parent ends."""
    if port != 0:
        return port
    sock = stack.enter_context(reuse_port_socket(host, 0))
    return int(sock.getsockname()[1])


def worker_command(argv: Sequence[str], count: int, ws_port: int, http_port: int | None) -> list[str]:
    """A worker's command line: the parent's own ``serve`` arguments, the last occurrence of
    an option winning (argparse), with the count and the ports fixed."""
    command = [sys.executable, "-m", "actors.cli.commands", *argv, "--workers", str(count), "--port", str(ws_port)]
    if http_port is not None:
        command += ["--http-port", str(http_port)]
    return command


def check_shareable(config: Config) -> str:
    """The ledger's location, if the workers can share it.

    Raises ConfigError for an in-memory ledger."""
    location = ledger_file(config)
    if location == MEMORY:
        raise ConfigError(
            "--workers above 1 needs a ledger the workers share: give --ledger PATH (an SQLite "
            "file) or a PostgreSQL URL (the built-in emulator's default ledger is in memory)"
        )
    return location


async def supervise(argv: Sequence[str], count: int, config: Config) -> None:
    """The parent (module docstring) until every worker has exited after a signal.

    Raises:
        ConfigError: the ledger cannot be shared or opened; a worker failed at start with 2.
        ServiceFailed: a worker failed at start otherwise.
    """
    location = check_shareable(config)
    store = None if is_postgres_url(location) else await trio.to_thread.run_sync(prepare_shared_ledger, location)
    try:
        with ExitStack() as stack, trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            ws_port = _reserve(config.host, config.port, stack)
            http_port = None if config.http_port is None else _reserve(config.host, config.http_port, stack)
            workers = _Workers(worker_command(argv, count, ws_port, http_port), count, 1 if http_port is None else 2)
            workers.ledger_file = None if store is None else location
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_forward_signals, workers, signals)
                    nursery.start_soon(_announce, workers)
                    async with trio.open_nursery() as slots:
                        for index in range(1, count + 1):
                            slots.start_soon(workers.keep_running, index)
                    # Every worker has exited after a signal.
                    nursery.cancel_scope.cancel()
            except* WorkerFailed as group:
                failed: BaseException = group
                while isinstance(failed, BaseExceptionGroup):  # the nurseries nest the groups
                    failed = failed.exceptions[0]
                assert isinstance(failed, WorkerFailed)
                if failed.code == 2:
                    raise ConfigError(f"{failed} (its log says why)") from None
                raise ServiceFailed(f"{failed} (its log says why)") from None
    finally:
        if store is not None:
            store.close()
    log.info("switchboard stopped (%d workers)", count)


async def _forward_signals(workers: _Workers, signals: AsyncIterator[int]) -> None:
    """Stop on the first signal, forward each (module docstring, "Signals")."""
    async for signum in signals:
        if not workers.stopping.is_set():
            log.info("%s: stopping %d workers", signal.Signals(signum).name, workers.count)
        workers.stopping.set()
        workers.forward(signum)


async def _announce(workers: _Workers) -> None:
    """Print the URLs once every worker is ready (the first lines of stdout)."""
    await workers.all_ready.wait()
    for url in workers.urls:
        print(url, flush=True)
    log.info("%d workers ready on %s", workers.count, ", ".join(workers.urls))
