"""Request checks, in the API's order: credential, version, betas, body (pure).

Each check returns the exact error reply the API would send, or None / the decoded body.
The body check is as strict as the API's: every top-level field must be one the API knows
(``MESSAGES_FIELDS``, ``COUNT_TOKENS_FIELDS``) with the right type, so a client's stray or
mistyped field fails here as it would upstream. The model is checked by the router
(``emulator/models.py``), after the body.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

import msgspec

from .errors import ErrorResponse, api_error

# anthropic-version values the API accepts (docs/reference/wire.md 1.1 and 1.3; SDK 2.x sends 2026-10-21).
API_VERSIONS: Final = frozenset({"2023-06-01", "2026-10-21"})
# The version of a cloud request (its body carries its own) for the body checks.
DEFAULT_VERSION: Final = "2023-06-01"

# The anthropic-beta names the API accepts: docs/reference/wire.md 11 (SDK literals, other strings and
# the feature table), names seen in Claude Code traffic, and the Literal list of the
# installed anthropic SDK 2.14 (types/anthropic_beta_param.py), which is newer than docs/reference/wire.md,
# and what Claude Code 2.1.332 sends (tests/clients: per-turn-control on its alias models).
KNOWN_BETAS: Final = frozenset(
    """
    message-batches-2024-09-24 prompt-caching-2024-07-31 computer-use-2024-10-22
    computer-use-2025-01-24 computer-use-2025-11-24 pdfs-2024-09-25 token-counting-2024-11-01
    token-efficient-tools-2025-02-19 token-efficient-tools-2026-03-28 output-128k-2025-02-19
    files-api-2025-04-14 mcp-client-2025-04-04 mcp-client-2025-11-20 mcp-client-2026-09-15
    dev-full-thinking-2025-05-14 interleaved-thinking-2025-05-14 code-execution-2025-05-22
    code-execution-2025-08-25 extended-cache-ttl-2025-04-11 context-1m-2025-08-07
    context-management-2025-06-27 model-context-window-exceeded-2025-08-26 skills-2025-10-02
    fast-mode-2026-02-01 output-300k-2026-03-24 user-profiles-2026-03-24
    user-profiles-2026-08-18 user-profiles-2026-09-04 user-profiles-billing-2026-10-01
    advisor-tool-2026-03-01 managed-agents-2026-04-01 cache-diagnosis-2026-04-07
    dreaming-2026-04-21 thinking-token-count-2026-05-13 server-side-fallback-2026-06-01
    server-side-fallback-2026-07-01 fallback-credit-2026-06-01 fallback-credit-2026-07-01
    agent-memory-2026-07-22 mid-conversation-tool-changes-2026-07-01
    mid-conversation-output-config-2026-07-01 mid-conversation-system-clear-at-2026-08-21
    mid-conversation-system-2026-04-07 structured-outputs-2025-11-13
    structured-outputs-2025-12-15 fine-grained-tool-streaming-2025-05-14
    tool-search-tool-2025-10-19 tool-examples-2025-10-29 advanced-tool-use-2025-11-20
    oauth-2025-04-20 oidc-federation-2026-04-01 mcp-tunnels-2026-06-22 compact-2026-01-12
    compact-2026-09-04 prompt-caching-scope-2026-01-05 effort-2025-11-24
    redact-thinking-2026-02-12 claude-code-20250219 task-budgets-2026-03-13
    web-fetch-2025-09-10 web-search-2025-03-05 afk-mode-2026-01-31
    thinking-display-updates-2026-08-18 thinking-binding-controls-2026-08-01
    inline-tools-2026-09-15 ce-plugins-2026-09-01 spend-limit-reads-2026-09-26
    telemetry-destinations-2026-08-11 webhooks-2026-10-07 admin-user-sign-out-2026-10-08
    message-threads-2026-08-12 analytics-usage-cost-2026-08-24
    experimental-claude-tag-2026-10-21 ce-user-management-2026-07-13
    ce-claude-code-managed-settings-2026-10-06 efs-2026-10-01
    google-managed-data-controls-2026-09-01 per-turn-control-2026-07-01
    """.split()
)

# "system" is the newer mid-conversation system message (docs/reference/wire.md 1.2).
_ROLES: Final = frozenset({"user", "assistant", "system"})
_decode: Final = msgspec.json.decode


def credential(headers: Mapping[str, str]) -> str | None:
    """The API key or bearer token the request carries (x-api-key wins), or None."""
    key = headers.get("x-api-key", "").strip()
    if key:
        return key
    scheme, _, token = headers.get("authorization", "").strip().partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


def check_headers(
    headers: Mapping[str, str], api_keys: frozenset[str] | None
) -> ErrorResponse | None:
    """Check credential, ``anthropic-version`` and ``anthropic-beta``; None when all pass."""
    presented = credential(headers)
    if presented is None or (api_keys is not None and presented not in api_keys):
        return api_error(401)
    version = headers.get("anthropic-version")
    if version is None:
        return api_error(400, "anthropic-version: header is required")
    if version not in API_VERSIONS:
        # The API's wording (seen for a duplicated header, "2023-06-01, 2023-06-01").
        return api_error(400, f'anthropic-version: "{version}" is not a valid version')
    for beta in headers.get("anthropic-beta", "").split(","):
        if beta.strip() and beta.strip() not in KNOWN_BETAS:
            return api_error(400, f"Unsupported beta header: {beta.strip()}")
    return None


# With interleaved thinking the budget spans a turn's thinking blocks and may exceed
# ``max_tokens``; without it the API refuses a budget that does not fit.
INTERLEAVED_THINKING: Final = "interleaved-thinking-2025-05-14"
THINKING_OVER_MAX_TOKENS: Final = (
    "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our documentation at "
    "https://docs.claude.com/en/docs/build-with-claude/extended-thinking#max-tokens-and-context-window-size"
)


def thinking_problem(body: Mapping[str, object], betas: str) -> ErrorResponse | None:
    """The API's 400 for an enabled thinking budget >= ``max_tokens`` (a checked Messages
    body; ``betas`` the ``anthropic-beta`` header), unless interleaved thinking is on."""
    thinking, max_tokens = body.get("thinking"), body.get("max_tokens")
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled" or not isinstance(max_tokens, int):
        return None
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int) or budget < max_tokens:
        return None
    if INTERLEAVED_THINKING in (beta.strip() for beta in betas.split(",")):
        return None
    return api_error(400, THINKING_OVER_MAX_TOKENS)


def parse_body(
    raw: bytes, *, counting: bool = False, version: str = DEFAULT_VERSION
) -> dict[str, object] | ErrorResponse:
    """Decode and check a Messages (or, ``counting``, count_tokens) request body.

    Returns the decoded object, or the 400 invalid_request_error the API would send.
    """
    try:
        body = _decode(raw)
    except msgspec.DecodeError as exc:
        return api_error(400, f"There was an error parsing the body of your request: {exc}")
    return check_body(body, counting=counting, version=version)


def check_body(
    body: object, *, counting: bool = False, version: str = DEFAULT_VERSION
) -> dict[str, object] | ErrorResponse:
    """Check an already decoded request body; see ``parse_body``.

    ``version`` is the request's ``anthropic-version``: 2026-10-21 removed ``temperature``,
    ``top_p`` and ``top_k`` (docs/reference/wire.md 1.3), so they are extra inputs there.
    """
    if not isinstance(body, dict):
        return api_error(400, "body: Input should be a valid dictionary")
    problem = _body_problem(body, counting=counting, version=version)
    return api_error(400, problem) if problem else body


def _body_problem(body: Mapping[str, object], *, counting: bool, version: str) -> str | None:
    """The first thing wrong with ``body``, in the API's error wording, or None.

    The required fields first (model, max_tokens, messages), then every field in the
    body's order: an unknown one is an extra input, a known one must have its type.
    """
    fields = COUNT_TOKENS_FIELDS if counting else MESSAGES_FIELDS
    required = ("model", "messages") if counting else ("model", "max_tokens", "messages")
    for name in required:
        if body.get(name) is None:
            return f"{name}: Field required"
        problem = fields[name](body[name])
        if problem:
            return f"{name}{problem}"
    removed = _REMOVED_FIELDS.get(version, frozenset())
    for name, value in body.items():
        check = fields.get(name)
        if check is None or name in removed:
            return f"{name}: Extra inputs are not permitted"
        problem = check(value)
        if problem:
            return f"{name}{problem}"
    return None


# One field's check: None when ``value`` fits, else the error after the field's name
# (``": Input should be ..."`` or ``".0.role: ..."`` for a nested place), pydantic's wording
# as the API reports it (docs/reference/wire.md 1.3 quotes ``temperature: Extra inputs are not permitted``).
_Check = Callable[[object], "str | None"]


def _nullable(check: _Check) -> _Check:
    """``check``, with null accepted too (the fields the SDK types ``Optional``)."""
    return lambda value: None if value is None else check(value)


def _string(value: object) -> str | None:
    return None if isinstance(value, str) else ": Input should be a valid string"


def _dictionary(value: object) -> str | None:
    return None if isinstance(value, dict) else ": Input should be a valid dictionary"


def _boolean(value: object) -> str | None:
    return None if isinstance(value, bool) else ": Input should be a valid boolean"


def _integer(minimum: int) -> _Check:
    def check(value: object) -> str | None:
        if not isinstance(value, int) or isinstance(value, bool):
            return ": Input should be a valid integer"
        if value < minimum:
            return f": Input should be greater than or equal to {minimum}"
        return None

    return check


def _number(low: float, high: float) -> _Check:
    def check(value: object) -> str | None:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return ": Input should be a valid number"
        if value < low:
            return f": Input should be greater than or equal to {low:g}"
        if value > high:
            return f": Input should be less than or equal to {high:g}"
        return None

    return check


def _literal(*allowed: str) -> _Check:
    wording = " or ".join(f"'{choice}'" for choice in allowed)
    if len(allowed) > 2:
        wording = ", ".join(f"'{choice}'" for choice in allowed[:-1]) + f" or '{allowed[-1]}'"
    return lambda value: None if value in allowed else f": Input should be {wording}"


def _list_of(item: _Check) -> _Check:
    def check(value: object) -> str | None:
        if not isinstance(value, list):
            return ": Input should be a valid list"
        for index, element in enumerate(value):
            problem = item(element)
            if problem:
                return f".{index}{problem}"
        return None

    return check


def _any_of(*checks: _Check) -> _Check:
    """Fits when one of ``checks`` fits; else the first check's complaint."""

    def check(value: object) -> str | None:
        problems = [check(value) for check in checks]
        return None if not all(problems) else problems[0]

    return check


def _model(value: object) -> str | None:
    return None if isinstance(value, str) and value else ": Input should be a valid, non-empty string"


def _message(value: object) -> str | None:
    if not isinstance(value, dict):
        return ": Input should be a valid dictionary"
    if value.get("role") not in _ROLES:
        return ".role: Input should be 'user' or 'assistant'"
    if not isinstance(value.get("content"), (str, list)):
        return ".content: Input should be a valid string or list"
    return None


def _messages(value: object) -> str | None:
    if not isinstance(value, list):
        return ": Input should be a valid list"
    if not value:
        return ": List should have at least 1 item after validation, not 0"
    return _list_of(_message)(value)


def _typed(*types: str) -> _Check:
    """A JSON object whose ``type`` is one of ``types`` (tool_choice, thinking, ...)."""
    kind = _literal(*types)

    def check(value: object) -> str | None:
        if not isinstance(value, dict):
            return ": Input should be a valid dictionary"
        if "type" not in value:
            return ".type: Field required"
        problem = kind(value["type"])
        return f".type{problem}" if problem else None

    return check


def _thinking(value: object) -> str | None:
    problem = _typed("enabled", "disabled", "adaptive")(value)
    if problem or not isinstance(value, dict) or value["type"] != "enabled":
        return problem
    if "budget_tokens" not in value:
        return ".enabled.budget_tokens: Field required"
    problem = _integer(1024)(value["budget_tokens"])
    return f".enabled.budget_tokens{problem}" if problem else None


def _metadata(value: object) -> str | None:
    if not isinstance(value, dict):
        return ": Input should be a valid dictionary"
    problem = _nullable(_string)(value.get("user_id"))
    return f".user_id{problem}" if problem else None


def _system(value: object) -> str | None:
    if isinstance(value, list):
        return _list_of(_typed("text"))(value)
    return _string(value)


_SYSTEM: Final = _system
_TOOL_CHOICE: Final = _typed("auto", "any", "tool", "none")
_CACHE_CONTROL: Final = _nullable(_typed("ephemeral"))
_OBJECT: Final = _nullable(_dictionary)

# Every top-level field of ``POST /v1/messages`` (GA and beta) and its type: docs/reference/wire.md 1.2,
# the installed SDK's ``types/beta/message_create_params.py`` (newer than docs/reference/wire.md:
# ``billing_policy``, ``compaction``, ``thread``) and the flagged fields current Claude Code
# sends (docs/reference/reference-client-now.md 5: ``fallbacks``, ``fallback_credit_token``, ``diagnostics``,
# ``context_hint``). Anything else is ``<field>: Extra inputs are not permitted``.
MESSAGES_FIELDS: Final[Mapping[str, _Check]] = {
    "model": _model,
    "messages": _messages,
    "max_tokens": _integer(1),
    "system": _SYSTEM,
    "metadata": _metadata,
    "stop_sequences": _list_of(_string),
    "stream": _boolean,
    "temperature": _number(0, 1),
    "top_k": _integer(0),
    "top_p": _number(0, 1),
    "tools": _list_of(_dictionary),
    "tool_choice": _TOOL_CHOICE,
    "thinking": _thinking,
    "service_tier": _literal("auto", "standard_only"),
    "container": _nullable(_any_of(_string, _dictionary)),
    "mcp_servers": _list_of(_dictionary),
    "context_management": _OBJECT,
    "output_config": _dictionary,
    "output_format": _OBJECT,
    "speed": _nullable(_literal("standard", "fast")),
    "inference_geo": _nullable(_string),
    "cache_control": _CACHE_CONTROL,
    "fallbacks": _nullable(_any_of(_list_of(_dictionary), _literal("default"))),
    "fallback_credit_token": _nullable(_any_of(_string, _dictionary)),
    "diagnostics": _OBJECT,
    "context_hint": _OBJECT,
    "billing_policy": _OBJECT,
    "compaction": _OBJECT,
    "thread": _OBJECT,
}

# ``POST /v1/messages/count_tokens`` takes the prompt only: no ``max_tokens``, no ``stream``,
# no sampling (docs/reference/wire.md 6; the SDK's ``types/beta/message_count_tokens_params.py``).
COUNT_TOKENS_FIELDS: Final[Mapping[str, _Check]] = {
    name: MESSAGES_FIELDS[name]
    for name in (
        "model", "messages", "system", "tools", "tool_choice", "thinking", "output_config",
        "cache_control", "context_management", "mcp_servers", "speed", "billing_policy",
        "compaction",
    )
}  # fmt: skip

# Fields an API version removed (docs/reference/wire.md 1.3): a request sending one gets a 400.
_REMOVED_FIELDS: Final[Mapping[str, frozenset[str]]] = {
    "2026-10-21": frozenset({"temperature", "top_p", "top_k"}),
}
