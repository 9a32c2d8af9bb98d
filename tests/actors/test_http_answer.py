"""The HTTP door's SSE answer (actors/doors/http_answer.py): what is held before the first write."""

from __future__ import annotations

import msgspec
import trio
import trio.testing
from hypercorn.typing import ASGISendEvent

from actors.doors.asgi import Exchange
from actors.doors.http_answer import MAX_HELD, Reply, answer_stream
from actors.supervisor.options import UpstreamHeads
from protocol.frames import EventFrame, GatewayFrame
from protocol.wire import JSON


def _ping() -> EventFrame:
    return EventFrame(id="q", attempt=1, model="m", event=msgspec.Raw(JSON.encode({"type": "ping"})))


async def test_the_held_prelude_is_bounded_past_it_the_response_starts() -> None:
    """Content-free events are held before the status line, but never more than ``MAX_HELD``:
    the next one starts the response and writes them all (a run of prelude events is not
    buffered without end)."""
    sent: list[ASGISendEvent] = []

    async def send(message: ASGISendEvent) -> None:
        sent.append(message)

    exchange = Exchange(send)
    frames_in, frames_out = trio.open_memory_channel[GatewayFrame](0)
    reply = Reply(request_id="req_1", heads=UpstreamHeads())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(answer_stream, frames_out, exchange, reply)
        for _ in range(MAX_HELD):
            await frames_in.send(_ping())
        await trio.testing.wait_all_tasks_blocked()
        assert sent == [] and not exchange.started  # all held, nothing written yet
        await frames_in.send(_ping())
        await trio.testing.wait_all_tasks_blocked()
        assert exchange.status == 200 and sent[0]["type"] == "http.response.start"
        body = b"".join(m["body"] for m in sent[1:] if m["type"] == "http.response.body")
        assert body.count(b"event: ping") == MAX_HELD + 1
        await frames_in.aclose()
