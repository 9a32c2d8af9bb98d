"""An access token as the token stores keep it (actors/store/tokens.py): a fresh token
(``new_token``) and the SHA-256 kept of it (``token_hash``), a row read back (``TokenInfo``), a
query's reservation (``Claim``), and the subject keys of users and groups (``subject_key``).
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any, Final, cast

import msgspec

from protocol.budget import Account, Limits, Period

TOKEN_PREFIX: Final = "sb-"
# 32 random bytes: 256 bits, as the budgets issue asks.
TOKEN_BYTES: Final = 32
SUBJECT_TOKEN: Final = "token"
# A signed-in user's and a group's limits (the organisation policy, actors/access/policy.py): rows
# without a token hash, named in the reservation calls by a subject key ``user:NAME`` or
# ``group:NAME`` (``subject_key``); a token's key is its name.
SUBJECT_USER: Final = "user"
SUBJECT_GROUP: Final = "group"
_SUBJECT_KINDS: Final = (SUBJECT_USER, SUBJECT_GROUP)
# How the subject keys of users and groups begin.
SUBJECT_PREFIXES: Final = tuple(f"{kind}:" for kind in _SUBJECT_KINDS)


def subject_key(kind: str, name: str) -> str:
    """The key ``reserve``, ``top_up`` and ``settle`` take for a subject."""
    return name if kind == SUBJECT_TOKEN else f"{kind}:{name}"


def _subject(key: str) -> tuple[str, str]:
    """``(subject_kind, name)`` of a subject key."""
    kind, colon, name = key.partition(":")
    return (kind, name) if colon and kind in _SUBJECT_KINDS else (SUBJECT_TOKEN, key)

_FIELDS: Final = (
    "name, budget_pico, period, max_concurrent, rpm, models, period_key, spent_pico, "
    "reserved_pico, in_flight, rpm_key, rpm_count, created_at, token_hash"
)


class TokenInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A token's name, limits and counters (never the token)."""

    name: str
    limits: Limits
    account: Account
    created_at: str
    # The token's SHA-256: also the owner digest of its sessions (actors.store.ledger_sessions.owner_digest).
    token_hash: str | None = None


class Claim(msgspec.Struct, frozen=True, kw_only=True):
    """A query's row in ``reservations``: its own id, the query (its session and query id
    find its usage records) and the instance running it."""

    reservation_id: str
    session_id: str
    query_id: str
    instance_id: str


def new_token() -> str:
    """A fresh access token: ``sb-`` and 256 random bits (URL-safe base64)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    """What the store keeps of a token (the module docstring says why SHA-256 suffices)."""
    return hashlib.sha256(token.encode()).hexdigest()


def _info(row: tuple[Any, ...]) -> TokenInfo:
    (name, budget, period, concurrent, rpm, models, key, spent, reserved, in_flight, rpm_key, rpm_count, created, digest) = row
    return TokenInfo(
        name=str(name),
        limits=Limits(
            budget_pico=None if budget is None else int(budget),
            period=cast(Period, str(period)),
            max_concurrent=None if concurrent is None else int(concurrent),
            rpm=None if rpm is None else int(rpm),
            models=None if models is None else tuple(m for m in str(models).split(",") if m),
        ),
        account=Account(
            period_key=str(key),
            spent_pico=int(spent),
            reserved_pico=int(reserved),
            in_flight=int(in_flight),
            rpm_key=str(rpm_key),
            rpm_count=int(rpm_count),
        ),
        created_at=str(created),
        token_hash=None if digest is None else str(digest),
    )


def _models(models: tuple[str, ...] | None) -> str | None:
    return None if models is None else ",".join(models)

