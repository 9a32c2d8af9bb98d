"""Recovery from the output-token limit (docs/reference/reference-client.md 2.5), for queries that opt in.

When an answer stops on ``max_tokens`` (or ``model_context_window_exceeded``) the reference
client does not surface the error while it can still recover:

1. escalation, once: the same request again with ``max_tokens`` raised to 64 000 (only when
   the request asked for less); the cut-off answer is voided;
2. continuation, up to three times: the partial answer is appended as an assistant turn,
   followed by a meta user message asking to resume, and the next answer is spliced onto
   the previous one (its blocks renumbered after the earlier ones).

The client sees one continuous message. Pure: the supervisor keeps a ``Recovery`` per query.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import msgspec

from protocol.wire import JsonObject

# docs/reference/reference-client.md 2.5.
ESCALATED_MAX_TOKENS: Final = 64_000
MAX_OUTPUT_TOKENS_RECOVERY_LIMIT: Final = 3
RESUME_PROMPT: Final = (
    "Output token limit hit. Resume directly — no apology, no recap of what you were doing. "
    "Pick up mid-thought if that is where the cut happened. Break remaining work into smaller pieces."
)
OUTPUT_LIMIT_STOPS: Final = frozenset({"max_tokens", "model_context_window_exceeded"})


class Recovery(msgspec.Struct, frozen=True, kw_only=True):
    """``content``: the blocks of the parts answered so far; ``index_offset``: how many."""

    escalated: bool = False
    continuations: int = 0
    content: tuple[Any, ...] = ()

    @property
    def index_offset(self) -> int:
        return len(self.content)


def hit_output_limit(message: JsonObject) -> bool:
    return message.get("stop_reason") in OUTPUT_LIMIT_STOPS


def _can_escalate(recovery: Recovery, request: JsonObject) -> bool:
    max_tokens = request.get("max_tokens")
    return not recovery.escalated and isinstance(max_tokens, int) and max_tokens < ESCALATED_MAX_TOKENS


def can_recover(recovery: Recovery, request: JsonObject) -> bool:
    """Whether an answer cut off now could still be recovered (so its stop is withheld)."""
    return _can_escalate(recovery, request) or recovery.continuations < MAX_OUTPUT_TOKENS_RECOVERY_LIMIT


def next_step(
    recovery: Recovery, request: JsonObject, message: JsonObject
) -> tuple[Literal["escalate", "continue"], Recovery, JsonObject]:
    """The next request after ``message`` was cut off (call only when ``can_recover``)."""
    if _can_escalate(recovery, request):
        return "escalate", msgspec.structs.replace(recovery, escalated=True), {**request, "max_tokens": ESCALATED_MAX_TOKENS}
    part = list(message.get("content") or [])
    messages = list(request.get("messages") or [])
    messages.append({"role": "assistant", "content": part})
    messages.append({"role": "user", "content": [{"type": "text", "text": RESUME_PROMPT}]})
    advanced = Recovery(
        escalated=recovery.escalated,
        continuations=recovery.continuations + 1,
        content=(*recovery.content, *part),
    )
    return "continue", advanced, {**request, "messages": messages}


def combined(recovery: Recovery, last: JsonObject) -> JsonObject:
    """The one message the client sees: every part's blocks, the last part's stop."""
    if not recovery.content:
        return last
    return {**last, "content": [*recovery.content, *(last.get("content") or [])]}
