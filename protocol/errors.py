"""The gateway's one error tree: every exception class of protocol/ and actors/.

::

    SwitchboardError                base of every error the gateway raises on purpose
    ├── ConfigError                 bad configuration (flags, environment, a ledger that cannot
    │                               be opened); fatal at start: exit 2
    ├── RemoteProtocolError         a client or the upstream sent garbage; .error_type, .frame_id
    │   └── BedrockStreamException  an exception frame of Bedrock's event-stream; .status
    │                               (protocol/eventstream.py)
    ├── ClientGone                  the client went away (its query's frames have no reader any
    │                               more, or its request body stopped with the connection):
    │                               what it asked just stops; usage is still recorded
    ├── ActorUnavailable            an actor's inbox is closed or its reply channel ended
    │   └── ShuttingDown            a graceful shutdown has begun: no new query is taken
    ├── Overloaded                  no query slot freed within the admission wait; .retry_after
    ├── InternalError               an unexpected exception, contained at a supervision
    │   │                           boundary and already logged and counted there
    │   └── ActorFailed             an actor's handler failed on a request (``ask`` raises it)
    ├── ServiceFailed               the whole service is unusable (a listener lost): the
    │                               process ends with one line on stderr, exit code 1
    ├── CredentialError             a credential source could not produce one
    │                               (actors/upstream/credentials.py; the ClientPool logs it)
    ├── StoreError                  the PostgreSQL store failed (actors/store/rows.py; the
    │                               ledger degrades, a token check answers 503)
    ├── ModelsFetchFailed           one page of ``GET /v1/models`` unreadable
    │                               (actors/upstream/models_fetcher.py; the built-in catalog stays)
    ├── MachineError                an event the query machine's phase does not accept: a bug in
    │                               the shell that fed it (protocol/query_machine.py); contained
    │                               at the query's boundary
    ├── FormError                   an OAuth form that is not one: too big, undecodable, a
    │                               repeated parameter (protocol/oauth.py): 400
    ├── OtlpError                   an OTLP export that does not decode within its bounds
    │                               (protocol/otlp.py): counted, answered 200 all the same
    ├── WorkerFailed                a worker of ``serve --workers N`` ended before all were
    │                               ready; .code (actors/cli/workers.py): the parent exits with it
    ├── BodyTooLarge                an HTTP request body over the limit (actors/doors/asgi.py): 413
    └── BodyStalled                 an HTTP request body stopped arriving (actors/doors/asgi.py): 408

    msgspec.DecodeError             msgspec's: outside data that does not decode
    └── JsonLimitError              outside JSON over a bound (protocol/bounded_json.py), a
                                    DecodeError so every decode site refuses it the same way

A class lives in this module unless its line names another. The drawing is kept true by
``tests/protocol/test_error_tree.py``, which compares it with the classes themselves.

Rules: httpx exceptions are mapped at one boundary (``actors/upstream/client.py``: an upstream
failure becomes a ``protocol.retry.Failure``, a value, never an exception); exception groups
propagate and are never unwrapped by hand; trio's own ``Cancelled``/``ClosedResourceError``/
``EndOfChannel`` keep their meanings inside actors.

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


class RemoteProtocolError(SwitchboardError):
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


class ClientGone(SwitchboardError):
    """The client went away: its query's outbound channel is closed (nobody reads its frames
    any more, or it took none for the slow-reader limit), or it disconnected before its request
    body was complete. What it asked for just stops; nobody is left to tell."""


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
