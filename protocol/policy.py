"""Organisation policy: model allow-lists and managed settings per group and per user (pure).

The Claude Code gateway protocol (README.md "Claude Code for a whole organisation") lets a
gateway hand each signed-in user their managed settings (``GET /managed/settings``) and refuse
models outside their allow-list (``POST /v1/messages``: 400 ``invalid_request_error``; the
models ``GET /v1/models`` lists are filtered the same way). This module holds the rules as
data; ``actors.access.policy`` reads the file and serves them.

The policy file (TOML, ``--policy`` / ``SWITCHBOARD_POLICY``)::

    [default]                      # every signed-in user (optional)
    settings = { env = { CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY = "1" } }

    [groups.eng]
    models = ["claude-sonnet-4-*", "claude-haiku-4-5*"]
    settings = { permissions = { deny = ["Bash(rm:*)"] } }

    [users.ada]
    models = ["claude-opus-4-*"]
    budget_usd = "50"              # limits, as ``switchboard tokens`` sets them for a token
    period = "month"               # (day, month, total); also max_concurrent, rpm

An entry *applies* to a principal when it is ``default``, one of the principal's groups, or
the principal's user. Rules:

- **Models**: a pattern is a model id, where ``*`` matches any run of characters
  (``fnmatch``-style, case-sensitive, ``?`` and ``[`` are literal). The allowed models are the
  union of every applying entry's ``models``; when no applying entry has ``models``, every
  model is allowed. ``models = []`` in an entry that alone applies allows none.
- **Settings**: the applying entries' ``settings`` tables merged in order (default, groups in
  the principal's order, user), later values winning; tables merge key by key, anything else
  (lists too) is replaced whole. No applying entry with ``settings``: no policy (404), which
  Claude Code reads as "no managed settings"; an applying ``settings = {}``: an empty one.
- **Limits** (``budget_usd``, ``period``, ``max_concurrent``, ``rpm``; not in ``default``):
  a user's apply to that user, a group's to all its members together; a query counts
  against the user's and each of their groups' (``limit_subjects``), besides its token's.
  The counters live in the ledger's store (actors/store/tokens.py ``sync_subjects``).
- A request whose token names no user (an access token, a ledger token) has no policy: every
  model, and ``/managed/settings`` answers 404.

The answer is ``{"uuid", "checksum", "settings"}``; the checksum is the one Claude Code
computes over the settings it holds (``sha256:`` and the hex SHA-256 of the JSON with keys
sorted, no whitespace) and, quoted, the ``ETag``: the client's ``If-None-Match`` gets a 304
when its settings are current.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Final, cast

import msgspec

from protocol.budget import PERIODS, Limits, Period, usd_to_pico
from protocol.errors import ConfigError
from protocol.identity import Principal
from protocol.wire import JsonObject

# A policy file larger than this is refused: thousands of groups fit in far less.
MAX_POLICY_BYTES: Final = 1024 * 1024
# Nested tables in settings deeper than this are refused (a merge walks them recursively).
MAX_SETTINGS_DEPTH: Final = 32
# Patterns in one entry at most, and the length of one (ids are a few dozen characters).
MAX_PATTERNS: Final = 1000
MAX_PATTERN_LENGTH: Final = 256
# An entry's limit keys (as ``switchboard tokens`` takes them; protocol/budget.py).
_LIMIT_KEYS: Final = ("budget_usd", "period", "max_concurrent", "rpm")
# An If-None-Match header longer than this matches nothing (a client sends one tag).
MAX_IF_NONE_MATCH: Final = 4096

_ENCODER: Final = msgspec.json.Encoder(order="sorted")


class Entry(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of the policy: its allow-list (None: says nothing), settings (None: none)
    and limits (None: none)."""

    models: tuple[str, ...] | None = None
    settings: JsonObject | None = None
    limits: Limits | None = None


class Policy(msgspec.Struct, frozen=True, kw_only=True):
    """The whole policy file (see the module docstring)."""

    default: Entry | None = None
    groups: Mapping[str, Entry] = msgspec.field(default_factory=dict)
    users: Mapping[str, Entry] = msgspec.field(default_factory=dict)


EMPTY: Final = Policy()


def parse_policy(raw: bytes) -> Policy:
    """The policy in the TOML text ``raw``.

    Raises:
        ConfigError: too large, not TOML, or not of the policy's shape (the message says where).
    """
    if len(raw) > MAX_POLICY_BYTES:
        raise ConfigError(f"the policy file is larger than {MAX_POLICY_BYTES} bytes")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"the policy file is not TOML: {exc}") from exc
    unknown = set(data) - {"default", "groups", "users"}
    if unknown:
        raise ConfigError(f"the policy file has unknown tables: {', '.join(sorted(unknown))}")
    default = _entry(data.get("default"), "default") if "default" in data else None
    return Policy(
        default=default,
        groups=_entries(data.get("groups", {}), "groups"),
        users=_entries(data.get("users", {}), "users"),
    )


def _entries(value: object, where: str) -> dict[str, Entry]:
    if not isinstance(value, dict):
        raise ConfigError(f"policy: [{where}] must be a table of tables")
    return {str(name): _entry(entry, f"{where}.{name}") for name, entry in value.items()}


def _entry(value: object, where: str) -> Entry:
    if not isinstance(value, dict):
        raise ConfigError(f"policy: [{where}] must be a table")
    unknown = set(value) - {"models", "settings", *_LIMIT_KEYS}
    if unknown:
        raise ConfigError(f"policy: [{where}] has unknown keys: {', '.join(sorted(unknown))}")
    models = value.get("models")
    if models is not None:
        if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
            raise ConfigError(f"policy: {where}.models must be a list of model ids or patterns")
        if len(models) > MAX_PATTERNS or any(len(m) > MAX_PATTERN_LENGTH for m in models):
            raise ConfigError(f"policy: {where}.models has too many or too long patterns")
    settings = value.get("settings")
    if settings is not None:
        if not isinstance(settings, dict):
            raise ConfigError(f"policy: {where}.settings must be a table")
        if _depth(settings) > MAX_SETTINGS_DEPTH:
            raise ConfigError(f"policy: {where}.settings nests deeper than {MAX_SETTINGS_DEPTH}")
    limits = _limits(value, where)
    if limits is not None and where == "default":
        raise ConfigError("policy: [default] cannot hold limits (give them to a group or a user)")
    return Entry(models=None if models is None else tuple(models), settings=settings, limits=limits)


def _limits(value: dict[str, object], where: str) -> Limits | None:
    """The entry's limits: ``budget_usd`` (a string or a number of dollars), ``period``
    (``day``, ``month``, ``total``), ``max_concurrent``, ``rpm``; None without any."""
    if not any(key in value for key in _LIMIT_KEYS):
        return None
    budget, period = value.get("budget_usd"), value.get("period", "total")
    if period not in PERIODS:
        raise ConfigError(f"policy: {where}.period must be one of {', '.join(PERIODS)}")
    counts: dict[str, int | None] = {}
    for key in ("max_concurrent", "rpm"):
        count = value.get(key)
        if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 0):
            raise ConfigError(f"policy: {where}.{key} must be a whole number >= 0")
        counts[key] = count
    try:
        pico = None if budget is None else usd_to_pico(budget if isinstance(budget, str) else repr(budget))
    except ValueError as exc:
        raise ConfigError(f"policy: {where}.budget_usd: {exc}") from exc
    return Limits(
        budget_pico=pico, period=cast(Period, period), max_concurrent=counts["max_concurrent"], rpm=counts["rpm"]
    )


def subject_limits(policy: Policy) -> dict[str, Limits]:
    """Every group's and user's limits, by subject key (``group:NAME``, ``user:NAME``)."""
    found = {f"group:{name}": e.limits for name, e in policy.groups.items() if e.limits is not None}
    found.update({f"user:{name}": e.limits for name, e in policy.users.items() if e.limits is not None})
    return found


def limit_subjects(policy: Policy, principal: Principal | None) -> tuple[str, ...]:
    """The subject keys whose limits a query of ``principal`` counts against: the user's and
    each of their groups' that have limits."""
    if principal is None:
        return ()
    user = policy.users.get(principal.user)
    keys = [f"user:{principal.user}"] if user is not None and user.limits is not None else []
    groups = policy.groups
    keys += [f"group:{g}" for g in dict.fromkeys(principal.groups) if g in groups and groups[g].limits is not None]
    return tuple(keys)


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def applying(policy: Policy, principal: Principal | None) -> list[Entry]:
    """The entries that apply to ``principal``, in merge order (none without a principal)."""
    if principal is None:
        return []
    found = [policy.default] if policy.default is not None else []
    found += [policy.groups[g] for g in principal.groups if g in policy.groups]
    user = policy.users.get(principal.user)
    return found + ([user] if user is not None else [])


def allowed_patterns(policy: Policy, principal: Principal | None) -> tuple[str, ...] | None:
    """The model patterns ``principal`` may use; None: every model."""
    lists = [entry.models for entry in applying(policy, principal) if entry.models is not None]
    if not lists:
        return None
    return tuple(dict.fromkeys(pattern for patterns in lists for pattern in patterns))


def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def model_allowed(patterns: Sequence[str] | None, model: str) -> bool:
    """Whether ``model`` matches one of ``patterns`` (None: every model is allowed)."""
    if patterns is None:
        return True
    return any(_compile(pattern).fullmatch(model) for pattern in patterns)


def refusal(patterns: Sequence[str] | None, model: object, user: str) -> str | None:
    """The message refusing a request for ``model`` (the request's ``model`` value), or None
    when it is allowed. A request without a string model is left to the API's own check."""
    if not isinstance(model, str) or model_allowed(patterns, model):
        return None
    listed = ", ".join(patterns or ()) or "none"
    return f"model {model} is not allowed for {user} by your organization's policy (allowed: {listed})"


def filter_models(entries: Iterable[JsonObject], patterns: Sequence[str] | None) -> tuple[JsonObject, ...]:
    """The model objects (``GET /v1/models``) whose ``id`` ``patterns`` allow."""
    return tuple(e for e in entries if model_allowed(patterns, str(e.get("id", ""))))


def merge(base: JsonObject, over: JsonObject) -> JsonObject:
    """``over`` merged onto ``base``: tables key by key, anything else replaced whole."""
    merged = dict(base)
    for key, value in over.items():
        below = merged.get(key)
        if isinstance(below, dict) and isinstance(value, dict):
            merged[key] = merge(below, value)
        else:
            merged[key] = value
    return merged


def settings_for(policy: Policy, principal: Principal | None) -> JsonObject | None:
    """The managed settings of ``principal`` (module docstring), None: no policy (404)."""
    tables = [e.settings for e in applying(policy, principal) if e.settings is not None]
    if not tables:
        return None
    merged: JsonObject = {}
    for table in tables:
        merged = merge(merged, table)
    return merged


def checksum(settings: JsonObject) -> str:
    """The settings' checksum as Claude Code computes it: ``sha256:`` and the hex SHA-256 of
    their JSON with keys sorted at every level and no whitespace."""
    return "sha256:" + hashlib.sha256(_ENCODER.encode(settings)).hexdigest()


def settings_body(settings: JsonObject) -> tuple[bytes, str]:
    """The ``GET /managed/settings`` body, ``{"uuid", "checksum", "settings"}`` (a 200
    without that wrapper is a failed fetch for the client), and its ``ETag``: the checksum,
    quoted. ``uuid`` names the settings' version (derived from the checksum)."""
    summed = checksum(settings)
    version = str(uuid.UUID(hex=summed.removeprefix("sha256:")[:32]))
    body = _ENCODER.encode({"uuid": version, "checksum": summed, "settings": settings})
    return body, f'"{summed}"'


def not_modified(if_none_match: str | None, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (weak comparison, RFC 9110 13.1.2). ``*``
    does not: a Claude Desktop session asks with it whether settings exist, and expects the
    answer it would get without the header."""
    if not if_none_match or len(if_none_match) > MAX_IF_NONE_MATCH:
        return False
    tags = [tag.strip() for tag in if_none_match.split(",")]
    return any(tag.removeprefix("W/") == etag for tag in tags)
