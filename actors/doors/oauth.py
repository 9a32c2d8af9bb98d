"""OAuthDoor: the sign-in endpoints of the Claude Code gateway protocol on the HTTP door
(README.md "Claude Code for a whole organisation"; docs/protocol.md "Sign-in"; the rules are
protocol/oauth.py, the users and tokens actors/access/identities.py).

Routes (``protocol.oauth.OAUTH_PATHS``), all unauthenticated:
    ``GET /.well-known/oauth-authorization-server``: RFC 8414 metadata.
    ``POST /oauth/device_authorization``: a new device code and user code (RFC 8628 3.2).
    ``GET /device``: the verification page (``actors.doors.oauth_page``); ``POST /device``: the
    user's code, name and password, and their choice (approve or deny).
    ``POST /oauth/token``: the device grant's polls and the refresh grant.
    ``POST /oauth/revoke``: RFC 7009 revocation of a sign-in (always 200).
Not an actor with an inbox: the HTTP door calls ``handle`` per request, and each request is a
supervision boundary there (docs/supervision.md). Pending device grants live in this process
(bounded by ``MAX_PENDING_GRANTS``; a gateway restart drops them: the client's poll then
gets ``expired_token`` and the user signs in again; on a fleet sharing one PostgreSQL ledger,
a sign-in's device authorization, verification page and polls must all reach the same
gateway, while the tokens it issues are accepted by every one). The store's writes and the
password checks run on a worker thread, one at a time (``_limiter``); ``resolve`` in place
on SQLite, else on a worker thread of its own (``_read_limiter``); a store that cannot answer gets
a 503 ``temporarily_unavailable``-style error, logged, never a crash of the door.
The verification page's POST is rate-limited per client address (RFC 8628 5.1):
``PAGE_ATTEMPTS`` per ``PAGE_WINDOW`` seconds, 429 past it; so are new device
authorizations (``DEVICE_STARTS``; 429 ``slow_down`` with ``retry-after``).
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import re
import secrets
import sqlite3
from collections import deque
from collections.abc import Callable
from typing import Final, TypeVar, final

import trio
from hypercorn.typing import ASGIReceiveCallable

from actors.access.identities import TOKEN_BYTES, IdentityStore
from actors.doors.asgi import BodyStalled, BodyTooLarge, Exchange, RequestHead, read_body
from actors.doors.http_messages import BODY_IDLE_TIMEOUT
from actors.doors.oauth_page import page_answer, result_page, sign_in_page
from actors.store.rows import StoreError
from protocol.errors import ClientGone, ConfigError
from protocol.identity import Principal
from protocol.oauth import (
    DEVICE_AUTHORIZATION_PATH,
    DEVICE_CODE_TTL,
    GRANT_DEVICE,
    GRANT_REFRESH,
    MAX_FORM_BYTES,
    METADATA_PATH,
    POLL_INTERVAL,
    REVOCATION_PATH,
    TOKEN_PATH,
    USER_CODE_ALPHABET,
    USER_CODE_LENGTH,
    VERIFICATION_PATH,
    Approved,
    DeviceGrant,
    FormError,
    OAuthErrorCode,
    decide,
    device_answer,
    metadata,
    normalize_user_code,
    oauth_error,
    parse_form,
    poll,
    token_answer,
)
from protocol.wire import JSON

log = logging.getLogger("switchboard.oauth")

T = TypeVar("T")

# Device grants pending at once: past it the oldest is dropped (its poll: expired_token).
MAX_PENDING_GRANTS: Final = 10_000
# The verification page: attempts per client address per window, and the addresses tracked.
PAGE_ATTEMPTS: Final = 10
PAGE_WINDOW: Final = 60.0
# New device authorizations per client address per window (an office behind one address
# signs in together; a flood cannot push every pending sign-in out of MAX_PENDING_GRANTS).
DEVICE_STARTS: Final = 30
MAX_TRACKED_ADDRESSES: Final = 10_000
_JSON: Final = b"application/json"
# RFC 6749 5.1: a token response is never cached.
_NO_STORE: Final = ((b"cache-control", b"no-store"), (b"pragma", b"no-cache"))
_STORE_ERRORS: Final = (sqlite3.Error, OSError, StoreError)
# A Host header the URLs may be built from: a name or address and a port, nothing else.
_HOST: Final = re.compile(r"[A-Za-z0-9.\-]{1,253}(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _digest(device_code: str) -> str:
    return hashlib.sha256(device_code.encode()).hexdigest()


@final
class OAuthDoor:
    """The sign-in endpoints over one identity store (see the module docstring)."""

    def __init__(self, store: IdentityStore, *, public_url: str | None = None, offload: bool = True) -> None:
        self._store = store
        self._public_url = public_url.rstrip("/") if public_url else None
        self._offload = offload
        self._limiter = trio.CapacityLimiter(1)
        # ``resolve`` off the writes' limiter: a bearer request never waits behind a sign-in.
        self._read_limiter = trio.CapacityLimiter(1)
        # device code digest -> grant; user code -> device code digest (both bounded together).
        self._grants: dict[str, DeviceGrant] = {}
        self._by_user_code: dict[str, str] = {}
        self._attempts: dict[tuple[str, str], deque[float]] = {}

    @property
    def store(self) -> IdentityStore:
        return self._store

    async def resolve(self, token: str) -> Principal | None:
        """``Gateway.resolve_principal``: the user a bearer token names (a store failure:
        None, logged; the request is then refused as unauthenticated)."""
        if token.count(".") != 2:
            return None
        try:
            if self._store.reads_in_place or not self._offload:
                await trio.lowlevel.checkpoint()
                return self._store.resolve(token, _now())
            return await trio.to_thread.run_sync(lambda: self._store.resolve(token, _now()), limiter=self._read_limiter)
        except _STORE_ERRORS as exc:
            log.error("the signed-in users cannot be read from the ledger: %s", exc)
            return None

    async def _call(self, fn: Callable[[], T]) -> T:
        if not self._offload:
            await trio.lowlevel.checkpoint()
            return fn()
        return await trio.to_thread.run_sync(fn, limiter=self._limiter)

    def issuer(self, head: RequestHead, scheme: str) -> str:
        """The gateway's base URL: ``--public-url``, else the request's own host."""
        if self._public_url:
            return self._public_url
        host = head.headers.get("host", "")
        return f"{scheme}://{host if _HOST.fullmatch(host) else 'localhost'}"

    async def handle(self, head: RequestHead, receive: ASGIReceiveCallable, exchange: Exchange, scheme: str) -> str:
        """Answer one request on an OAuth path; returns its route name for logs and metrics."""
        path, method = head.path, head.method
        allowed = "GET" if path == METADATA_PATH else "GET, POST" if path == VERIFICATION_PATH else "POST"
        if method not in allowed.split(", "):
            await exchange.respond(405, b"", b"text/plain", [(b"allow", allowed.encode())])
            return "oauth"
        if path == METADATA_PATH:
            await exchange.respond(200, JSON.encode(metadata(self.issuer(head, scheme))), _JSON)
            return "oauth_metadata"
        if path == VERIFICATION_PATH and method == "GET":
            await page_answer(exchange, 200, sign_in_page(_query_code(head.query)))
            return "oauth_page"
        form = await self._form(head, receive, exchange, html=path == VERIFICATION_PATH)
        if form is None:
            return "oauth"
        try:
            if path == DEVICE_AUTHORIZATION_PATH:
                await self._device_authorization(head, exchange, scheme)
                return "oauth_device"
            if path == TOKEN_PATH:
                await self._token(form, exchange)
                return "oauth_token"
            if path == REVOCATION_PATH:
                await self._call(lambda: self._store.revoke(form.get("token", ""), _now()))
                await exchange.respond(200, b"{}", _JSON, _NO_STORE)
                return "oauth_revoke"
            await self._verify(head, form, exchange)
            return "oauth_page"
        except _STORE_ERRORS as exc:
            log.error("sign-in: the ledger cannot answer: %s", exc)
            if path == VERIFICATION_PATH:
                await page_answer(exchange, 503, result_page("Try again", "The gateway cannot check sign-ins now; try again in a minute."))
            else:
                await _error(exchange, "invalid_request", "the gateway's store cannot answer now; try again", status=503)
            return "oauth"

    async def _form(self, head: RequestHead, receive: ASGIReceiveCallable, exchange: Exchange, *, html: bool) -> dict[str, str] | None:
        try:
            body = await read_body(receive, head, MAX_FORM_BYTES, idle_timeout=BODY_IDLE_TIMEOUT)
            return parse_form(body)
        except ClientGone:
            return None
        except (BodyTooLarge, BodyStalled, FormError) as exc:
            if html:
                await page_answer(exchange, 400, result_page("That did not work", str(exc)))
            else:
                await _error(exchange, "invalid_request", str(exc))
            return None

    async def _device_authorization(self, head: RequestHead, exchange: Exchange, scheme: str) -> None:
        now = trio.current_time()
        if not self._admit("device", head.client, now, DEVICE_STARTS):
            _, body = oauth_error("slow_down", "too many sign-ins started from this address: wait a minute")
            await exchange.respond(429, body, _JSON, [*_NO_STORE, (b"retry-after", str(int(PAGE_WINDOW)).encode())])
            return
        self._forget_expired(now)
        device_code = secrets.token_urlsafe(TOKEN_BYTES)
        code = self._new_user_code()
        digest = _digest(device_code)
        self._grants[digest] = DeviceGrant(user_code=code, expires_at=now + DEVICE_CODE_TTL)
        self._by_user_code[code] = digest
        while len(self._grants) > MAX_PENDING_GRANTS:
            oldest = next(iter(self._grants))
            self._by_user_code.pop(self._grants.pop(oldest).user_code, None)
        body = device_answer(
            device_code=device_code,
            code=code,
            verification_uri=self.issuer(head, scheme) + VERIFICATION_PATH,
            expires_in=DEVICE_CODE_TTL,
            interval=POLL_INTERVAL,
        )
        await exchange.respond(200, body, _JSON, _NO_STORE)

    def _new_user_code(self) -> str:
        while True:
            text = "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(USER_CODE_LENGTH))
            code = f"{text[:4]}-{text[4:]}"
            if code not in self._by_user_code:
                return code

    def _forget_expired(self, now: float) -> None:
        for digest in [d for d, g in self._grants.items() if g.expires_at <= now]:
            self._by_user_code.pop(self._grants.pop(digest).user_code, None)

    async def _token(self, form: dict[str, str], exchange: Exchange) -> None:
        grant_type = form.get("grant_type", "")
        if grant_type == GRANT_DEVICE:
            await self._device_grant(form.get("device_code", ""), exchange)
        elif grant_type == GRANT_REFRESH:
            token = form.get("refresh_token", "")
            issued = await self._call(lambda: self._store.rotate(token, _now())) if token else None
            if issued is None:
                await _error(exchange, "invalid_grant", "the refresh token is not valid: sign in again")
                return
            await exchange.respond(200, token_answer(issued.access_token, issued.refresh_token, issued.expires_in), _JSON, _NO_STORE)
        elif not grant_type:
            await _error(exchange, "invalid_request", "grant_type is missing")
        else:
            await _error(exchange, "unsupported_grant_type", f"grant_type {grant_type[:64]!r} is not supported")

    async def _device_grant(self, device_code: str, exchange: Exchange) -> None:
        if not device_code:
            await _error(exchange, "invalid_request", "device_code is missing")
            return
        digest = _digest(device_code)
        grant = self._grants.get(digest)
        if grant is None:
            await _error(exchange, "expired_token", "the device code is unknown or has expired: sign in again")
            return
        grant, answer = poll(grant, trio.current_time())
        self._grants[digest] = grant
        if not isinstance(answer, Approved):
            if answer in ("expired_token", "invalid_grant"):
                self._by_user_code.pop(self._grants.pop(digest).user_code, None)
            await _error(exchange, answer, _POLL_TEXT.get(answer, answer))
            return
        self._by_user_code.pop(self._grants.pop(digest).user_code, None)
        user = answer.user
        issued = await self._call(lambda: self._store.issue(user, _now()))
        if issued is None:
            await _error(exchange, "access_denied", "the user who approved is disabled")
            return
        log.info("signed in user %s (device flow)", user)
        await exchange.respond(200, token_answer(issued.access_token, issued.refresh_token, issued.expires_in), _JSON, _NO_STORE)

    async def _verify(self, head: RequestHead, form: dict[str, str], exchange: Exchange) -> None:
        """The verification page's POST: the code, the user's name and password, their choice."""
        now = trio.current_time()
        if not self._admit("page", head.client, now, PAGE_ATTEMPTS):
            await page_answer(exchange, 429, result_page("Too many attempts", "Wait a minute, then try again."), retry_after=int(PAGE_WINDOW))
            return
        code = normalize_user_code(form.get("user_code", ""))
        digest = self._by_user_code.get(code, "") if code is not None else ""
        grant = self._grants.get(digest)
        if code is None or grant is None or grant.state != "pending" or now >= grant.expires_at:
            await page_answer(exchange, 400, sign_in_page(form.get("user_code", "")[:16], error="That code is not valid, or has expired. Check it in your terminal."))
            return
        name, password = form.get("username", ""), form.get("password", "")
        if not await self._call(lambda: self._store.verify(name, password)):
            await page_answer(exchange, 401, sign_in_page(code, error="Wrong user name or password."))
            return
        approve = form.get("action", "") == "approve"
        decided = decide(grant, now, name if approve else None)
        if decided is None:
            await page_answer(exchange, 400, result_page("That did not work", "The code was decided already, or has expired."))
            return
        self._grants[digest] = decided
        if approve:
            log.info("user %s approved a sign-in", name)
            await page_answer(exchange, 200, result_page("Signed in", f"You are signed in as {name}. Return to your terminal."))
        else:
            await page_answer(exchange, 200, result_page("Sign-in denied", "The sign-in was denied. You can close this page."))

    def _admit(self, what: str, address: str, now: float, limit: int) -> bool:
        """Whether ``address`` may do ``what`` again now (``limit`` per ``PAGE_WINDOW``)."""
        if len(self._attempts) > MAX_TRACKED_ADDRESSES:
            self._attempts.clear()
        times = self._attempts.setdefault((what, address), deque())
        while times and now - times[0] >= PAGE_WINDOW:
            times.popleft()
        if len(times) >= limit:
            return False
        times.append(now)
        return True


_POLL_TEXT: Final[dict[str, str]] = {
    "authorization_pending": "the user has not approved the code yet",
    "slow_down": "polling too fast: wait longer between polls",
    "access_denied": "the user denied the sign-in",
    "expired_token": "the device code has expired: sign in again",
    "invalid_grant": "the device code was used already",
}


def _query_code(query: str) -> str:
    """The ``user_code`` of the page's query, for pre-filling (never submitted by itself)."""
    try:
        return parse_form(query.encode("ascii", "replace")).get("user_code", "")[:16]
    except FormError:
        return ""


async def _error(exchange: Exchange, code: OAuthErrorCode, description: str, *, status: int | None = None) -> None:
    default, body = oauth_error(code, description)
    await exchange.respond(status or default, body, _JSON, _NO_STORE)


def open_oauth_door(location: str, *, public_url: str | None = None) -> OAuthDoor:
    """The sign-in endpoints over the users of the ledger at ``location``. Raises ConfigError."""
    from actors.access.identity_stores import open_identity_store
    from actors.store.sqlite import MEMORY

    try:
        store = open_identity_store(location)
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot open the users of the ledger: {exc}") from exc
    return OAuthDoor(store, public_url=public_url, offload=location != MEMORY)

