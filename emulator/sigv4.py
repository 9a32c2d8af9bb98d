"""AWS Signature Version 4, re-derived on the receiving side (docs/reference/wire.md 7.3): the Bedrock
emulator checks each request's ``Authorization`` against the secrets it knows.

Written from the specification rather than with botocore, so that the tests compare two
independent implementations (botocore signs in the gateway, this verifies).
Canonical URI: the raw path quoted again with ``safe="/~"`` (the non-S3 rule: ``:`` becomes
``%3A``, an already-encoded ``%2F`` becomes ``%252F``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, urlsplit

ALGORITHM: Final = "AWS4-HMAC-SHA256"
_AUTHORIZATION: Final = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request,"
    r"\s*SignedHeaders=(?P<signed>[^,]+),\s*Signature=(?P<signature>[0-9a-f]{64})$"
)


@dataclass(frozen=True)
class Authorization:
    access_key: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(value: str) -> Authorization | None:
    match = _AUTHORIZATION.match(value.strip())
    if match is None:
        return None
    return Authorization(
        access_key=match["key"],
        date=match["date"],
        region=match["region"],
        service=match["service"],
        signed_headers=tuple(match["signed"].split(";")),
        signature=match["signature"],
    )


def canonical_request(
    method: str, target: str, headers: Mapping[str, str], signed: tuple[str, ...], body: bytes
) -> str:
    """The canonical request of ``target`` (raw path and query) with ``headers`` (lower-case names)."""
    parts = urlsplit(target)
    query = "&".join(sorted(parts.query.split("&"))) if parts.query else ""
    lines = [
        method,
        quote(parts.path or "/", safe="/~"),
        query,
        *(f"{name}:{' '.join(headers.get(name, '').split())}" for name in signed),
        "",
        ";".join(signed),
        hashlib.sha256(body).hexdigest(),
    ]
    return "\n".join(lines)


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    return "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])


def signature(secret: str, date: str, region: str, service: str, to_sign: str) -> str:
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def verify(method: str, target: str, headers: Mapping[str, str], body: bytes, secret: str, auth: Authorization) -> bool:
    """Whether ``auth`` is the signature of this request under ``secret``."""
    amz_date = headers.get("x-amz-date", "")
    if not amz_date.startswith(auth.date) or "host" not in auth.signed_headers:
        return False
    canonical = canonical_request(method, target, headers, auth.signed_headers, body)
    scope = f"{auth.date}/{auth.region}/{auth.service}/aws4_request"
    expected = signature(secret, auth.date, auth.region, auth.service, string_to_sign(amz_date, scope, canonical))
    return hmac.compare_digest(expected, auth.signature)
