"""The gateway's one error tree.

::

    SwitchboardError
    ├── ConfigError                 bad configuration (flags, environment); fatal at start
    ├── ProtocolError               abstract: bytes or frames that break a format
    │   ├── LocalProtocolError      we tried to emit something invalid (a bug)
    │   └── RemoteProtocolError     a client or the upstream sent garbage; .error_type
    ├── UpstreamError               raised only by the httpx boundary mapper (actors/http_errors.py)
    │   ├── UpstreamTimeout         connect/read/write/pool timeout, or the stream idle watchdog
    │   ├── UpstreamUnavailable     connect/read/write errors, a dropped connection
    │   └── UpstreamStatusError     a non-2xx answer or an in-stream ``error`` event; .status, .error
    └── ActorUnavailable            an actor's inbox is closed or its reply channel ended
        └── ShuttingDown            a graceful shutdown has begun: no new query is taken

Rules: httpx exceptions are mapped at one boundary; exception groups propagate and are
never unwrapped by hand; trio's own ``Cancelled``/``ClosedResourceError``/``EndOfChannel``
keep their meanings inside actors.
"""

from __future__ import annotations


class SwitchboardError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(SwitchboardError):
    """The configuration cannot work (bad flag, bad environment value)."""


class ProtocolError(SwitchboardError):
    """Abstract: bytes or frames that break a format. Raise a subclass."""

    def __init__(self, message: str) -> None:
        if type(self) is ProtocolError:
            raise TypeError("ProtocolError is abstract; raise Local- or RemoteProtocolError")
        super().__init__(message)


class LocalProtocolError(ProtocolError):
    """We tried to emit something invalid: always a bug in the gateway."""


class RemoteProtocolError(ProtocolError):
    """The peer (a client, or the upstream) sent something malformed.

    ``error_type`` is the front-door error type a client sees (``bad_frame`` for a client
    frame, ``api_error`` for a malformed upstream stream); ``frame_id`` is the refused
    client frame's string ``id`` when it had one.
    """

    def __init__(
        self, message: str, *, error_type: str = "bad_frame", frame_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.frame_id = frame_id


class UpstreamError(SwitchboardError):
    """Something went wrong talking to the upstream API (mapped at the httpx boundary)."""


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer in time (a timeout, or the idle watchdog fired)."""


class UpstreamUnavailable(UpstreamError):
    """The connection could not be made, or broke."""


class UpstreamStatusError(UpstreamError):
    """A non-2xx status or an in-stream ``error`` event."""


class ActorUnavailable(SwitchboardError):
    """An actor is gone: its inbox is closed, or it dropped a reply channel."""


class ShuttingDown(ActorUnavailable):
    """A graceful shutdown has begun (``Gateway.shutdown``): the gateway takes no new query.
    A client sees the error type ``shutting_down`` (docs/protocol.md)."""
