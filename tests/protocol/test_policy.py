"""The organisation policy's rules (protocol/policy.py): parsing, allow-lists, settings merge,
the checksum Claude Code computes, and If-None-Match."""

from __future__ import annotations

import hashlib
import json

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.budget import Limits
from protocol.errors import ConfigError
from protocol.identity import Principal
from protocol.policy import (
    MAX_POLICY_BYTES,
    allowed_patterns,
    checksum,
    filter_models,
    limit_subjects,
    merge,
    model_allowed,
    not_modified,
    parse_policy,
    refusal,
    settings_body,
    settings_for,
    subject_limits,
)

POLICY = b"""
[default]
settings = { env = { CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY = "1", A = "default" } }

[groups.eng]
models = ["claude-sonnet-4-*", "claude-haiku-4-5"]
settings = { env = { A = "eng" }, permissions = { deny = ["Bash(rm:*)"] } }

[groups.ops]
models = ["claude-opus-4-*"]

[users.ada]
settings = { permissions = { deny = ["WebFetch"] } }
"""

ADA = Principal(user="ada", groups=("eng",))
BOB = Principal(user="bob", groups=("eng", "ops"))
EVE = Principal(user="eve", groups=("sales",))


def test_the_allow_list_is_the_union_of_the_applying_entries_lists() -> None:
    policy = parse_policy(POLICY)
    assert allowed_patterns(policy, ADA) == ("claude-sonnet-4-*", "claude-haiku-4-5")
    assert allowed_patterns(policy, BOB) == ("claude-sonnet-4-*", "claude-haiku-4-5", "claude-opus-4-*")


def test_no_list_among_the_applying_entries_allows_every_model_and_no_user_has_no_policy() -> None:
    policy = parse_policy(POLICY)
    assert allowed_patterns(policy, EVE) is None
    assert allowed_patterns(policy, None) is None
    assert settings_for(policy, None) is None


def test_an_empty_list_allows_no_model() -> None:
    policy = parse_policy(b"[users.ada]\nmodels = []\n")
    assert refusal(allowed_patterns(policy, ADA), "claude-sonnet-4-6", "ada") is not None


def test_patterns_match_whole_ids_with_star_as_any_run_and_nothing_else_special() -> None:
    assert model_allowed(("claude-sonnet-4-*",), "claude-sonnet-4-6")
    assert not model_allowed(("claude-sonnet-4-*",), "claude-opus-4-1")
    assert not model_allowed(("claude-haiku-4-5",), "claude-haiku-4-5-20251001")
    assert not model_allowed(("claude-?-4",), "claude-x-4")
    assert model_allowed(("claude-[x]",), "claude-[x]")
    assert model_allowed(None, "anything")


def test_the_refusal_names_the_model_the_user_and_what_is_allowed() -> None:
    message = refusal(("claude-sonnet-4-*",), "claude-opus-4-1", "ada")
    assert message is not None
    assert "claude-opus-4-1" in message and "ada" in message and "claude-sonnet-4-*" in message
    assert refusal(("claude-sonnet-4-*",), "claude-sonnet-4-6", "ada") is None
    assert refusal(("claude-sonnet-4-*",), 42, "ada") is None  # the API's own check refuses it


def test_models_are_filtered_by_id() -> None:
    entries = [{"id": "claude-sonnet-4-6"}, {"id": "claude-opus-4-1"}]
    assert filter_models(entries, ("claude-sonnet-*",)) == ({"id": "claude-sonnet-4-6"},)
    assert filter_models(entries, None) == tuple(entries)


def test_settings_merge_default_then_groups_then_user_tables_key_by_key() -> None:
    settings = settings_for(parse_policy(POLICY), ADA)
    assert settings == {
        "env": {"CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY": "1", "A": "eng"},
        "permissions": {"deny": ["WebFetch"]},
    }


def test_lists_are_replaced_whole_and_scalars_by_the_later_entry() -> None:
    assert merge({"a": [1, 2], "b": {"c": 1, "d": 2}}, {"a": [3], "b": {"c": 5}}) == {
        "a": [3],
        "b": {"c": 5, "d": 2},
    }


def test_no_entry_with_settings_is_no_policy_and_an_empty_table_an_empty_one() -> None:
    assert settings_for(parse_policy(b"[groups.eng]\nmodels = ['x']\n"), ADA) is None
    assert settings_for(parse_policy(b"[groups.eng]\nsettings = {}\n"), ADA) == {}


def test_the_body_wraps_the_settings_with_the_checksum_claude_code_computes() -> None:
    settings = {"b": {"z": 1, "a": "é"}, "a": True}
    body, etag = settings_body(settings)
    answer = json.loads(body)
    # The client's own computation: keys sorted at every level, no whitespace.
    expected = "sha256:" + hashlib.sha256(
        json.dumps(settings, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    ).hexdigest()
    assert answer["checksum"] == checksum(settings) == expected
    assert answer["settings"] == settings
    assert etag == f'"{expected}"'
    assert len(answer["uuid"]) == 36


def test_if_none_match_with_the_etag_matches_and_star_does_not() -> None:
    _, etag = settings_body({"a": 1})
    assert not_modified(etag, etag)
    assert not_modified(f'W/{etag}, "other"', etag)
    assert not not_modified('"other"', etag)
    assert not not_modified("*", etag)
    assert not not_modified(None, etag)


@pytest.mark.parametrize(
    "text",
    [
        b"not toml [",
        b"[groups]\neng = 1\n",
        b"[groups.eng]\nmodels = 'x'\n",
        b"[groups.eng]\nmodels = [1]\n",
        b"[groups.eng]\nsettings = 1\n",
        b"[groups.eng]\nunknown = 1\n",
        b"[other]\n",
    ],
)
def test_a_malformed_policy_is_refused_with_a_config_error(text: bytes) -> None:
    with pytest.raises(ConfigError):
        parse_policy(text)


def test_an_oversized_or_deeply_nested_policy_is_refused() -> None:
    with pytest.raises(ConfigError):
        parse_policy(b"#" * (MAX_POLICY_BYTES + 1))
    deep = "[groups.eng.settings]\na = " + "[" * 40 + "]" * 40 + "\n"
    with pytest.raises(ConfigError):
        parse_policy(deep.encode())


@given(st.binary(max_size=512))
def test_any_bytes_parse_or_raise_config_error(raw: bytes) -> None:
    try:
        parse_policy(raw)
    except ConfigError:
        pass


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=12,
)


@given(st.dictionaries(st.text(max_size=5), _json, max_size=4))
def test_the_checksum_is_the_clients_for_any_json_settings(settings: dict[str, object]) -> None:
    canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert checksum(settings) == "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
    body, _ = settings_body(settings)
    assert msgspec.json.decode(body)["settings"] == settings


def test_limits_are_parsed_and_a_principal_counts_against_its_user_and_groups() -> None:
    policy = parse_policy(
        b'[groups.eng]\nbudget_usd = "12.5"\nperiod = "month"\n[groups.ops]\nrpm = 3\n'
        b"[users.ada]\nmax_concurrent = 2\nbudget_usd = 5\n[groups.sales]\nmodels = []\n"
    )
    assert subject_limits(policy) == {
        "group:eng": Limits(budget_pico=12_500_000_000_000, period="month"),
        "group:ops": Limits(rpm=3),
        "user:ada": Limits(budget_pico=5_000_000_000_000, max_concurrent=2),
    }
    assert limit_subjects(policy, Principal(user="ada", groups=("eng", "sales", "eng"))) == ("user:ada", "group:eng")
    assert limit_subjects(policy, Principal(user="bob", groups=("ops",))) == ("group:ops",)
    assert limit_subjects(policy, None) == ()


@pytest.mark.parametrize(
    "text",
    [
        b'[default]\nrpm = 1\n',
        b'[groups.eng]\nperiod = "week"\n',
        b'[groups.eng]\nbudget_usd = "-1"\n',
        b"[groups.eng]\nrpm = -1\n",
        b"[groups.eng]\nrpm = true\n",
    ],
)
def test_malformed_limits_are_refused(text: bytes) -> None:
    with pytest.raises(ConfigError):
        parse_policy(text)
