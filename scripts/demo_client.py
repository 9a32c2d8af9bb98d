"""A minimal Switchboard client: send one prompt, stream the answer, show what it cost.

Written against the public WebSocket protocol only (``docs/protocol.md``), so it
doubles as an example of a client: connect, wait for ``ready``, send a ``query``, print the
``text_delta`` events as they arrive, follow ``retry``/``tombstone``/``fallback`` notices,
and stop at the query's one terminal frame (``done``, ``aborted`` or ``error``).

Usage::

    # against a gateway you already run (./dev serve prints its ws:// URL)
    python scripts/demo_client.py "Write a haiku about switchboards"
    python scripts/demo_client.py --url ws://127.0.0.1:8765 --session demo-1 \\
        --model claude-sonnet-4-6 "What did I just ask?"

    # start a gateway for the demo (no credentials: it answers from its built-in emulator)
    python scripts/demo_client.py --start "hello"
    python scripts/demo_client.py --start "<<emulator:ok:deltas=20,pace_ms=50>> hello"
    python scripts/demo_client.py --start "<<emulator:529:times=1>> retried once, then answered"

    ./dev demo --start "hello"

Output: the answer's text on stdout as it streams; retries and other notices on stderr; at
the end, on stdout, the stop reason, the usage, the query's cost and the session's total.

Exit status: 0 the query finished (``done``); 1 it failed (``error``, ``aborted``, or the
query frame was ``rejected``); 3 the gateway could not be started, reached, or went away
before the query ended; 130 interrupted.
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any, Final

import msgspec
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

REPO: Final = Path(__file__).resolve().parent.parent
DEFAULT_URL: Final = "ws://127.0.0.1:8765"
DEFAULT_MODEL: Final = "claude-sonnet-4-6"
# A cold interpreter importing the gateway takes about a second; 30 s only fails a broken one.
START_TIMEOUT: Final = 30.0
# Time for the gateway to finish in-flight work on SIGINT before it is killed.
STOP_TIMEOUT: Final = 5.0
# Credentials and base URL are removed for --start so the gateway uses its built-in emulator
# and never reaches the real API from a demo.
_UPSTREAM_ENV: Final = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL")

EXIT_FAILED: Final = 1
EXIT_UNREACHABLE: Final = 3
EXIT_INTERRUPTED: Final = 130


# --- the frames this client reads (lenient: unknown fields are ignored, new types skipped) ---


class _Head(msgspec.Struct):
    """Just enough of any frame to dispatch it."""

    type: str
    id: str | None = None


class ErrorInfo(msgspec.Struct):
    type: str
    message: str
    status: int | None = None


class Delta(msgspec.Struct):
    # message_delta's ``delta`` has no ``type``; content_block_delta's always has one.
    type: str | None = None
    text: str | None = None


class StreamEvent(msgspec.Struct):
    type: str
    delta: Delta | None = None


class Ready(msgspec.Struct):
    session_id: str
    resumed: bool = False


class EventFrame(msgspec.Struct):
    attempt: int
    event: StreamEvent


class RetryFrame(msgspec.Struct):
    attempt: int
    max_retries: int
    delay_ms: int
    error: ErrorInfo


class Notice(msgspec.Struct):
    """A ``tombstone``, ``fallback`` or ``fast_mode`` frame: the fields each of them has."""

    attempt: int = 0
    from_model: str = ""
    to_model: str = ""
    reason: str = ""


class Done(msgspec.Struct):
    model: str
    stop_reason: str | None
    usage: dict[str, Any]
    cost_usd: float
    session_cost_usd: float
    attempts: int
    duration_ms: int


class Aborted(msgspec.Struct):
    usage: dict[str, Any]
    cost_usd: float


class Failed(msgspec.Struct):
    """An ``error`` or ``rejected`` frame."""

    error: ErrorInfo


_HEAD: Final = msgspec.json.Decoder(_Head)
_READY: Final = msgspec.json.Decoder(Ready)
_EVENT: Final = msgspec.json.Decoder(EventFrame)
_RETRY: Final = msgspec.json.Decoder(RetryFrame)
_NOTICE: Final = msgspec.json.Decoder(Notice)
_DONE: Final = msgspec.json.Decoder(Done)
_ABORTED: Final = msgspec.json.Decoder(Aborted)
_FAILED: Final = msgspec.json.Decoder(Failed)
_ENCODER: Final = msgspec.json.Encoder()


class DemoError(Exception):
    """The demo cannot go on; ``exit_code`` says why (see the module docstring)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# --- formatting ---------------------------------------------------------------------------


def format_cost(usd: float) -> str:
    """``$1.23`` above half a dollar, ``$0.0048`` below (cents hide small costs)."""
    return f"${usd:.2f}" if usd > 0.5 else f"${usd:.4f}"


def format_usage(usage: dict[str, Any]) -> str:
    """The token counts of a usage object, in one line."""

    def count(name: str) -> int:
        value = usage.get(name)
        return value if isinstance(value, int) else 0

    return (
        f"{count('input_tokens')} input, {count('output_tokens')} output tokens "
        f"(cache: {count('cache_read_input_tokens')} read, "
        f"{count('cache_creation_input_tokens')} written)"
    )


def _note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- the query ----------------------------------------------------------------------------


def _session_url(base: str, session: str | None) -> str:
    base = base.rstrip("/")
    return f"{base}/v1/sessions/{session}" if session else f"{base}/v1/sessions"


async def run_query(url: str, session: str | None, model: str, max_tokens: int, prompt: str) -> int:
    """Run one query on ``url`` and print it; return the exit status.

    Raises DemoError when the gateway cannot be reached or closes before the query ends.
    """
    request = {
        "model": model,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": prompt}],
    }
    query = {"type": "query", "id": "q1", "request": request}
    try:
        async with open_websocket_url(_session_url(url, session)) as ws:
            ready = _READY.decode(await ws.get_message())
            _note(f"session {ready.session_id}{' (resumed)' if ready.resumed else ''}")
            # The protocol wants text frames; msgspec encodes to bytes, which would go binary.
            await ws.send_message(_ENCODER.encode(query).decode())
            return await _follow(ws, "q1")
    except ConnectionRejected as exc:
        body = (exc.body or b"").decode(errors="replace").strip()
        raise DemoError(f"{url} refused the connection: HTTP {exc.status_code} {body}".rstrip(), EXIT_UNREACHABLE) from exc
    except HandshakeError as exc:
        # trio-websocket raises a bare HandshakeError for a failed connect: the why is its cause.
        why = exc.__cause__ or exc
        raise DemoError(f"cannot open {url}: {why!s} ({type(why).__name__})", EXIT_UNREACHABLE) from exc
    except ConnectionClosed as exc:
        raise DemoError(f"the gateway closed the connection: {exc.reason}", EXIT_UNREACHABLE) from exc
    except OSError as exc:
        raise DemoError(f"cannot reach {url}: {exc}", EXIT_UNREACHABLE) from exc


async def _follow(ws: WebSocketConnection, query_id: str) -> int:
    """Print the frames of ``query_id`` until its terminal frame; return the exit status."""
    # Whether stdout is mid-line, so notices and the summary start on a fresh line.
    midline = False

    def end_line() -> None:
        nonlocal midline
        if midline:
            print(flush=True)
            midline = False

    while True:
        raw = await ws.get_message()
        head = _HEAD.decode(raw)
        if head.id not in (None, query_id):
            continue
        match head.type:
            case "event":
                event = _EVENT.decode(raw).event
                delta = event.delta
                if event.type == "content_block_delta" and delta and delta.type == "text_delta":
                    sys.stdout.write(delta.text or "")
                    sys.stdout.flush()
                    midline = True
            case "retry":
                retry = _RETRY.decode(raw)
                end_line()
                _note(
                    f"retrying in {retry.delay_ms / 1000:g}s (attempt {retry.attempt}/"
                    f"{retry.max_retries}): {retry.error.type}: {retry.error.message}"
                )
            case "tombstone" | "fallback" | "fast_mode":
                notice = _NOTICE.decode(raw)
                end_line()
                if head.type == "tombstone":
                    _note(f"(attempt {notice.attempt} failed: discard its text above)")
                elif head.type == "fallback":
                    _note(f"switching from {notice.from_model} to {notice.to_model}: {notice.reason}")
                else:
                    _note(f"fast mode off: {notice.reason}")
            case "done":
                done = _DONE.decode(raw)
                end_line()
                print()
                print(f"stop reason: {done.stop_reason} ({done.model}, {done.attempts} attempt(s), {done.duration_ms} ms)")
                print(f"usage: {format_usage(done.usage)}")
                print(f"cost: {format_cost(done.cost_usd)} (session total {format_cost(done.session_cost_usd)})")
                return 0
            case "aborted":
                aborted = _ABORTED.decode(raw)
                end_line()
                _note(f"aborted; usage: {format_usage(aborted.usage)}, cost {format_cost(aborted.cost_usd)}")
                return EXIT_FAILED
            case "error" | "rejected":
                failed = _FAILED.decode(raw)
                end_line()
                _note(f"{head.type}: {failed.error.type}: {failed.error.message}")
                return EXIT_FAILED
            case _:
                # heartbeat, and frame types added after this client was written.
                pass


# --- --start: a gateway of our own ------------------------------------------------------


def switchboard_command() -> list[str]:
    """How to run the ``switchboard`` CLI: the venv's script, else its module in this Python.

    The fallback serves a checkout whose package is not installed (yet).
    """
    script = Path(sys.executable).with_name("switchboard")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from actors.cli.commands import main; main()"]


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _UPSTREAM_ENV}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


async def read_first_line(stream: trio.abc.ReceiveStream) -> str:
    """The first line ``stream`` yields, without its newline. Raises EOFError at end of stream."""
    buffer = b""
    while b"\n" not in buffer:
        chunk = await stream.receive_some()
        if not chunk:
            raise EOFError("the process closed its stdout before printing a line")
        buffer += chunk
    return buffer.split(b"\n", 1)[0].decode().strip()


async def stop_process(process: trio.Process, grace: float = STOP_TIMEOUT) -> None:
    """SIGINT (a graceful stop for a trio program), then SIGKILL after ``grace`` seconds; reaps it."""
    with trio.CancelScope(shield=True):
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            with trio.move_on_after(grace):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


@asynccontextmanager
async def open_gateway(log: IO[bytes]) -> AsyncIterator[str]:
    """Start ``switchboard serve --port 0`` on loopback; yield its ws:// URL; stop it on exit.

    The gateway's logs go to ``log``. Raises DemoError when it does not print its URL within
    START_TIMEOUT.
    """
    command = [*switchboard_command(), "serve", "--host", "127.0.0.1", "--port", "0"]
    process = await trio.lowlevel.open_process(
        command,
        stdout=subprocess.PIPE,
        stderr=log,
        env=_child_env(),
        cwd=str(REPO),
        # A shell starts background jobs with SIGINT ignored and Python keeps it so: restore
        # the default so that stop_process's SIGINT stops the gateway gracefully.
        preexec_fn=functools.partial(signal.signal, signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert process.stdout is not None
        url: str | None = None
        with trio.move_on_after(START_TIMEOUT):
            try:
                url = await read_first_line(process.stdout)
            except EOFError:
                pass
        if url is None or not url.startswith("ws://"):
            raise DemoError(f"the gateway did not start (first line: {url!r})", EXIT_UNREACHABLE)
        yield url
    finally:
        await stop_process(process)


async def amain(args: argparse.Namespace) -> int:
    prompt = " ".join(args.prompt)
    if not args.start:
        return await run_query(args.url, args.session, args.model, args.max_tokens, prompt)
    with tempfile.TemporaryFile() as log:
        try:
            async with open_gateway(log) as url:
                _note(f"started a gateway at {url} (built-in emulator)")
                return await run_query(url, args.session, args.model, args.max_tokens, prompt)
        except DemoError:
            log.seek(0)
            tail = log.read().decode(errors="replace").strip().splitlines()[-20:]
            if tail:
                _note("gateway log (last lines):\n  " + "\n  ".join(tail))
            raise


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Send one prompt through Switchboard and stream the answer.",
        epilog="--start runs `switchboard serve --port 0` with no credentials (built-in emulator).",
    )
    parser.add_argument("prompt", nargs="+", metavar="PROMPT", help="the user message (words are joined)")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"the gateway's ws:// URL (default {DEFAULT_URL})")
    parser.add_argument("--session", default=None, help="session id (default: a fresh session)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model (default {DEFAULT_MODEL})")
    parser.add_argument("--max-tokens", type=int, default=1024, help="max_tokens (default 1024)")
    parser.add_argument("--start", action="store_true", help="start a gateway for this run, then stop it")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    status = EXIT_UNREACHABLE
    # Raised inside trio-websocket's nursery, these may arrive in an exception group.
    try:
        status = trio.run(amain, args)
    except* DemoError as group:
        for exc in group.exceptions:
            _note(f"demo_client: {exc}")
            if isinstance(exc, DemoError):
                status = exc.exit_code
    except* KeyboardInterrupt:
        status = EXIT_INTERRUPTED
    return status


if __name__ == "__main__":
    sys.exit(main())
