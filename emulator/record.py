"""The request log's entry: one request as the emulator saw it, and what became of it.

The shell (``emulator/server.py``) creates one per request read and marks a disconnect and
the end of handling; the router (``emulator/router.py``) notes the fault it applied;
``delivery.deliver`` notes the status and progress while it writes the response.
``GET /_emulator/requests`` shows each one's ``summary``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from .faults import Fault


@dataclass(eq=False)
class RecordedRequest:
    """One request as the emulator saw it, updated while its response is written.

    ``headers`` have lower-cased names (the last of repeated names wins); ``json`` is the
    decoded body or None; ``fault`` the fault applied; ``status`` the status line sent;
    ``events_sent`` the SSE events fully written; ``completed`` the whole response
    written; ``disconnected`` the client left before that; ``finished`` is set once
    handling ended, whichever way. ``request_id`` is the ``request-id`` header sent.
    """

    index: int
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: object | None
    fault: Fault | None = None
    status: int | None = None
    events_sent: int = 0
    completed: bool = False
    disconnected: bool = False
    finished: trio.Event = field(default_factory=trio.Event)
    request_id: str = ""

    def summary(self) -> dict[str, object]:
        """The JSON-able line ``GET /_emulator/requests`` shows for this request."""
        return {
            "index": self.index,
            "method": self.method,
            "path": self.path,
            "request_id": self.request_id,
            "status": self.status,
            "fault": None if self.fault is None else self.fault.spec,
            "events_sent": self.events_sent,
            "completed": self.completed,
            "disconnected": self.disconnected,
        }
