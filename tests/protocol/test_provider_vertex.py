"""Vertex request shaping (docs/reference/wire.md 8; docs/reference/reference-client.md 5.2, 6)."""

from __future__ import annotations

import msgspec

from actors.config.from_env import config_from_env
from protocol.providers import vertex

BODY = {"model": "claude-haiku-4-5@20251001", "max_tokens": 16, "stream": True,
        "messages": [{"role": "user", "content": "Hi"}]}


def test_hosts_by_region() -> None:
    assert vertex.base_url("global") == "https://aiplatform.googleapis.com/v1"
    assert vertex.base_url("us") == "https://aiplatform.us.rep.googleapis.com/v1"
    assert vertex.base_url("eu") == "https://aiplatform.eu.rep.googleapis.com/v1"
    assert vertex.base_url("us-east5") == "https://us-east5-aiplatform.googleapis.com/v1"


def test_region_variables_most_specific_first() -> None:
    config = config_from_env(
        {
            "CLAUDE_CODE_USE_VERTEX": "1",
            "CLOUD_ML_REGION": "global",
            "VERTEX_REGION_CLAUDE_4_0_OPUS": "us-central1",
            "VERTEX_REGION_CLAUDE_4_1_OPUS": "europe-west4",
            "VERTEX_REGION_CLAUDE_HAIKU_4_5": "asia-east1",
            "ANTHROPIC_VERTEX_PROJECT_ID": "p",
        }
    )
    assert config.provider == "vertex" and config.vertex_project == "p" and not config.use_emulator
    overrides = config.vertex_region_overrides
    assert vertex.region_for("claude-opus-4-1@20250805", config.vertex_region, overrides) == "europe-west4"
    assert vertex.region_for("claude-opus-4@20250514", config.vertex_region, overrides) == "us-central1"
    assert vertex.region_for("claude-haiku-4-5@20251001", config.vertex_region, overrides) == "asia-east1"
    assert vertex.region_for("claude-sonnet-4-6", config.vertex_region, overrides) == "global"
    assert config_from_env({"CLAUDE_CODE_USE_VERTEX": "1"}).vertex_region == "us-east5"


def test_streaming_request_keeps_stream_and_betas_in_the_header() -> None:
    headers = (("anthropic-version", "2023-06-01"), ("anthropic-beta", "context-1m-2025-08-07"))
    shaped = vertex.messages_request(BODY, headers, project="p", region="us-east5", streaming=True)
    assert shaped.path == "/projects/p/locations/us-east5/publishers/anthropic/models/claude-haiku-4-5@20251001:streamRawPredict"
    assert shaped.headers == (("anthropic-beta", "context-1m-2025-08-07"),)
    assert shaped.decoder == "sse"
    assert msgspec.json.decode(shaped.body) == {
        "max_tokens": 16, "stream": True, "messages": [{"role": "user", "content": "Hi"}],
        "anthropic_version": "vertex-2023-10-16",
    }
    plain = vertex.messages_request({**BODY, "stream": False}, (), project="p", region="global", streaming=False)
    assert plain.path.endswith("/models/claude-haiku-4-5@20251001:rawPredict")


def test_count_tokens_keeps_model_and_only_its_betas() -> None:
    headers = (("anthropic-beta", "claude-code-20250219,context-1m-2025-08-07"),)
    shaped = vertex.count_tokens_request(BODY, headers, project="p", region="us-east5")
    assert shaped.path == "/projects/p/locations/us-east5/publishers/anthropic/models/count-tokens:rawPredict"
    assert shaped.headers == (("anthropic-beta", "claude-code-20250219"),)
    assert msgspec.json.decode(shaped.body)["model"] == "claude-haiku-4-5@20251001"


def test_google_rpc_errors() -> None:
    body = b'{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED"}}'
    assert vertex.rpc_error(body) == ("rate_limit_error", "Quota exceeded")
    assert vertex.rpc_error(b"[" + body + b"]") == ("rate_limit_error", "Quota exceeded")
    assert vertex.rpc_error(b'{"type":"error","error":{"type":"overloaded_error","message":"x"}}') is None
    assert vertex.rpc_error(b"<html>") is None
