"""Request-construction settings read once from the environment (issue 5)."""

from __future__ import annotations

import logging

import pytest

from actors.config.from_env import config_from_env
from actors.config.request import build_settings_from_env
from protocol.models.aliases import ModelSettings


def test_every_variable_is_read() -> None:
    env = {
        "ANTHROPIC_MODEL": "opus",
        "ANTHROPIC_DEFAULT_SONNET_MODEL": "s",
        "ANTHROPIC_DEFAULT_OPUS_MODEL": "o",
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": "h",
        "ANTHROPIC_SMALL_FAST_MODEL": "f",
        "CLAUDE_CODE_DISABLE_LEGACY_MODEL_REMAP": "1",
        "CLAUDE_CODE_DISABLE_1M_CONTEXT": "true",
        "ANTHROPIC_BETAS": "a-1, b-2,,",
        "CLAUDE_CODE_DISABLE_EXPERIMENTAL_BETAS": "1",
        "CLAUDE_CODE_EXTRA_BODY": '{"top_k": 3}',
        "DISABLE_PROMPT_CACHING_SONNET": "1",
        "ENABLE_PROMPT_CACHING_1H": "1",
        "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "9000",
    }
    settings = build_settings_from_env(env)
    assert settings.models == ModelSettings(
        default_opus="o", default_sonnet="s", default_haiku="h", small_fast="f", main_model="opus",
        disable_legacy_remap=True, disable_1m=True,
    )
    assert settings.extra_betas == ("a-1", "b-2")
    assert settings.disable_experimental_betas and settings.disable_prompt_caching_sonnet
    assert not settings.disable_prompt_caching and settings.prompt_caching_1h
    assert settings.extra_body == {"top_k": 3} and settings.max_output_tokens == 9000


@pytest.mark.parametrize("raw", ["[1, 2]", "not json", '"text"', "3"])
def test_extra_body_must_be_a_json_object(raw: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="switchboard.config"):
        assert build_settings_from_env({"CLAUDE_CODE_EXTRA_BODY": raw}).extra_body == {}
    assert "CLAUDE_CODE_EXTRA_BODY ignored" in caplog.text


def test_config_carries_the_settings_for_its_provider() -> None:
    config = config_from_env({"CLAUDE_CODE_USE_VERTEX": "1", "ANTHROPIC_BETAS": "x-1"})
    assert config.build.provider == config.provider == "vertex"
    assert config.build.extra_betas == ("x-1",)


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, True),
        ({"ANTHROPIC_BASE_URL": "https://api.anthropic.com"}, True),
        ({"ANTHROPIC_BASE_URL": "https://proxy.example"}, False),
        ({"ANTHROPIC_BASE_URL": "https://proxy.example", "ENABLE_TOOL_SEARCH": "true"}, True),
        ({"ENABLE_TOOL_SEARCH": "auto:100"}, False),
        ({"ENABLE_TOOL_SEARCH": "false"}, False),
    ],
)
def test_tool_search_switch(env: dict[str, str], on: bool) -> None:
    assert build_settings_from_env(env).tool_search is on
