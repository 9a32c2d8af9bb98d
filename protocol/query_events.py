"""What the query machine (protocol/query_machine.py) hears and what it asks for.

Events say what happened to a query's run; actions say what the shell
(actors/supervisor/run.py) must do next. Both are plain frozen data: the machine reads no
clock and no random source, so the shell passes time and randomness in (``Env``) with
each event. The terminal actions (``Succeed``, ``Fail``, ``InternalFailure``, ``Stop``)
end the query; the machine emits exactly one of them per run, as its last action.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Literal, TypeAlias

import msgspec

from protocol.frames import ErrorInfo, Fallback, FastMode, RetryFrame, Tombstone
from protocol.recovery import Recovery
from protocol.retry import Decision, Failure, RetryPolicy, RetryState
from protocol.wire import JsonObject


class Env(msgspec.Struct, frozen=True, kw_only=True):
    """The shell's clocks and random source at the moment of an event: ``now`` on trio's
    clock (the deadline's), ``wall`` in epoch seconds (HTTP dates, rate-limit resets),
    ``rand`` a draw in [0, 1), called only when a retry rule needs jitter."""

    now: float
    wall: float
    rand: Callable[[], float]


class QuerySetup(msgspec.Struct, frozen=True, kw_only=True):
    """What a query's run starts from. ``model``: the first model as sent upstream;
    ``client_model``/``fallback_client_model``: what the client named the first and the
    fallback model (the builder needs the ``[1m]`` marker back); ``top_up``: every attempt
    after the first asks the budget first; ``started``/``deadline``/``api_timeout`` on
    trio's clock (``deadline`` inf: none)."""

    query_id: str
    request: JsonObject
    model: str
    client_model: str
    policy: RetryPolicy
    fallback_client_model: str | None = None
    fast_requested: bool = False
    recover: bool = False
    top_up: bool = False
    started: float = 0.0
    deadline: float = float("inf")
    api_timeout: float = 600.0


# --- events ------------------------------------------------------------------------------


class TopUpAnswered(msgspec.Struct, frozen=True, kw_only=True):
    """The budget answered ``TopUp``: None, the attempt may go; else the error ending it."""

    refused: ErrorInfo | None = None


class TurnGranted(msgspec.Struct, frozen=True, kw_only=True):
    """The model's overload gate let the attempt go; ``probe``: as its probe. With the
    fast-mode facts shared by every query: the model's cooldown end (epoch s) and the
    gateway-wide off switch, read when the turn came."""

    probe: bool
    fast_cooldown_until: float | None = None
    fast_disabled: bool = False


class TurnRefused(msgspec.Struct, frozen=True, kw_only=True):
    """A client that retries on its own was turned away by the gate (a 529 now);
    ``retry_after``: seconds until the gate's next probe, when known."""

    retry_after: float | None = None


class TurnTimedOut(msgspec.Struct, frozen=True, kw_only=True):
    """The client's deadline came before the gate let the attempt go."""


class AttemptEnded(msgspec.Struct, frozen=True, kw_only=True):
    """The attempt ended: ``message`` the whole answer, or ``failure`` why not (both None:
    cancelled without the query's scope being cancelled, the client went away);
    ``relayed``: the client saw some of its events; ``internal_error``: the relay failed
    unexpectedly (what to tell the client); ``generation``: the credential it used."""

    message: JsonObject | None = None
    failure: Failure | None = None
    relayed: bool = False
    generation: int = 0
    internal_error: str | None = None


class CredentialRefreshed(msgspec.Struct, frozen=True, kw_only=True):
    """The pool answered ``RefreshCredential``: ``changed``, a new credential is in use."""

    changed: bool


class WaitElapsed(msgspec.Struct, frozen=True, kw_only=True):
    """The ``Wait`` before the next attempt is over."""


Event: TypeAlias = (
    TopUpAnswered | TurnGranted | TurnRefused | TurnTimedOut | AttemptEnded | CredentialRefreshed | WaitElapsed
)


# --- actions -----------------------------------------------------------------------------


class Send(msgspec.Struct, frozen=True, kw_only=True):
    """A frame to the client (never a terminal one)."""

    frame: Tombstone | Fallback | RetryFrame | FastMode


class Note(msgspec.Struct, frozen=True, kw_only=True):
    """A line for the supervisor's log."""

    level: Literal["info", "warning"]
    text: str


class TopUp(msgspec.Struct, frozen=True, kw_only=True):
    """Ask the budget to cover the next attempt, which sends ``request``."""

    request: JsonObject


class AskTurn(msgspec.Struct, frozen=True, kw_only=True):
    """Take a turn at ``model``'s overload gate for ``attempt``: ``client_turn``, the way of a
    client that retries on its own (refused rather than held); wait no later than ``until``
    (trio time), with heartbeats when not ``client_turn``."""

    model: str
    attempt: int
    client_turn: bool
    until: float


class GateRefused(msgspec.Struct, frozen=True, kw_only=True):
    """Count the gate's answer for ``model`` and give the client the headers it carries."""

    model: str
    attempt: int
    headers: tuple[tuple[str, str], ...]


class StartAttempt(msgspec.Struct, frozen=True, kw_only=True):
    """Build and run the attempt ``state`` describes, of ``request`` with the model named
    ``client_model`` by the client. ``withhold``: keep an output-limit stop from the client
    (recovery may go on); ``probe``: the attempt is its gate's probe."""

    state: RetryState
    request: JsonObject
    client_model: str
    fast_active: bool
    fast_requested: bool
    withhold: bool
    recovery: Recovery
    probe: bool


class RefreshCredential(msgspec.Struct, frozen=True, kw_only=True):
    """Ask the pool for a new credential after the one of ``generation`` was refused."""

    generation: int


class ReportStale(msgspec.Struct, frozen=True, kw_only=True):
    """Tell the pool its connection broke (stop reusing connections)."""


class ReportGate(msgspec.Struct, frozen=True, kw_only=True):
    """Tell ``model``'s gate how the attempt ended, with the retry decision (None: none)."""

    model: str
    probe: bool
    decision: Decision | None


class CountRetry(msgspec.Struct, frozen=True, kw_only=True):
    error_type: str


class CountFallback(msgspec.Struct, frozen=True, kw_only=True):
    from_model: str
    to_model: str


class CoolFastMode(msgspec.Struct, frozen=True, kw_only=True):
    """Share a fast-mode cooldown of ``model`` until ``until`` (epoch s)."""

    model: str
    until: float


class DisableFastMode(msgspec.Struct, frozen=True, kw_only=True):
    """Switch fast mode off for the whole gateway."""


class Wait(msgspec.Struct, frozen=True, kw_only=True):
    """Wait ``delay`` seconds (with heartbeats naming ``attempt``), then ``WaitElapsed``."""

    delay: float
    attempt: int


class Succeed(msgspec.Struct, frozen=True, kw_only=True):
    """Terminal: the ``done`` frame, ``message`` answered by ``model`` after ``attempts``."""

    model: str
    attempts: int
    message: JsonObject


class Fail(msgspec.Struct, frozen=True, kw_only=True):
    """Terminal: the ``error`` frame."""

    error: ErrorInfo


class InternalFailure(msgspec.Struct, frozen=True, kw_only=True):
    """Terminal: the query ends with ``internal_error`` saying ``detail`` (the relay
    reported it already)."""

    detail: str


class Stop(msgspec.Struct, frozen=True, kw_only=True):
    """Terminal: the client went away; nobody is left to tell."""


Terminal: TypeAlias = Succeed | Fail | InternalFailure | Stop
# The actions that do not end the query; the ones that wait end in the next event.
Effect: TypeAlias = (
    Send | Note | TopUp | AskTurn | GateRefused | StartAttempt | RefreshCredential | ReportStale | ReportGate
    | CountRetry | CountFallback | CoolFastMode | DisableFastMode | Wait
)
Action: TypeAlias = Effect | Terminal
TERMINALS: Final = (Succeed, Fail, InternalFailure, Stop)
