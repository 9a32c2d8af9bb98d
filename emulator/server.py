"""The Emulator: a first-party Messages API on loopback, with scripted faults.

Role:
    The trio shell around ``Router`` (``emulator/router.py``: the endpoints, the request
    checks and every answer, decided without I/O): listen, read each request, log it
    (``requests``, a ``RecordedRequest`` each), write its answer (``delivery``). Also the
    test-facing controls: ``script`` / ``script_bootstrap`` / ``outage`` queue faults,
    ``wait_for_request`` waits for the log, ``reset`` and ``revoke_*_tokens`` forget state.
Lifecycle:
    ``await nursery.start(emu.run)`` returns the base URL once the socket listens; ``run``
    serves until cancelled. One task per connection (HTTP/1.1 keep-alive, any number of
    requests); while a response is written a watcher task reads the socket.
Failure policy:
    Client misbehaviour never stops the server: malformed HTTP gets a 400 and the
    connection is closed; resets and EOFs end that connection only (logged at debug on the
    ``emulator`` logger). A client that goes away before its response is complete, also
    during a stall or a slow first byte, cancels that response: ``disconnected`` is set.
Timers:
    Every wait (``pace_ms``, ``stall``, ``slow_first_byte``) is on the trio clock, so a
    ``MockClock`` drives them. ``write_per_event`` writes each SSE event on its own, as the
    API does, where an unpaced answer otherwise goes out in one write. Wall-clock time is read only for HTTP-date and RFC 3339
    header values.
"""

from __future__ import annotations

import contextlib
import logging
from functools import partial
from typing import Final, final

import msgspec
import trio

from .connection import HttpConnection, MalformedRequest, Request
from .delivery import deliver
from .faults import Fault
from .record import RecordedRequest as RecordedRequest
from .router import Router

logger: Final = logging.getLogger("emulator")


@final
class Emulator(Router):
    """An Anthropic Messages API on loopback (see the module docstring).

    Constructed as ``Router`` is (``api_keys``: the credentials accepted; None accepts any
    non-empty one; the cloud providers' credentials as keywords; ``models``: ids accepted
    besides the catalog's). State (fault queue,
    request log, prompt cache) lives on the instance, so tests can script and inspect it
    while ``run`` serves; ``reset`` (from ``Router``) forgets it.
    """

    # True: every answer goes out one piece (SSE event) per write even when unpaced, as the
    # API writes while it generates (``emulator/delivery.py``); False: an unpaced answer goes
    # out in one write. Read per response, so a test may flip it while ``run`` serves.
    write_per_event: bool = False

    def script_bootstrap(self, *faults: Fault | str) -> None:
        """Queue faults for the bootstrap endpoint, one per request (its own queue).

        Raises FaultSpecError (queueing nothing) if a spec is bad.
        """
        self._bootstrap_script.extend(faults)

    def script(self, *faults: Fault | str) -> None:
        """Queue faults, applied in order, one per Messages or count_tokens request.

        Specs are parsed first; raises FaultSpecError (queueing nothing) if one is bad.
        """
        self._script.extend(faults)

    def outage(self, fault: Fault | str, *, seconds: float) -> None:
        """Answer every request with ``fault`` for the next ``seconds`` (trio clock): a
        model that is down for a while, whoever asks and however often."""
        self._script.outage(fault, trio.current_time() + seconds)

    @property
    def pending_faults(self) -> tuple[Fault, ...]:
        """The queued faults not yet applied, next first."""
        return self._script.pending

    def revoke_entra_tokens(self) -> None:
        """Every Entra ID token issued so far stops working."""
        self.entra_tokens.clear()

    def revoke_google_tokens(self) -> None:
        """Every token issued so far stops working (a rotated key, a revoked grant)."""
        self.google_tokens.clear()

    async def wait_for_request(self, n: int) -> RecordedRequest:
        """Wait until request ``n`` (0-based, since the last reset) arrived; return it.

        A checkpoint only when it has to wait. Arrival means the whole request was read.
        Raises LookupError when the bounded log already dropped it.
        """
        while self._logged <= n:
            await self._arrived.wait()
        position = n - (self._logged - len(self.requests))
        if position < 0:
            raise LookupError(f"request {n} was dropped from the log")
        return self.requests[position]

    async def run(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host:port`` (0: any free port) and serve until cancelled.

        ``task_status.started`` gets the base URL, e.g. ``"http://127.0.0.1:50123"``.
        """
        async with trio.open_nursery() as nursery:
            listeners: list[trio.SocketListener] = await nursery.start(
                partial(trio.serve_tcp, self._serve_connection, port, host=host)
            )
            address, bound_port = listeners[0].socket.getsockname()[:2]
            self.url = f"http://{f'[{address}]' if ':' in address else address}:{bound_port}"
            logger.debug("emulator listening on %s", self.url)
            task_status.started(self.url)

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        """One connection: requests in turn until either side closes. Never raises."""
        http = HttpConnection(stream)
        try:
            while (request := await http.next_request()) is not None:
                if not await self._exchange(http, request) or not http.start_next_cycle():
                    break
        except MalformedRequest as exc:
            logger.debug("malformed request: %s", exc)
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await http.send_error_and_close(exc.status, f"Bad request: {exc}\n")
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            logger.debug("connection lost: %r", exc)
        except Exception:
            # A bug here must not take the whole emulator down with one connection.
            logger.exception("emulator: unexpected error on a connection")
        finally:
            await trio.aclose_forcefully(stream)

    def _record(self, request: Request, sequence: int) -> RecordedRequest:
        try:
            decoded: object | None = msgspec.json.decode(request.body) if request.body else None
        except msgspec.DecodeError:
            decoded = None
        record = RecordedRequest(
            index=self._logged,
            method=request.method,
            path=request.target,
            headers=request.headers,
            body=request.body,
            json=decoded,
            request_id=f"req_emu_{sequence}",
        )
        self._log(record)
        self._arrived.set()
        self._arrived = trio.Event()
        return record

    async def _exchange(self, http: HttpConnection, request: Request) -> bool:
        """Record, answer and write one request; True if the connection may be reused."""
        sequence = next(self._sequence)
        record = self._record(request, sequence)
        keep_alive = False
        try:
            answer = self._answer(request, record, sequence)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch, http, record, nursery.cancel_scope)
                try:
                    keep_alive = await deliver(http, answer, record, per_event=self.write_per_event)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    record.disconnected = True
                nursery.cancel_scope.cancel()
        finally:
            record.finished.set()
        if record.disconnected:
            logger.debug("client left before %s %s was answered", record.method, record.path)
        return keep_alive and not record.disconnected

    @staticmethod
    async def _watch(
        http: HttpConnection, record: RecordedRequest, scope: trio.CancelScope
    ) -> None:
        await http.watch_for_eof()
        if not record.completed:
            record.disconnected = True
        scope.cancel()


async def serve_emulator(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    api_keys: frozenset[str] | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a fresh Emulator on ``host:port`` until cancelled; ``started()`` gets its URL."""
    await Emulator(api_keys).run(host=host, port=port, task_status=task_status)
