"""The bootstrap API's schema, headers and model options (docs/reference/reference-client.md 4)."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.betas import OAUTH
from protocol.bootstrap import (
    BootstrapAnswer,
    bootstrap_headers,
    decode_bootstrap,
    encode_bootstrap,
    merge_model_options,
)
from protocol.errors import RemoteProtocolError
from protocol.frames import ModelOption
from protocol.models.options import DEFAULT_MODEL_OPTIONS


def test_a_valid_answer_maps_its_options_and_ignores_unknown_fields() -> None:
    answer = decode_bootstrap(
        b'{"client_data": {"coral_reef_sonnet": "true"}, "extra": 1, "additional_model_options":'
        b' [{"model": "claude-x", "name": "X", "description": "an x", "more": true}]}'
    )
    assert answer.client_data == {"coral_reef_sonnet": "true"}
    assert answer.model_options() == (ModelOption(value="claude-x", label="X", description="an x"),)
    assert decode_bootstrap(encode_bootstrap(answer)) == answer


@pytest.mark.parametrize("body", [b"{}", b'{"client_data": null, "additional_model_options": null}'])
def test_every_field_is_optional_and_nullable(body: bytes) -> None:
    answer = decode_bootstrap(body)
    assert answer.client_data is None and answer.model_options() == ()


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'{"client_data": []}',
        b'{"additional_model_options": {}}',
        b'{"additional_model_options": [{"model": "m", "name": "n"}]}',
        b'{"additional_model_options": [{"model": "m", "name": 42, "description": ""}]}',
    ],
)
def test_anything_else_is_invalid(body: bytes) -> None:
    with pytest.raises(RemoteProtocolError, match="invalid bootstrap answer"):
        decode_bootstrap(body)


@given(st.binary(max_size=200))
def test_garbage_only_ever_raises_remote_protocol_error(body: bytes) -> None:
    try:
        decode_bootstrap(body)
    except RemoteProtocolError:
        pass


def test_oauth_is_preferred_over_the_api_key_and_no_credential_means_no_request() -> None:
    both = dict(bootstrap_headers(api_key="sk-key", auth_token="oauth-tok", user_agent="ua/1") or ())
    assert both["authorization"] == "Bearer oauth-tok" and both["anthropic-beta"] == OAUTH
    assert "x-api-key" not in both and both["user-agent"] == "ua/1"
    key = dict(bootstrap_headers(api_key="sk-key", auth_token=None, user_agent="ua/1") or ())
    assert key["x-api-key"] == "sk-key" and "authorization" not in key and "anthropic-beta" not in key
    assert bootstrap_headers(api_key=None, auth_token="", user_agent="ua/1") is None


def test_only_new_values_join_the_defaults_in_order() -> None:
    learnt = (
        ModelOption(value=DEFAULT_MODEL_OPTIONS[1].value, label="Other label"),
        ModelOption(value="claude-new", label="New"),
        ModelOption(value="claude-new", label="Twice"),
    )
    merged = merge_model_options(DEFAULT_MODEL_OPTIONS, learnt)
    assert merged == (*DEFAULT_MODEL_OPTIONS, ModelOption(value="claude-new", label="New"))


def test_the_cache_format_is_the_answer_itself() -> None:
    answer = BootstrapAnswer(client_data={"k": [1, 2]})
    assert msgspec.json.decode(encode_bootstrap(answer)) == {"client_data": {"k": [1, 2]}}
