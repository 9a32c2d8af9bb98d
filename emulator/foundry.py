"""Microsoft Foundry on the emulator (docs/reference/wire.md 9): the first-party API under ``/anthropic``,
and an Azure managed-identity token endpoint (App Service's ``IDENTITY_ENDPOINT``).

A Foundry request carries an API key as both ``x-api-key`` and ``api-key`` (they must agree)
or ``Authorization: Bearer`` with an Entra ID token this emulator issued, unexpired (trio
clock) and not revoked. A refusal is a 401 in the API's error envelope.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Final
from urllib.parse import parse_qs, urlsplit

import msgspec

from .connection import Headers
from .delivery import Answer

PREFIX: Final = "/anthropic"
IDENTITY_PATH: Final = "/msi/token"
SCOPE_RESOURCE: Final = "https://cognitiveservices.azure.com"


def authorized(
    headers: Mapping[str, str], keys: frozenset[str] | None, tokens: Mapping[str, float], now: float
) -> bool:
    """Whether a Foundry request's credential is good. ``keys`` None: any API key passes."""
    key = headers.get("x-api-key")
    if key is not None:
        return headers.get("api-key") == key and (keys is None or key in keys)
    scheme, _, token = headers.get("authorization", "").partition(" ")
    expiry = tokens.get(token.strip()) if scheme.lower() == "bearer" else None
    return expiry is not None and now < expiry


def identity_request_ok(target: str, headers: Mapping[str, str], secret: str) -> bool:
    """An App Service managed-identity token request for the cognitive-services resource."""
    query = parse_qs(urlsplit(target).query)
    return (
        headers.get("x-identity-header") == secret
        and query.get("api-version") == ["2019-08-01"]
        and query.get("resource", [""])[0].rstrip("/").removesuffix("/.default") == SCOPE_RESOURCE
    )


def identity_answer(token: str, lifetime: int) -> Answer:
    body = msgspec.json.encode(
        {
            "access_token": token,
            # An epoch-seconds string, as App Service sends it (wall clock: it is a header-like value).
            "expires_on": str(int(time.time()) + lifetime),
            "resource": SCOPE_RESOURCE,
            "token_type": "Bearer",
            "client_id": "00000000-0000-0000-0000-000000000000",
        }
    )
    headers: Headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    return Answer(200, headers, [body])


def identity_error() -> Answer:
    body = b'{"statusCode":400,"message":"Unable to load the proper Managed Identity."}'
    return Answer(400, [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))], [body])
