"""The sign-in rules (protocol/oauth.py): user codes, the device grant's polls, forms, tokens."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.oauth import (
    DEVICE_AUTHORIZATION_PATH,
    GRANT_DEVICE,
    GRANT_REFRESH,
    MAX_FORM_BYTES,
    POLL_INTERVAL,
    SLOW_DOWN_STEP,
    TOKEN_PATH,
    USER_CODE_ALPHABET,
    Approved,
    DeviceGrant,
    FormError,
    access_token_text,
    decide,
    metadata,
    normalize_user_code,
    oauth_error,
    parse_form,
    poll,
    user_code,
)


def test_metadata_names_same_origin_endpoints_and_no_authorization_endpoint() -> None:
    doc = metadata("https://gw.example.com")
    assert doc["device_authorization_endpoint"] == "https://gw.example.com" + DEVICE_AUTHORIZATION_PATH
    assert doc["token_endpoint"] == "https://gw.example.com" + TOKEN_PATH
    assert doc["grant_types_supported"] == [GRANT_DEVICE, GRANT_REFRESH]
    assert "authorization_endpoint" not in doc


def test_user_code_alphabet_is_base_20_without_vowels() -> None:
    assert len(set(USER_CODE_ALPHABET)) == 20
    assert not set("AEIOUY") & set(USER_CODE_ALPHABET)


@given(st.lists(st.integers(0, 19), min_size=8, max_size=8))
def test_a_user_code_survives_the_ways_a_user_types_it(digits: list[int]) -> None:
    code = user_code(digits)
    assert len(code) == 9 and code[4] == "-"
    for typed in (code, code.lower(), code.replace("-", ""), f" {code[:4]} {code[5:]} "):
        assert normalize_user_code(typed) == code


@given(st.text(max_size=80))
def test_normalize_user_code_never_accepts_what_cannot_be_a_code(typed: str) -> None:
    code = normalize_user_code(typed)
    assert code is None or (len(code) == 9 and all(c in USER_CODE_ALPHABET for c in code.replace("-", "")))


def test_user_code_refuses_indices_out_of_range() -> None:
    with pytest.raises(ValueError, match="8 indices"):
        user_code([20] * 8)


def grant() -> DeviceGrant:
    return DeviceGrant(user_code="BCDF-GHJK", expires_at=600.0)


def test_a_pending_grant_answers_authorization_pending_then_slow_down_when_polled_too_soon() -> None:
    g, answer = poll(grant(), 10.0)
    assert answer == "authorization_pending"
    g, answer = poll(g, 10.0 + POLL_INTERVAL - 1)
    assert answer == "slow_down" and g.interval == POLL_INTERVAL + SLOW_DOWN_STEP
    g, answer = poll(g, 10.0 + POLL_INTERVAL - 1 + g.interval)
    assert answer == "authorization_pending"


def test_an_approved_grant_issues_once_then_is_used_up() -> None:
    approved = decide(grant(), 5.0, "ada")
    assert approved is not None
    g, answer = poll(approved, 6.0)
    assert answer == Approved(user="ada")
    assert poll(g, 20.0)[1] == "invalid_grant"


def test_a_denied_grant_answers_access_denied_and_an_old_one_expired_token() -> None:
    denied = decide(grant(), 5.0, None)
    assert denied is not None and poll(denied, 6.0)[1] == "access_denied"
    assert poll(grant(), 600.0)[1] == "expired_token"


def test_a_grant_is_decided_once_and_never_after_it_expired() -> None:
    approved = decide(grant(), 5.0, "ada")
    assert approved is not None
    assert decide(approved, 6.0, "eve") is None
    assert decide(grant(), 600.0, "ada") is None


def test_parse_form_reads_a_form_and_refuses_repeats_and_oversize() -> None:
    assert parse_form(b"grant_type=refresh_token&refresh_token=a%2Bb&extra=") == {
        "grant_type": "refresh_token",
        "refresh_token": "a+b",
        "extra": "",
    }
    with pytest.raises(FormError):
        parse_form(b"a=1&a=2")
    with pytest.raises(FormError):
        parse_form(b"a=" + b"x" * MAX_FORM_BYTES)


@given(st.binary(max_size=2048))
def test_parse_form_on_hostile_bytes_answers_a_dict_or_form_error(body: bytes) -> None:
    try:
        form = parse_form(body)
    except FormError:
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in form.items())


def test_oauth_errors_are_400_but_invalid_grant_is_401() -> None:
    status, body = oauth_error("authorization_pending", "wait")
    assert status == 400 and json.loads(body) == {"error": "authorization_pending", "error_description": "wait"}
    assert oauth_error("invalid_grant", "no")[0] == 401


def test_the_access_token_is_a_jwt_whose_payload_the_client_can_read() -> None:
    token = access_token_text(user="ada", issued_at=100, expires_at=3700, jti=b"\x01" * 32)
    header, payload, signature = token.split(".")
    assert json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["alg"] == "none"
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["sub"] == "ada" and claims["exp"] == 3700 and signature == ""
    with pytest.raises(ValueError, match="256 random bits"):
        access_token_text(user="ada", issued_at=0, expires_at=1, jti=b"short")
