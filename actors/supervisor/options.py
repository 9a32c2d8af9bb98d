"""How one query from the HTTP door differs from a WebSocket or embedded query.

``QueryOptions`` travels with the query (``Gateway.query``, ``RunQuery``) to the
RetrySupervisor's run and, per attempt, to the StreamRelay (docs/protocol.md 2):

- ``transparent``: the client's body and betas go upstream as sent (``protocol.passthrough``),
  instead of the reference construction (``protocol.request_builder``);
- ``client_retries``: the client retries on its own: one upstream attempt for a retryable
  failure, and the overload gate answers at once instead of holding the request;
- ``deadline``: the trio time by which, in gateway-retry mode, the query gives up with its
  last error rather than keep a client past its own timeout;
- ``heads``: where the relay leaves each attempt's upstream response headers, for the door to
  pass on (``UpstreamHeads``).

The WebSocket door and embedding use the defaults, which change nothing.
"""

from __future__ import annotations

from typing import Final, final

import msgspec

Headers = tuple[tuple[str, str], ...]

# Attempts whose headers are kept: the door needs the one whose events it is writing (an
# attempt or two behind the newest at most, its frames being buffered), or the last one.
KEPT_ATTEMPTS: Final = 4


@final
class UpstreamHeads:
    """Each attempt's upstream response headers (already filtered for a client), by attempt
    number. Written by the query's relay attempts and its run, read by the HTTP door; all in
    one trio run, so no lock: an attempt's headers are recorded before any frame of it is
    sent, so the door always finds them."""

    __slots__ = ("_by_attempt",)

    def __init__(self) -> None:
        self._by_attempt: dict[int, Headers] = {}

    def record(self, attempt: int, headers: Headers) -> None:
        self._by_attempt[attempt] = headers
        while len(self._by_attempt) > KEPT_ATTEMPTS:
            del self._by_attempt[min(self._by_attempt)]

    def of(self, attempt: int) -> Headers:
        """The headers of that attempt's response (none known: empty)."""
        return self._by_attempt.get(attempt, ())

    def last(self) -> Headers:
        """The headers of the latest attempt that got a response (none: empty)."""
        return self._by_attempt[max(self._by_attempt)] if self._by_attempt else ()


class QueryOptions(msgspec.Struct, frozen=True, kw_only=True):
    """See the module docstring. ``raw_body``: the client's request bytes, sent as they are
    when a transparent attempt changes nothing in the body."""

    transparent: bool = False
    raw_body: bytes | None = None
    client_retries: bool = False
    deadline: float | None = None
    heads: UpstreamHeads | None = None
    # The client posted to ``/v1/messages?beta=true`` (the SDKs' beta namespace does): a
    # first-party attempt posts upstream the same way.
    beta_query: bool = False


DEFAULT_OPTIONS: Final = QueryOptions()
