"""Bedrock request shaping (docs/reference/wire.md 7.1, 7.2, 7.8; docs/reference/reference-client.md 6)."""

from __future__ import annotations

import base64

import msgspec

from protocol.providers import bedrock

BODY = {"model": "us.anthropic.claude-sonnet-4-5-20250929-v1:0", "max_tokens": 16, "stream": True,
        "messages": [{"role": "user", "content": "Hi"}]}


def test_streaming_request_moves_model_and_stream_and_betas() -> None:
    headers = (
        ("anthropic-version", "2023-06-01"),
        ("content-type", "application/json"),
        ("anthropic-beta", "interleaved-thinking-2025-05-14,token-efficient-tools-2025-02-19"),
    )
    shaped = bedrock.messages_request(BODY, headers, streaming=True)
    assert shaped.path == "/model/us.anthropic.claude-sonnet-4-5-20250929-v1:0/invoke-with-response-stream"
    assert shaped.decoder == "eventstream"
    assert shaped.headers == (
        ("content-type", "application/json"),
        ("anthropic-beta", "token-efficient-tools-2025-02-19"),
        ("x-amzn-bedrock-accept", "application/json"),
    )
    assert msgspec.json.decode(shaped.body) == {
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "Hi"}],
        "anthropic_beta": ["interleaved-thinking-2025-05-14", "token-efficient-tools-2025-02-19"],
        "anthropic_version": "bedrock-2023-05-31",
    }


def test_non_streaming_and_arn_paths() -> None:
    arn = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/jf2sje1c0jnb"
    shaped = bedrock.messages_request({**BODY, "model": arn}, (), streaming=False)
    assert shaped.path == "/model/arn:aws:bedrock:us-east-1:123456789012:application-inference-profile%2Fjf2sje1c0jnb/invoke"
    assert shaped.decoder == "sse"
    assert b"anthropic_beta" not in shaped.body


def test_count_tokens_wraps_the_invoke_body() -> None:
    body = {"model": "anthropic.claude-haiku-4-5-20251001-v1:0", "messages": [{"role": "user", "content": "Hi"}]}
    shaped = bedrock.count_tokens_request(body, ())
    assert shaped.path == "/model/anthropic.claude-haiku-4-5-20251001-v1:0/count-tokens"
    inner = msgspec.json.decode(shaped.body)["input"]["invokeModel"]["body"]
    assert msgspec.json.decode(base64.b64decode(inner)) == {
        "messages": [{"role": "user", "content": "Hi"}],
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 1,
    }
    assert bedrock.count_tokens_result(b'{"inputTokens":7}') == 7


def test_rest_json_error_message() -> None:
    assert bedrock.error_message(b'{"message":"Too many tokens"}') == "Too many tokens"
    assert bedrock.error_message(b"<html>") is None
