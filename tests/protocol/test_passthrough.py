"""The HTTP door's pure rules: transparent bodies, the retry mode, the client's timeout, the
gate's retry-after, the headers a client gets and the API's version check."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from protocol.http_api import client_headers, version_error
from protocol.models.aliases import BEDROCK, FIRST_PARTY, VERTEX, ModelSettings
from protocol.passthrough import (
    client_retries,
    client_timeout,
    gate_refusal,
    gate_retry_after,
    passthrough_body,
    passthrough_model,
)

MODELS = ModelSettings()


def test_only_a_first_party_id_on_a_cloud_provider_changes() -> None:
    assert passthrough_model("claude-sonnet-4-6", MODELS, FIRST_PARTY) == "claude-sonnet-4-6"
    assert passthrough_model("claude-sonnet-4-6", MODELS, BEDROCK) == "us.anthropic.claude-sonnet-4-6"
    assert passthrough_model("claude-sonnet-4-5-20250929", MODELS, VERTEX) == "claude-sonnet-4-5@20250929"
    # Aliases, legacy ids and custom names go as sent: the client chose them.
    for model in ("sonnet", "claude-opus-4-20250514", "my-deployment"):
        assert passthrough_model(model, MODELS, FIRST_PARTY) == model


def test_the_clients_bytes_are_kept_only_when_nothing_changes() -> None:
    raw = b'{"model": "m", "stream": true}'
    request = {"model": "m", "stream": True}
    assert passthrough_body(request, raw, model="m") == (request, raw)
    assert passthrough_body(request, raw, model="other") == ({"model": "other", "stream": True}, None)
    plain = {"model": "m", "max_tokens": 10}
    body, kept = passthrough_body(plain, b"{}", model="m", max_tokens=5)
    assert body == {"model": "m", "max_tokens": 5, "stream": True} and kept is None
    assert plain == {"model": "m", "max_tokens": 10}  # the client's request is not touched


def test_who_retries() -> None:
    stainless = {"x-stainless-retry-count": "0"}
    assert client_retries(stainless, "auto") and not client_retries({}, "auto")
    assert not client_retries({**stainless, "x-switchboard-retries": "gateway"}, "auto")
    assert client_retries({"x-switchboard-retries": "Client"}, "gateway")
    assert client_retries({}, "client") and not client_retries(stainless, "gateway")
    assert client_retries({**stainless, "x-switchboard-retries": "nonsense"}, "auto")


@given(st.text(max_size=20))
def test_a_client_timeout_is_a_positive_number_of_at_most_a_day_or_none(raw: str) -> None:
    timeout = client_timeout({"x-stainless-timeout": raw})
    assert timeout is None or 0 < timeout <= 86_400
    assert client_timeout({"x-stainless-timeout": "600"}) == 600.0


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_a_gate_retry_after_never_brings_a_client_back_early(wait: float) -> None:
    seconds, millis = gate_retry_after(wait)
    assert int(seconds) >= max(wait, 1) and int(millis) >= max(wait * 1000, 1)
    error, headers = gate_refusal("m", wait)
    assert error.status == 529 and error.type == "overloaded_error"
    assert dict(headers)["retry-after"] == seconds and dict(headers)["x-should-retry"] == "true"
    assert "retry-after" not in dict(gate_refusal("m", None)[1])


def test_what_upstream_headers_a_client_gets() -> None:
    upstream = [
        ("Request-Id", "req_1"),
        ("anthropic-ratelimit-requests-remaining", "9"),
        ("retry-after", "3"),
        ("x-should-retry", "true"),
        ("Transfer-Encoding", "chunked"),
        ("content-length", "10"),
        ("content-type", "text/event-stream"),
        ("connection", "keep-alive"),
        ("set-cookie", "a=b"),
        ("alt-svc", 'h3=":443"'),
        ("x-switchboard-cost-usd", "0"),
        ("Location", "http://elsewhere.example/v1/messages"),
        ("refresh", "0; url=http://elsewhere.example"),
    ]
    assert client_headers(upstream) == (
        ("request-id", "req_1"),
        ("anthropic-ratelimit-requests-remaining", "9"),
        ("retry-after", "3"),
        ("x-should-retry", "true"),
    )


def test_the_apis_version_check() -> None:
    assert version_error("2023-06-01") is None and version_error("2026-10-21") is None
    assert version_error(None) == "anthropic-version: header is required"
    assert version_error("") == "anthropic-version: header is required"
    assert version_error("2023-06-01, 2023-06-01") == 'anthropic-version: "2023-06-01, 2023-06-01" is not a valid version'
