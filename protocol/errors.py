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
    ├── ActorUnavailable            an actor's inbox is closed or its reply channel ended
    │   └── ShuttingDown            a graceful shutdown has begun: no new query is taken
    ├── Overloaded                  no query slot freed within the admission wait; .retry_after
    ├── InternalError               an unexpected exception, contained at a supervision
    │   │                           boundary and already logged and counted there
    │   └── ActorFailed             an actor's handler failed on a request (``ask`` raises it)
    └── ServiceFailed               the whole service is unusable (a listener lost): the
                                    process ends with one line on stderr, exit code 1

Rules: httpx exceptions are mapped at one boundary; exception groups propagate and are
never unwrapped by hand; trio's own ``Cancelled``/``ClosedResourceError``/``EndOfChannel``
keep their meanings inside actors.

Supervision (docs/supervision.md): any other ``Exception`` is contained at the nearest
boundary (a query, a WebSocket connection's reader or writer, an HTTP request, one message
of an actor), which logs its traceback once, counts it in
``switchboard_internal_errors_total{where}`` and ends only what it belongs to, with the
error type ``INTERNAL_ERROR``. ``InternalError`` carries such a failure past the boundary
that reported it, so the boundaries above it neither log nor count it again.
``BaseException`` (``trio.Cancelled``, ``KeyboardInterrupt``) is never contained.
"""

from __future__ import annotations

from typing import Final

# The error type a client sees for a failure contained at a supervision boundary
# (docs/protocol.md; the HTTP door answers it as a 500 ``api_error``).
INTERNAL_ERROR: Final = "internal_error"


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


class Overloaded(SwitchboardError):
    """Every query slot of the gateway stayed taken for the whole admission wait
    (``Config.admission_wait``; docs/protocol.md "Admission"). The HTTP door answers 529
    ``overloaded_error`` with ``retry-after: retry_after`` (whole seconds, an estimate)."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InternalError(SwitchboardError):
    """An unexpected exception was contained at a supervision boundary, which logged and
    counted it; raised only to end what the failure belongs to (a query, a request) with
    ``INTERNAL_ERROR``, never to be logged or counted again."""


class ActorFailed(InternalError):
    """An actor's handler failed on this request: it answered with a failure instead of a
    reply (``actors._util.ask`` raises this). The actor serves its next message."""


class ServiceFailed(SwitchboardError):
    """The service as a whole cannot go on (a door's listener is lost): the process ends."""
