"""The sign-in half of the Claude Code gateway protocol, as rules and data (README.md "Claude
Code for a whole organisation"; docs/protocol.md "Sign-in"): OAuth 2.0 authorization server
metadata (RFC 8414), the device authorization grant (RFC 8628) and the refresh grant (RFC
6749 section 6). Pure: time and randomness are passed in.

- ``metadata``: the discovery document (no ``authorization_endpoint``: the device flow only).
- ``user_code`` / ``normalize_user_code``: the code a user types, in RFC 8628 6.1's base-20
  charset (no vowels, so no words), shown as ``XXXX-XXXX``.
- ``DeviceGrant`` / ``poll``: one pending sign-in and the answer to each token poll
  (``authorization_pending``, ``slow_down``, ``access_denied``, ``expired_token``, or the
  approved user).
- ``parse_form``: a bounded ``application/x-www-form-urlencoded`` decoder (RFC 6749 3.2: a
  repeated parameter is an error; an unknown one is ignored by the callers).
- ``oauth_error``: the OAuth endpoints' error body ``{"error","error_description"}`` and its
  status.
- ``access_token_text``: the access token as an unsecured JWT (RFC 7519 6) whose payload
  carries ``exp`` and ``sub``: the client reads the expiry without verifying it. The gateway
  never trusts those claims: it looks the whole token up by its SHA-256 (256 random bits in
  ``jti`` make it unguessable).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Final, Literal
from urllib.parse import parse_qsl

import msgspec

from protocol.errors import SwitchboardError
from protocol.wire import JSON

GRANT_DEVICE: Final = "urn:ietf:params:oauth:grant-type:device_code"
GRANT_REFRESH: Final = "refresh_token"

# The paths the gateway serves (the client's own defaults, so a client that cannot use the
# discovery document still finds them).
METADATA_PATH: Final = "/.well-known/oauth-authorization-server"
DEVICE_AUTHORIZATION_PATH: Final = "/oauth/device_authorization"
TOKEN_PATH: Final = "/oauth/token"
REVOCATION_PATH: Final = "/oauth/revoke"
VERIFICATION_PATH: Final = "/device"
OAUTH_PATHS: Final = frozenset(
    {METADATA_PATH, DEVICE_AUTHORIZATION_PATH, TOKEN_PATH, REVOCATION_PATH, VERIFICATION_PATH}
)

# RFC 8628 6.1: 20 consonants (no vowels: no words; no ambiguous letters), 8 of them: 34.5
# bits, against which the per-IP rate limit of the verification page and the grant's
# lifetime leave no room for guessing.
USER_CODE_ALPHABET: Final = "BCDFGHJKLMNPQRSTVWXZ"
USER_CODE_LENGTH: Final = 8
# How long a device code can be approved, the least wait between polls, and what a poll
# that comes too soon adds to it (RFC 8628 3.5).
DEVICE_CODE_TTL: Final = 600
POLL_INTERVAL: Final = 5
SLOW_DOWN_STEP: Final = 5
# Lifetimes of what a sign-in issues: an access token for an hour (the client refreshes it
# five minutes before), a refresh token for 30 days from its own issue (each use rotates it).
ACCESS_TOKEN_TTL: Final = 3600
REFRESH_TOKEN_TTL: Final = 30 * 24 * 3600
# A form of the sign-in endpoints is small: a few parameters of bounded size.
MAX_FORM_BYTES: Final = 16 * 1024
MAX_FORM_FIELDS: Final = 32

OAuthErrorCode = Literal[
    "invalid_request",
    "invalid_grant",
    "unsupported_grant_type",
    "authorization_pending",
    "slow_down",
    "access_denied",
    "expired_token",
]
# RFC 6749 5.2 answers 400; the gateway protocol asks 401 for a refresh token the gateway
# no longer honours (``invalid_grant``): the client then sends the user back to sign in.
_STATUS: Final[dict[str, int]] = {"invalid_grant": 401}


class FormError(SwitchboardError):
    """A form that is not one (too big, not decodable, a repeated parameter)."""


def parse_form(body: bytes) -> dict[str, str]:
    """The parameters of a form-encoded body. Raises FormError."""
    if len(body) > MAX_FORM_BYTES:
        raise FormError(f"the form is over {MAX_FORM_BYTES} bytes")
    try:
        text = body.decode("ascii")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_FORM_FIELDS)
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormError(f"the form cannot be decoded: {exc}") from exc
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise FormError(f"the parameter {name!r} is repeated")
        form[name] = value
    return form


def oauth_error(code: OAuthErrorCode, description: str) -> tuple[int, bytes]:
    """The status and body of an OAuth endpoint's error (RFC 6749 5.2, RFC 8628 3.5)."""
    return _STATUS.get(code, 400), JSON.encode({"error": code, "error_description": description})


def metadata(issuer: str) -> dict[str, object]:
    """RFC 8414 metadata for the gateway at ``issuer`` (its base URL, no trailing slash)."""
    return {
        "issuer": issuer,
        "device_authorization_endpoint": issuer + DEVICE_AUTHORIZATION_PATH,
        "token_endpoint": issuer + TOKEN_PATH,
        "revocation_endpoint": issuer + REVOCATION_PATH,
        "grant_types_supported": [GRANT_DEVICE, GRANT_REFRESH],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": ["none"],
        "revocation_endpoint_auth_methods_supported": ["none"],
    }


def user_code(digits: Sequence[int]) -> str:
    """The user code of ``USER_CODE_LENGTH`` indices into ``USER_CODE_ALPHABET``, as shown."""
    if len(digits) != USER_CODE_LENGTH or any(not 0 <= d < len(USER_CODE_ALPHABET) for d in digits):
        raise ValueError("a user code is 8 indices below 20")
    text = "".join(USER_CODE_ALPHABET[d] for d in digits)
    return f"{text[:4]}-{text[4:]}"


def normalize_user_code(typed: str) -> str | None:
    """A code as typed (any case, dashes and spaces anywhere) in its shown form, or None
    when it cannot be one (RFC 8628 6.1: be lenient in what the user types)."""
    if len(typed) > 64:
        return None
    text = "".join(c for c in typed.upper() if c not in "- \t")
    if len(text) != USER_CODE_LENGTH or any(c not in USER_CODE_ALPHABET for c in text):
        return None
    return f"{text[:4]}-{text[4:]}"


GrantState = Literal["pending", "approved", "denied", "issued"]


class DeviceGrant(msgspec.Struct, frozen=True, kw_only=True):
    """One device authorization: its user code, when it ends, the poll interval in force, the
    last poll, and who approved it (``user``, once ``approved``)."""

    user_code: str
    expires_at: float
    interval: int = POLL_INTERVAL
    last_poll: float | None = None
    state: GrantState = "pending"
    user: str | None = None


class Approved(msgspec.Struct, frozen=True, kw_only=True):
    """The poll that ends a sign-in: issue tokens to ``user``."""

    user: str


PollAnswer = Approved | OAuthErrorCode


def poll(grant: DeviceGrant, now: float) -> tuple[DeviceGrant, PollAnswer]:
    """The token endpoint's answer to a poll of ``grant`` at ``now``, and the grant after it.
    An approved grant answers once (``issued`` after): a device code is single use."""
    if grant.state == "issued":
        return grant, "invalid_grant"
    if now >= grant.expires_at:
        return grant, "expired_token"
    if grant.state == "denied":
        return grant, "access_denied"
    if grant.state == "approved" and grant.user is not None:
        return msgspec.structs.replace(grant, state="issued", last_poll=now), Approved(user=grant.user)
    if grant.last_poll is not None and now - grant.last_poll < grant.interval:
        slower = msgspec.structs.replace(grant, interval=grant.interval + SLOW_DOWN_STEP, last_poll=now)
        return slower, "slow_down"
    return msgspec.structs.replace(grant, last_poll=now), "authorization_pending"


def decide(grant: DeviceGrant, now: float, user: str | None) -> DeviceGrant | None:
    """``grant`` approved by ``user`` (None: denied) at ``now``; None when it can no longer be
    decided (expired, or decided already)."""
    if grant.state != "pending" or now >= grant.expires_at:
        return None
    if user is None:
        return msgspec.structs.replace(grant, state="denied")
    return msgspec.structs.replace(grant, state="approved", user=user)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def access_token_text(*, user: str, issued_at: int, expires_at: int, jti: bytes) -> str:
    """An access token: an unsecured JWT (RFC 7519 6.1, ``alg: none``) of ``sub``, ``iat``,
    ``exp`` and ``jti`` (the random part, at least 32 bytes)."""
    if len(jti) < 32:
        raise ValueError("an access token needs 256 random bits")
    header = _b64(JSON.encode({"alg": "none", "typ": "JWT"}))
    payload = _b64(JSON.encode({"sub": user, "iat": issued_at, "exp": expires_at, "jti": _b64(jti)}))
    return f"{header}.{payload}."


def token_answer(access_token: str, refresh_token: str, expires_in: int) -> bytes:
    """The token endpoint's 200 (RFC 6749 5.1)."""
    return JSON.encode(
        {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": expires_in,
            "refresh_token": refresh_token,
        }
    )


def device_answer(*, device_code: str, code: str, verification_uri: str, expires_in: int, interval: int) -> bytes:
    """The device authorization endpoint's 200 (RFC 8628 3.2)."""
    return JSON.encode(
        {
            "device_code": device_code,
            "user_code": code,
            "verification_uri": verification_uri,
            "verification_uri_complete": f"{verification_uri}?user_code={code}",
            "expires_in": expires_in,
            "interval": interval,
        }
    )
