"""In-memory stand-ins for the actor tests (tests/README.md "Memory transports"): an upstream
answered by a function through httpx's ``MockTransport``, SSE bodies streamed chunk by chunk,
and a CostLedger that records what it is sent. Nothing here opens a socket or a thread, so
the ``autojump_clock`` is safe with all of it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Final

import httpx
import msgspec
import trio

from actors._util import answer
from actors.config.settings import Config, Secret
from actors.messages.ledger import (
    CostLedgerAddress,
    CostLedgerMsg,
    RecordDuration,
    RecordUsage,
    UsageRecorded,
)
from protocol.request_builder import BuildSettings

BASE_URL: Final = "http://upstream.test"
API_KEY: Final = "sk-ant-actor-test-0123456789"
SONNET: Final = "claude-sonnet-4-6"
OPUS: Final = "claude-opus-4-6"

Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


def config(**changes: Any) -> Config:
    """A gateway configuration for the upstream at ``BASE_URL``: no ledger file, no
    background traffic, no cache breakpoints, a fixed retry seed."""
    base = Config(
        base_url=BASE_URL,
        api_key=Secret(API_KEY),
        retry_seed=1234,
        ledger_path=":memory:",
        disable_nonessential_traffic=True,
        build=BuildSettings(disable_prompt_caching=True),
    )
    return msgspec.structs.replace(base, **changes)


def sse(*events: tuple[str, dict[str, Any]]) -> list[bytes]:
    """Each event as its own SSE chunk (``event:`` and ``data:`` lines)."""
    return [f"event: {name}\ndata: {msgspec.json.encode(data).decode()}\n\n".encode() for name, data in events]


def message_events(
    text: str = "Hello", *, model: str = SONNET, output_tokens: int = 5, deltas: int = 1
) -> list[tuple[str, dict[str, Any]]]:
    """The events of a complete one-text-block answer, as the Messages API streams it:
    ``text`` in each of ``deltas`` text deltas."""
    return [
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_test", "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 1},
        }}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        *[("content_block_delta", {"type": "content_block_delta", "index": 0,
                                   "delta": {"type": "text_delta", "text": text}})] * deltas,
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"output_tokens": output_tokens}}),
        ("message_stop", {"type": "message_stop"}),
    ]


class ChunkedBody(httpx.AsyncByteStream):
    """A response body sent chunk by chunk. ``gate``: awaited before each chunk (the test
    releases the stream step by step). ``then``: raised after the last chunk (a connection
    reset mid-stream). ``closed`` is set when the gateway closes the response."""

    def __init__(
        self,
        chunks: Sequence[bytes],
        *,
        gate: Callable[[int], Awaitable[None]] | None = None,
        then: Exception | None = None,
    ) -> None:
        self._chunks = list(chunks)
        self._gate = gate
        self._then = then
        self.sent = 0
        self.closed = trio.Event()

    def __aiter__(self) -> AsyncIterator[bytes]:
        # An iterator object, not an async generator: one the gateway leaves unfinished
        # (a cancelled or failed attempt) has nothing for the garbage collector to finalize.
        return self

    async def __anext__(self) -> bytes:
        if self.sent == len(self._chunks):
            if self._then is not None:
                raise self._then
            raise StopAsyncIteration
        if self._gate is not None:
            await self._gate(self.sent)
        self.sent += 1
        return self._chunks[self.sent - 1]

    async def aclose(self) -> None:
        self.closed.set()


def stream_response(chunks: Sequence[bytes], **options: Any) -> httpx.Response:
    return httpx.Response(
        200, headers={"content-type": "text/event-stream", "request-id": "req_test"}, stream=ChunkedBody(chunks, **options)
    )


def error_response(status: int, error_type: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"type": "error", "error": {"type": error_type, "message": f"upstream says {error_type}"}}
    return httpx.Response(status, headers={"content-type": "application/json", **(headers or {})}, json=body)


class Upstream:
    """A scripted upstream: each request to ``/v1/messages`` (or ``.../count_tokens``) is answered by the next script entry (a
    function of the request, or a ready response; a 500 when none is left); the requests and
    the trio time each came are kept."""

    def __init__(self, *script: httpx.Response | Handler) -> None:
        self._script = list(script)
        self.requests: list[httpx.Request] = []
        self.others: list[httpx.Request] = []
        self.times: list[float] = []
        self.transport = httpx.MockTransport(self._handle)

    def then(self, *script: httpx.Response | Handler) -> None:
        self._script.extend(script)

    def bodies(self) -> list[Any]:
        return [msgspec.json.decode(request.content) for request in self.requests]

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.startswith("/v1/messages"):
            # Background requests (the model list, the bootstrap) get no answer worth reading
            # and use up no script entry.
            self.others.append(request)
            return error_response(404, "not_found_error")
        self.requests.append(request)
        self.times.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        if not self._script:
            return error_response(500, "api_error")
        step = self._script.pop(0)
        return step if isinstance(step, httpx.Response) else await step(request)


class FakeLedger:
    """A CostLedger that keeps every ``RecordUsage`` (answered at a fixed price) and every
    ``RecordDuration``; other messages are dropped (their reply closes unanswered)."""

    COST: Final = 1_000_000

    def __init__(self) -> None:
        self.usage: list[RecordUsage] = []
        self.durations: list[RecordDuration] = []

    def finals(self) -> list[RecordUsage]:
        return [record for record in self.usage if record.final]

    async def run(self, *, task_status: trio.TaskStatus[CostLedgerAddress] = trio.TASK_STATUS_IGNORED) -> None:
        address, inbox = trio.open_memory_channel[CostLedgerMsg](0)
        with inbox:
            task_status.started(address)
            async for msg in inbox:
                match msg:
                    case RecordUsage():
                        self.usage.append(msg)
                        answer(msg.reply, UsageRecorded(
                            cost_pico=self.COST, session_cost_pico=self.COST, unknown_model=False, recorded=True
                        ))
                    case RecordDuration():
                        self.durations.append(msg)
                    case _:
                        reply = getattr(msg, "reply", None)
                        if isinstance(reply, trio.MemorySendChannel):
                            reply.close()
