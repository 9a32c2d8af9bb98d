"""SigV4 for Bedrock (docs/reference/wire.md 7.3): botocore's signature in the gateway and the emulator's
independent re-derivation both reproduce the documented test vector exactly."""

from __future__ import annotations

import datetime

import pytest

from actors.upstream.credentials import AwsKeys
from actors.upstream.endpoints import sigv4_headers
from emulator import sigv4

URL = "https://bedrock-runtime.us-east-1.amazonaws.com/model/us.anthropic.claude-sonnet-4-5-20250929-v1:0/invoke"
BODY = b'{"anthropic_version":"bedrock-2023-05-31","max_tokens":16,"messages":[{"role":"user","content":"Hi"}]}'
KEYS = AwsKeys(access_key="AKIDEXAMPLE", secret_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
CANONICAL = "\n".join(
    [
        "POST",
        "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke",
        "",
        "accept:application/json",
        "content-type:application/json",
        "host:bedrock-runtime.us-east-1.amazonaws.com",
        "x-amz-date:20260801T120000Z",
        "",
        "accept;content-type;host;x-amz-date",
        "4ce463b5c3d9ec921b15bafe17cf28cc4d188c93bf720c68e1dee3905c9fd0f8",
    ]
)
AUTHORIZATION = (
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260801/us-east-1/bedrock/aws4_request, "
    "SignedHeaders=accept;content-type;host;x-amz-date, "
    "Signature=96a45309f19009125f2d03b275159d1c885b59eebe34ca5385819f393db37ee3"
)


def test_botocore_signs_the_wire_vector(monkeypatch: pytest.MonkeyPatch) -> None:
    import botocore.auth

    frozen = datetime.datetime(2026, 8, 1, 12, 0, 0)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: frozen)
    headers = sigv4_headers(
        KEYS, "us-east-1", "bedrock", "POST", URL,
        {"content-type": "application/json", "accept": "application/json"}, BODY,
    )
    assert headers == {
        "content-type": "application/json",
        "accept": "application/json",
        "x-amz-date": "20260801T120000Z",
        "authorization": AUTHORIZATION,
    }


def test_the_emulator_rederives_the_wire_vector() -> None:
    headers = {
        "accept": "application/json",
        "content-type": "application/json",
        "host": "bedrock-runtime.us-east-1.amazonaws.com",
        "x-amz-date": "20260801T120000Z",
    }
    auth = sigv4.parse_authorization(AUTHORIZATION)
    assert auth is not None
    target = URL.removeprefix("https://bedrock-runtime.us-east-1.amazonaws.com")
    assert sigv4.canonical_request("POST", target, headers, auth.signed_headers, BODY) == CANONICAL
    scope = "20260801/us-east-1/bedrock/aws4_request"
    to_sign = sigv4.string_to_sign("20260801T120000Z", scope, CANONICAL)
    assert to_sign.endswith("c70eaffe940f983ca5e46ff90e57ce841003be637c594edd6b16b66b8280f4ef")
    assert sigv4.verify("POST", target, headers, BODY, KEYS.secret_key, auth)
    assert not sigv4.verify("POST", target, headers, BODY + b" ", KEYS.secret_key, auth)
    assert not sigv4.verify("POST", target, headers, BODY, "wrong-secret", auth)


def test_an_arn_model_id_is_double_encoded_in_the_canonical_uri() -> None:
    target = "/model/arn:aws:bedrock:us-east-1:123456789012:application-inference-profile%2Fjf2sje1c0jnb/invoke"
    canonical = sigv4.canonical_request("POST", target, {}, ("host",), b"")
    assert canonical.split("\n")[1] == (
        "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aapplication-inference-profile%252Fjf2sje1c0jnb/invoke"
    )
