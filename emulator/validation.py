"""Request checks, in the API's order: credential, version, betas, body (pure).

Each check returns the exact error reply the API would send, or None / the decoded body.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import msgspec

from .errors import ErrorResponse, api_error

# anthropic-version values the API accepts (wire.md 1.1 and 1.3; SDK 2.x sends 2026-10-21).
API_VERSIONS: Final = frozenset({"2023-06-01", "2026-10-21"})

# The anthropic-beta names the API accepts: wire.md 11 (SDK literals, other strings and
# the feature table), names seen in Claude Code traffic, and the Literal list of the
# installed anthropic SDK 2.14 (types/anthropic_beta_param.py), which is newer than wire.md.
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
    google-managed-data-controls-2026-09-01
    """.split()
)

# "system" is the newer mid-conversation system message (wire.md 1.2).
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
        return api_error(400, f"anthropic-version: invalid version {version!r}")
    for beta in headers.get("anthropic-beta", "").split(","):
        if beta.strip() and beta.strip() not in KNOWN_BETAS:
            return api_error(400, f"Unsupported beta header: {beta.strip()}")
    return None


def parse_body(raw: bytes, *, needs_max_tokens: bool) -> dict[str, object] | ErrorResponse:
    """Decode and check a Messages (or count_tokens) request body.

    Returns the decoded object, or the 400 invalid_request_error the API would send.
    ``needs_max_tokens`` is False for count_tokens, which takes no ``max_tokens``.
    """
    try:
        body = _decode(raw)
    except msgspec.DecodeError as exc:
        return api_error(400, f"There was an error parsing the body of your request: {exc}")
    return check_body(body, needs_max_tokens=needs_max_tokens)


def check_body(body: object, *, needs_max_tokens: bool) -> dict[str, object] | ErrorResponse:
    """Check an already decoded request body; see ``parse_body``."""
    if not isinstance(body, dict):
        return api_error(400, "body: Input should be a valid dictionary")
    problem = _body_problem(body, needs_max_tokens=needs_max_tokens)
    return api_error(400, problem) if problem else body


def _body_problem(body: Mapping[str, object], *, needs_max_tokens: bool) -> str | None:
    """The first thing wrong with ``body``, in the API's error wording, or None."""
    model = body.get("model")
    if model is None:
        return "model: Field required"
    if not isinstance(model, str) or not model:
        return "model: Input should be a valid, non-empty string"
    max_tokens = body.get("max_tokens")
    if needs_max_tokens and max_tokens is None:
        return "max_tokens: Field required"
    if max_tokens is not None:
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
            return "max_tokens: Input should be a valid integer"
        if max_tokens < 1:
            return "max_tokens: Input should be greater than or equal to 1"
    messages = body.get("messages")
    if messages is None:
        return "messages: Field required"
    if not isinstance(messages, list):
        return "messages: Input should be a valid list"
    if not messages:
        return "messages: List should have at least 1 item after validation, not 0"
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"messages.{index}: Input should be a valid dictionary"
        if message.get("role") not in _ROLES:
            return f"messages.{index}.role: Input should be 'user' or 'assistant'"
        if not isinstance(message.get("content"), (str, list)):
            return f"messages.{index}.content: Input should be a valid string or list"
    if "stream" in body and not isinstance(body["stream"], bool):
        return "stream: Input should be a valid boolean"
    if "system" in body and not isinstance(body["system"], (str, list)):
        return "system: Input should be a valid string or list"
    tools = body.get("tools")
    if tools is not None and not (
        isinstance(tools, list) and all(isinstance(t, dict) for t in tools)
    ):
        return "tools: Input should be a valid list of tool definitions"
    for name in ("tool_choice", "thinking"):
        if body.get(name) is not None and not isinstance(body[name], dict):
            return f"{name}: Input should be a valid dictionary"
    return None
