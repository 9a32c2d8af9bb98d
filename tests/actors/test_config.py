"""Config: the one reader of the environment."""

from __future__ import annotations

import logging

import pytest

from actors.config.env import parse_custom_headers
from actors.config.from_env import config_from_env
from actors.config.settings import Config, Secret
from actors.observe.log import RedactingFilter
from protocol.errors import ConfigError


def test_no_credentials_and_no_base_url_means_the_emulator() -> None:
    config = config_from_env({})
    assert config.use_emulator and config.base_url == "https://api.anthropic.com"
    assert config.api_timeout == 600.0 and config.max_retries == 10


def test_first_party_variables_are_read() -> None:
    config = config_from_env(
        {
            "ANTHROPIC_API_KEY": "sk-ant-abc",
            "ANTHROPIC_AUTH_TOKEN": "oauth-tok",
            "ANTHROPIC_BASE_URL": "http://127.0.0.1:9/",
            "ANTHROPIC_CUSTOM_HEADERS": "X-One: 1\r\nbroken line\nX-Two:  a: b ",
            "API_TIMEOUT_MS": "2500",
            "CLAUDE_CODE_MAX_RETRIES": "3",
            "ANTHROPIC_LOG": "debug",
        }
    )
    assert not config.use_emulator and config.base_url == "http://127.0.0.1:9"
    assert config.api_key == Secret("sk-ant-abc") and config.auth_token == Secret("oauth-tok")
    assert config.custom_headers == (("X-One", "1"), ("X-Two", "a: b"))
    assert config.api_timeout == 2.5 and config.max_retries == 3 and config.debug


def test_a_base_url_alone_is_not_the_emulator() -> None:
    assert not config_from_env({"ANTHROPIC_BASE_URL": "http://127.0.0.1:9"}).use_emulator


@pytest.mark.parametrize(("name", "value"), [("API_TIMEOUT_MS", "soon"), ("CLAUDE_CODE_MAX_RETRIES", "-1"), ("API_TIMEOUT_MS", "0")])
def test_malformed_numbers_are_config_errors(name: str, value: str) -> None:
    with pytest.raises(ConfigError):
        config_from_env({name: value})


def test_non_loopback_without_tokens_is_refused_unless_allowed() -> None:
    with pytest.raises(ConfigError):
        config_from_env({}, host="0.0.0.0")
    assert config_from_env({}, host="0.0.0.0", allow_no_auth=True).host == "0.0.0.0"
    assert config_from_env({"SWITCHBOARD_ACCESS_TOKENS": "a, b"}, host="0.0.0.0").access_tokens == (
        Secret("a"),
        Secret("b"),
    )
    assert config_from_env({}, host="::1").host == "::1"


def test_secrets_never_show_in_repr() -> None:
    config = Config(api_key=Secret("sk-ant-very-secret"), access_tokens=(Secret("tok-123456"),))
    assert "very-secret" not in repr(config) and "tok-123456" not in str(config)
    assert set(config.secrets()) == {"sk-ant-very-secret", "tok-123456"}


def test_custom_headers_split_on_the_first_colon() -> None:
    assert parse_custom_headers("A:b:c\n:nameless\nno colon\n") == (("A", "b:c"),)


def test_redaction_of_registered_secrets_and_known_shapes() -> None:
    redactor = RedactingFilter(["my-registered-token"])
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "key %s and %s", ("my-registered-token", "sk-ant-api03-XYZ_abc"), None)
    assert redactor.filter(record)
    assert record.getMessage() == "key *** and ***"
    assert redactor.redact("Authorization: Bearer abc.def-123") == "Authorization: Bearer ***"
    assert "s3cr3t" not in redactor.redact("{'x-api-key': 's3cr3t'}")


def test_admission_bound_and_wait_from_the_environment_or_the_flags() -> None:
    default = config_from_env({})
    assert (default.max_queries, default.admission_wait) == (256, 10.0)
    env = {"SWITCHBOARD_MAX_QUERIES": " 64 ", "SWITCHBOARD_ADMISSION_WAIT_S": "2.5"}
    assert (config_from_env(env).max_queries, config_from_env(env).admission_wait) == (64, 2.5)
    # The flags win; 0 is no bound (and, for the wait, a 529 at once when every slot is taken).
    flags = config_from_env(env, max_queries=0, admission_wait=0.0)
    assert (flags.max_queries, flags.admission_wait) == (0, 0.0)
    for name, bad in (
        ("SWITCHBOARD_MAX_QUERIES", "many"),
        ("SWITCHBOARD_MAX_QUERIES", "-1"),
        ("SWITCHBOARD_ADMISSION_WAIT_S", "soon"),
        ("SWITCHBOARD_ADMISSION_WAIT_S", "-1"),
        ("SWITCHBOARD_ADMISSION_WAIT_S", "inf"),
        ("SWITCHBOARD_ADMISSION_WAIT_S", "nan"),
    ):
        with pytest.raises(ConfigError, match=r"MAX_QUERIES|queries in flight|ADMISSION_WAIT|admission wait"):
            config_from_env({name: bad})


def test_shutdown_grace_from_the_environment_or_the_flag() -> None:
    assert config_from_env({}).shutdown_grace == 30.0
    assert config_from_env({"SWITCHBOARD_SHUTDOWN_GRACE_S": " 12.5 "}).shutdown_grace == 12.5
    # --shutdown-grace wins over the environment; 0 cuts the queries off at once.
    assert config_from_env({"SWITCHBOARD_SHUTDOWN_GRACE_S": "12"}, shutdown_grace=0.0).shutdown_grace == 0.0
    for bad in ("soon", "-1", "nan"):
        with pytest.raises(ConfigError, match=r"shutdown grace|SHUTDOWN_GRACE"):
            config_from_env({"SWITCHBOARD_SHUTDOWN_GRACE_S": bad})


def test_serve_takes_the_admission_flags() -> None:
    from actors.cli.commands import _parser

    args = _parser().parse_args(["serve", "--max-queries", "8", "--admission-wait", "2.5"])
    assert (args.max_queries, args.admission_wait) == (8, 2.5)
    unset = _parser().parse_args(["serve"])
    assert (unset.max_queries, unset.admission_wait) == (None, None)  # the environment decides
