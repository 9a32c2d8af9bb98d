"""The request log's entry: one request as the emulator saw it, and what became of it.

The shell (``emulator/server.py``) creates one per request read and marks a disconnect and
the end of handling; the router (``emulator/router.py``) notes the fault it applied;
``delivery.deliver`` notes the status and progress while it writes the response.
``GET /_emulator/requests`` shows each one's ``summary`` (credentials masked).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import trio

from .faults import Fault

# Headers whose values are credentials: the log shows a short prefix of each (enough to
# tell two keys apart), never the rest.
SECRET_HEADERS: Final = frozenset(
    {
        "x-api-key", "api-key", "authorization", "proxy-authorization", "cookie",
        "set-cookie", "x-amz-security-token", "x-identity-header",
    }
)  # fmt: skip
# How much of a secret stays visible: a key's vendor prefix, not the key (and at most a
# third of a short one).
SECRET_PREFIX: Final = 6
# A body that is not JSON is shown as text, at most this many characters.
TEXT_BODY_LIMIT: Final = 65536


def mask_secret(name: str, value: str) -> str:
    """``value`` of header ``name`` with a credential masked: ``sk-ant…`` for a key,
    ``Bearer eyJ0eX…`` for a bearer token (the scheme kept); other headers unchanged."""
    if name not in SECRET_HEADERS:
        return value
    scheme, space, rest = value.partition(" ")
    if space and name in ("authorization", "proxy-authorization"):
        return f"{scheme} {_prefix(rest)}…"
    return f"{_prefix(value)}…"


def _prefix(secret: str) -> str:
    return secret[: min(SECRET_PREFIX, len(secret) // 3)]


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
        """The JSON-able entry ``GET /_emulator/requests`` shows for this request: what the
        client sent (headers with credentials masked, the body decoded when it is JSON,
        else as text) and what became of it."""
        body: object = self.json
        if body is None and self.body:
            body = self.body[:TEXT_BODY_LIMIT].decode("utf-8", "replace")
        return {
            "index": self.index,
            "method": self.method,
            "path": self.path,
            "headers": {name: mask_secret(name, value) for name, value in self.headers.items()},
            "body": body,
            "request_id": self.request_id,
            "status": self.status,
            "fault": None if self.fault is None else self.fault.spec,
            "events_sent": self.events_sent,
            "completed": self.completed,
            "disconnected": self.disconnected,
        }
