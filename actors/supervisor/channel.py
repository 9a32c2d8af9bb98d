"""One query's side of the conversation with its client: frames out, waits, totals.

The RetrySupervisor's query tasks use these to talk to the query's outbound channel:
``send`` (raises ``ClientGone`` when nobody listens any more), ``deliver`` (says so
instead), heartbeats during any wait of more than ``HEARTBEAT_INTERVAL``, and the query's
running usage and cost across its attempts (``QueryTotals``).
"""

from __future__ import annotations

from typing import Final

import trio

from actors.messages.relay import AttemptOutcome
from actors.observe.metrics import Outcome
from protocol.errors import ClientGone
from protocol.frames import GatewayFrame, Heartbeat
from protocol.usage import EMPTY_USAGE, Usage, add_usage

# docs/reference/reference-client.md 1.1 HEARTBEAT_INTERVAL_MS; docs/protocol.md: a heartbeat at least every 30 s
# of a wait, so a client never mistakes a long backoff for a hang.
HEARTBEAT_INTERVAL: Final = 30.0


class QueryTotals:
    """A query's running usage and cost, across attempts (aborted ones included), whether the
    ledger committed all of it, and how it ended (for the metrics)."""

    __slots__ = (
        "content_seen", "cost_pico", "cost_recorded", "error_type", "outcome", "session_cost_pico", "usage",
    )

    def __init__(self) -> None:
        self.usage: Usage = EMPTY_USAGE
        self.cost_pico = 0
        self.session_cost_pico: int | None = None
        self.cost_recorded = True
        self.outcome: Outcome = "aborted"
        self.error_type: str | None = None
        # Until an attempt relays content, the next one measures the time to first token.
        self.content_seen = False

    def add(self, outcome: AttemptOutcome) -> None:
        self.usage = add_usage(self.usage, outcome.usage)
        self.cost_pico += outcome.cost_pico
        self.cost_recorded = self.cost_recorded and outcome.cost_recorded
        self.content_seen = self.content_seen or outcome.relayed > 0
        if outcome.session_cost_pico is not None:
            self.session_cost_pico = outcome.session_cost_pico


def epoch_ms(epoch: float | None) -> int | None:
    return None if epoch is None else round(epoch * 1000)


async def deliver(outbound: trio.MemorySendChannel[GatewayFrame], frame: GatewayFrame) -> bool:
    """Send a frame to the client; False when nobody listens any more. A checkpoint."""
    try:
        await outbound.send(frame)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return False
    return True


async def send(outbound: trio.MemorySendChannel[GatewayFrame], frame: GatewayFrame) -> None:
    """Send a frame to the client. A checkpoint.

    Raises:
        ClientGone: nobody listens any more.
    """
    if not await deliver(outbound, frame):
        raise ClientGone


async def heartbeat(
    outbound: trio.MemorySendChannel[GatewayFrame], query_id: str, attempt: int, remaining: float
) -> None:
    """A ``heartbeat`` frame: the wait after ``attempt`` has ``remaining`` seconds to go."""
    await send(outbound, Heartbeat(id=query_id, attempt=attempt, remaining_ms=max(round(remaining * 1000), 0)))


async def wait_with_heartbeats(
    outbound: trio.MemorySendChannel[GatewayFrame], query_id: str, attempt: int, delay: float
) -> None:
    """Sleep ``delay`` on trio's clock, with a heartbeat frame every HEARTBEAT_INTERVAL."""
    deadline = trio.current_time() + delay
    while True:
        remaining = deadline - trio.current_time()
        if remaining <= 0:
            return
        if remaining > HEARTBEAT_INTERVAL:
            await trio.sleep(HEARTBEAT_INTERVAL)
            await heartbeat(outbound, query_id, attempt, deadline - trio.current_time())
        else:
            await trio.sleep_until(deadline)
