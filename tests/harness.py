"""Test harness: a docs/protocol.md WebSocket client and request builders (import as ``harness``)."""

from __future__ import annotations

import errno
import inspect
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Collection, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Final

import msgspec
import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import WebSocketConnection, wrap_client_stream

from actors.server import Server
from actors.store.rows import LoadedSession, RecordWrite, SessionRow, Store, StoreError
from actors.store.sqlite import LedgerStore
from protocol.dashboard import Bucket, OwnerSpend, Scope, SessionSpend, SpendRow
from protocol.frames import TERMINAL_FRAMES, GatewayFrame, decode_frame


class Client:
    """A WebSocket client speaking docs/protocol.md: send dicts, receive decoded frames."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws

    async def send(self, **frame: Any) -> None:
        await self.ws.send_message(msgspec.json.encode(frame).decode())

    async def receive(self) -> GatewayFrame:
        return decode_frame(await self.ws.get_message())

    async def until_terminal(self, query_id: str) -> list[GatewayFrame]:
        """Every frame of ``query_id`` up to and including its terminal frame."""
        frames: list[GatewayFrame] = []
        while True:
            frame = await self.receive()
            if getattr(frame, "id", None) != query_id:
                continue
            frames.append(frame)
            if isinstance(frame, TERMINAL_FRAMES):
                return frames


@asynccontextmanager
async def connect(server: Server, session: str = "s1", **kwargs: Any) -> AsyncIterator[Client]:
    """A client connection to ``session``. The test owns the TCP stream and closes it: the
    trio-websocket client leaves its socket open when the server closes first."""
    async with connect_url(server.ws_url, session, **kwargs) as client:
        yield client


@asynccontextmanager
async def connect_url(ws_url: str, session: str = "s1", **kwargs: Any) -> AsyncIterator[Client]:
    """``connect`` to the WebSocket door at ``ws_url`` (a ``switchboard serve`` process's)."""
    host, _, port = ws_url.removeprefix("ws://").rpartition(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream, trio.open_nursery() as nursery:
        ws = await wrap_client_stream(nursery, stream, host, f"/v1/sessions/{session}", **kwargs)
        try:
            yield Client(ws)
        finally:
            await ws.aclose()
            nursery.cancel_scope.cancel()


# What every request to the HTTP door carries, as the SDKs send it (the API's 400 without it).
API_VERSION: Final = {"anthropic-version": "2023-06-01"}


def chat(text: str = "Hello there", *, model: str = "claude-sonnet-4-6", max_tokens: int = 256) -> dict[str, Any]:
    return {"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": text}]}


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any credential or gateway setting, plus ``extra``:
    with nothing added, the gateway starts its built-in emulator."""
    prefixes = ("ANTHROPIC_", "CLAUDE_CODE_", "SWITCHBOARD_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(extra)
    return env


class ServeProcess:
    """A running ``switchboard serve`` process: its stdout lines, and its stderr so far."""

    def __init__(self, process: trio.Process, stderr: bytearray) -> None:
        self.process = process
        self.stderr = stderr

    async def read_line(self) -> str:
        """The next stdout line (within 30 s); fails with the stderr so far if it ends."""
        assert self.process.stdout is not None
        line = b""
        with trio.fail_after(30):
            while not line.endswith(b"\n"):
                chunk = await self.process.stdout.receive_some(1)
                assert chunk, bytes(self.stderr).decode()
                line += chunk
        return line.decode().strip()


@asynccontextmanager
async def serve_process(env: dict[str, str], *args: str) -> AsyncIterator[ServeProcess]:
    """``switchboard serve --port 0 --ledger :memory: ARGS`` as a real process, stopped
    (SIGTERM, then SIGKILL) and its pipes closed on exit."""
    command = [sys.executable, "-c", "from actors.cli.commands import main; main()", "serve", "--port", "0", "--ledger", ":memory:", *args]
    process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    stderr = bytearray()

    async def collect_stderr() -> None:
        assert process.stderr is not None
        async for chunk in process.stderr:
            stderr.extend(chunk)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect_stderr)
            try:
                yield ServeProcess(process, stderr)
            finally:
                process.terminate()
                with trio.move_on_after(10, shield=True):
                    await process.wait()
    finally:
        process.kill()
        with trio.move_on_after(10, shield=True):
            await process.wait()
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                await pipe.aclose()


# --- supervision (docs/supervision.md) -----------------------------------------------------

POISON = "POISON"


def poison(monkeypatch: Any, target: Any, name: str, exc: type[Exception] = RuntimeError, marker: str = POISON) -> None:
    """Make ``target.name`` raise ``exc`` whenever ``marker`` appears in its arguments' reprs
    (an injected bug that one input triggers); every other call goes through."""
    real = getattr(target, name)

    def check(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if marker in repr(args) or marker in repr(kwargs):
            raise exc(f"injected failure in {name}")

    if inspect.iscoroutinefunction(real):

        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            check(args, kwargs)
            return await real(*args, **kwargs)

        monkeypatch.setattr(target, name, async_wrapper)
    else:

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            check(args, kwargs)
            return real(*args, **kwargs)

        monkeypatch.setattr(target, name, wrapper)


def internal_errors(server: Server) -> dict[str, float]:
    """``switchboard_internal_errors_total`` by ``where``."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(server.gateway.metrics.render().decode()):
        for sample in family.samples:
            if sample.name == "switchboard_internal_errors_total":
                found[sample.labels["where"]] = sample.value
    return found


# A query that streams three events, then waits (on the trio clock) until the test moves the
# clock on: on the ``mock_clock``, it is in flight for as long as the test needs.
HELD = "<<emulator:stall:after=3,seconds=60>> a healthy session goes on"


@asynccontextmanager
async def healthy_session(server: Server, clock: trio.testing.MockClock) -> AsyncIterator[None]:
    """A query streaming on another connection (session ``healthy``) throughout the block;
    on leaving, the clock moves on and the query must end with ``done``, undisturbed."""
    frames: list[GatewayFrame] = []
    streaming = trio.Event()

    async def run() -> None:
        async with connect(server, "healthy") as client:
            await client.receive()
            await client.send(type="query", id="h", request=chat(HELD))
            while not frames or not isinstance(frames[-1], TERMINAL_FRAMES):
                frames.append(await client.receive())
                streaming.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await streaming.wait()
        yield
        clock.jump(60)
    assert type(frames[-1]).__name__ == "Done", frames[-1]
    assert [f for f in frames if isinstance(f, TERMINAL_FRAMES)] == frames[-1:]


# --- ledger faults ---------------------------------------------------------------------------

@contextmanager
def tmpfs(directory: Path, size: str, *, read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of ``size`` (``mount -o size=``) mounted on ``directory`` for the block, read-only
    if asked; skips the test, saying why, where mounting is not permitted (not root)."""
    directory.mkdir(exist_ok=True)
    options = f"size={size},mode=0700" + (",ro" if read_only else "")
    try:
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(directory)], capture_output=True, check=False
        )
    except FileNotFoundError:
        pytest.skip("no mount command: cannot test on a real small or read-only filesystem")
    if result.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {result.stderr.decode().strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], capture_output=True, check=False)


def remount_read_only(directory: Path) -> None:
    """Make a ``tmpfs`` mount read-only in place (root ignores permission bits, not this)."""
    subprocess.run(["mount", "-o", "remount,ro", str(directory)], capture_output=True, check=True)


def fill_disk(directory: Path) -> Path:
    """Write a file in ``directory`` until its filesystem is full (ENOSPC); returns it."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)
    return filler


# What SQLite says on a full disk, an I/O error, a corrupt page.
DISK_FULL = "database or disk is full"
IO_ERROR = "disk I/O error"
MALFORMED = "database disk image is malformed"


class FaultyStore:
    """A real store that fails on demand: every write while ``write_error`` is set (with
    ``only_final``, those holding a final record), every load that touches ``bad_sessions``.
    Records when each write was tried (trio time). It raises what the inner store raises:
    SQLite's errors for an SQLite store, ``StoreError`` for another."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.sqlite = isinstance(inner, LedgerStore)
        self.write_error: str | None = None
        # Only writes holding a final usage record fail (a query's last commit), so a query
        # starts, commits its provisional record, then meets the fault.
        self.only_final = False
        self.bad_sessions: set[str] = set()
        self.write_times: list[float] = []
        # Every dashboard read (``spend``, ``top_sessions``, ``top_owners``) fails while set.
        self.read_error: str | None = None

    def load(self, session_ids: Collection[str]) -> dict[str, LoadedSession]:
        if self.bad_sessions & set(session_ids):
            raise sqlite3.DatabaseError(MALFORMED) if self.sqlite else StoreError(MALFORMED)
        return self.inner.load(session_ids)

    def write(self, sessions: Sequence[SessionRow], records: Sequence[RecordWrite]) -> None:
        self.write_times.append(trio.current_time())
        if self.write_error is not None and (not self.only_final or any(r.final for r in records)):
            raise sqlite3.OperationalError(self.write_error) if self.sqlite else StoreError(self.write_error)
        self.inner.write(sessions, records)

    def close(self) -> None:
        self.inner.close()

    def _reading(self) -> None:
        if self.read_error is not None:
            raise sqlite3.OperationalError(self.read_error)

    def spend(self, since: str, bucket: Bucket, scope: Scope) -> list[SpendRow]:
        self._reading()
        return self.inner.spend(since, bucket, scope)

    def top_sessions(self, since: str, scope: Scope, limit: int) -> list[SessionSpend]:
        self._reading()
        return self.inner.top_sessions(since, scope, limit)

    def top_owners(self, since: str, scope: Scope, limit: int) -> list[OwnerSpend]:
        self._reading()
        return self.inner.top_owners(since, scope, limit)


def corrupt_ledger(path: Path) -> None:
    """A valid ledger of many pages, then pages in its middle overwritten (header intact)."""
    store = LedgerStore.open(str(path))
    store.close()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN")
    for n in range(400):
        db.execute(
            "INSERT INTO sessions (session_id, owner, created_at, updated_at, api_duration_ms, "
            "api_duration_without_retries_ms) VALUES (?, NULL, '2026-01-01', '2026-01-01', 0, 0)",
            (f"session-{n:04}-" + "x" * 200,),
        )
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    page = 4096
    data = bytearray(path.read_bytes())
    pages = len(data) // page
    assert pages >= 10, pages
    for number in range(pages // 3, pages // 3 + 4):
        data[number * page : (number + 1) * page] = bytes([0xA5]) * page
    path.write_bytes(bytes(data))
