"""Request construction's settings (issue 5), read from the environment once.

``build_settings_from_env`` turns the README's request-construction variables into the
``BuildSettings`` that protocol/request_builder.py consumes: models (``ANTHROPIC_MODEL``,
``ANTHROPIC_DEFAULT_*_MODEL``, ``ANTHROPIC_SMALL_FAST_MODEL``, ...), betas (``ANTHROPIC_BETAS``,
...), ``CLAUDE_CODE_EXTRA_BODY``, prompt caching, thinking, the advisor tool and tool search.
``config_from_env`` (actors/config/from_env.py) calls it with the environment it was handed and the
provider it chose, and keeps the result in ``Config.build``; this module never reads
``os.environ`` itself.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from urllib.parse import urlsplit

import msgspec

from actors.config.env import int_env, is_truthy
from protocol import bounded_json
from protocol.models.aliases import FIRST_PARTY, ModelSettings
from protocol.request_builder import BuildSettings


def _extra_body(raw: str) -> dict[str, object]:
    """``CLAUDE_CODE_EXTRA_BODY``: only a JSON object counts; anything else is logged and
    ignored (the reference's behaviour), so a typo cannot take the gateway down."""
    if not raw.strip():
        return {}
    try:
        value = bounded_json.decode(raw)
    except msgspec.DecodeError as exc:
        logging.getLogger("switchboard.config").warning("CLAUDE_CODE_EXTRA_BODY ignored: not JSON (%s)", exc)
        return {}
    if not isinstance(value, dict):
        logging.getLogger("switchboard.config").warning(
            "CLAUDE_CODE_EXTRA_BODY ignored: a JSON object is required, got %s", type(value).__name__
        )
        return {}
    return value


def build_settings_from_env(env: Mapping[str, str], provider: str = FIRST_PARTY) -> BuildSettings:
    """The request-construction settings (protocol/request_builder.py), read once.

    Raises:
        ConfigError: ``CLAUDE_CODE_MAX_OUTPUT_TOKENS`` is not an integer.
    """

    def get(name: str) -> str | None:
        return env.get(name, "").strip() or None

    max_output = int_env(env, "CLAUDE_CODE_MAX_OUTPUT_TOKENS", 0)
    one_hour = is_truthy(env.get("ENABLE_PROMPT_CACHING_1H")) or (
        provider == "bedrock" and is_truthy(env.get("ENABLE_PROMPT_CACHING_1H_BEDROCK"))
    )
    advisor = get("SWITCHBOARD_ADVISOR_MODEL")
    return BuildSettings(
        provider=provider,
        models=ModelSettings(
            default_opus=get("ANTHROPIC_DEFAULT_OPUS_MODEL"),
            default_sonnet=get("ANTHROPIC_DEFAULT_SONNET_MODEL"),
            default_haiku=get("ANTHROPIC_DEFAULT_HAIKU_MODEL"),
            default_fable=get("ANTHROPIC_DEFAULT_FABLE_MODEL"),
            small_fast=get("ANTHROPIC_SMALL_FAST_MODEL"),
            main_model=get("ANTHROPIC_MODEL"),
            disable_legacy_remap=is_truthy(env.get("CLAUDE_CODE_DISABLE_LEGACY_MODEL_REMAP")),
            disable_1m=is_truthy(env.get("CLAUDE_CODE_DISABLE_1M_CONTEXT")),
            # docs/reference/reference-client-now.md 1: Bedrock ids take the region's geo prefix.
            bedrock_region=get("AWS_REGION") or get("AWS_DEFAULT_REGION"),
        ),
        extra_betas=tuple(b.strip() for b in env.get("ANTHROPIC_BETAS", "").split(",") if b.strip()),
        disable_experimental_betas=is_truthy(env.get("CLAUDE_CODE_DISABLE_EXPERIMENTAL_BETAS")),
        disable_interleaved_thinking=is_truthy(env.get("DISABLE_INTERLEAVED_THINKING")),
        extra_body=_extra_body(env.get("CLAUDE_CODE_EXTRA_BODY", "")),
        disable_prompt_caching=is_truthy(env.get("DISABLE_PROMPT_CACHING")),
        disable_prompt_caching_haiku=is_truthy(env.get("DISABLE_PROMPT_CACHING_HAIKU")),
        disable_prompt_caching_sonnet=is_truthy(env.get("DISABLE_PROMPT_CACHING_SONNET")),
        disable_prompt_caching_opus=is_truthy(env.get("DISABLE_PROMPT_CACHING_OPUS")),
        prompt_caching_1h=one_hour,
        force_prompt_caching_5m=is_truthy(env.get("FORCE_PROMPT_CACHING_5M")),
        max_output_tokens=max_output if max_output > 0 else None,
        disable_thinking=is_truthy(env.get("CLAUDE_CODE_DISABLE_THINKING")),
        advisor_model=None if is_truthy(env.get("CLAUDE_CODE_DISABLE_ADVISOR_TOOL")) else advisor,
        tool_search=_tool_search(env),
    )


def _tool_search(env: Mapping[str, str]) -> bool:
    """docs/reference/reference-client.md 8, ``ENABLE_TOOL_SEARCH``: ``false``/``auto:100`` off, any other
    value on; unset, on unless ``ANTHROPIC_BASE_URL`` points at a host other than the API's
    (a proxy may not know ``defer_loading``)."""
    raw = env.get("ENABLE_TOOL_SEARCH", "").strip().lower()
    if raw:
        return raw not in ("false", "0", "auto:100")
    base_url = env.get("ANTHROPIC_BASE_URL", "").strip()
    return not base_url or urlsplit(base_url).hostname == "api.anthropic.com"
