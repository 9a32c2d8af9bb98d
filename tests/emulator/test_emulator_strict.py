"""The emulator is as strict as the API where a client's bug would otherwise hide: the
``anthropic-version`` header (or the cloud body's ``anthropic_version``), the model, every
top-level field and its type, the minimum cacheable prompt length; and its request log shows
what a client sent, credentials masked."""

from __future__ import annotations

import string
from typing import Any

import httpx
import pytest
import trio
from emulator_testkit import API_HEADERS, CACHEABLE_TEXT, body, prompt
from hypothesis import given
from hypothesis import strategies as st

from emulator import Emulator, router
from emulator.errors import ErrorResponse
from emulator.models import CATALOG, bedrock_base, cache_minimum, vertex_base
from emulator.tokens import PromptCache
from emulator.validation import COUNT_TOKENS_FIELDS, MESSAGES_FIELDS, check_body


def _error(response: httpx.Response) -> tuple[int, str, str]:
    envelope = response.json()
    return response.status_code, envelope["error"]["type"], envelope["error"]["message"]


# --- anthropic-version -----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
async def test_anthropic_version_is_required(client: httpx.AsyncClient, path: str) -> None:
    request = body() if path == "/v1/messages" else prompt()
    headers = {"x-api-key": "test-key"}
    async with httpx.AsyncClient(base_url=str(client.base_url), headers=headers) as bare:
        missing = await bare.post(path, json=request)
        unsupported = await bare.post(path, json=request, headers={"anthropic-version": "2024-10-22"})
        doubled = await bare.post(path, json=request, headers={"anthropic-version": "2023-06-01, 2023-06-01"})
    assert _error(missing) == (400, "invalid_request_error", "anthropic-version: header is required")
    assert _error(unsupported) == (
        400, "invalid_request_error", 'anthropic-version: "2024-10-22" is not a valid version'
    )  # fmt: skip
    assert _error(doubled)[:2] == (400, "invalid_request_error")
    for version in ("2023-06-01", "2026-10-21"):
        accepted = await client.post(path, json=request, headers={"anthropic-version": version})
        assert accepted.status_code == 200


async def test_foundry_needs_anthropic_version_too(client: httpx.AsyncClient) -> None:
    foundry = {"x-api-key": "k", "api-key": "k"}
    async with httpx.AsyncClient(base_url=str(client.base_url), headers=foundry) as bare:
        missing = await bare.post("/anthropic/v1/messages", json=body())
        counted = await bare.post("/anthropic/v1/messages/count_tokens", json=prompt())
        ok = await bare.post("/anthropic/v1/messages", json=body(), headers={"anthropic-version": "2023-06-01"})
    assert _error(missing) == (400, "invalid_request_error", "anthropic-version: header is required")
    assert _error(counted)[0] == 400
    assert ok.status_code == 200


BEDROCK = "/model/us.anthropic.claude-sonnet-4-5-20250929-v1:0/invoke"
BEDROCK_BODY: dict[str, Any] = {
    "anthropic_version": "bedrock-2023-05-31", "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]
}  # fmt: skip


async def test_bedrock_body_needs_its_anthropic_version(client: httpx.AsyncClient) -> None:
    missing = await client.post(BEDROCK, json={k: v for k, v in BEDROCK_BODY.items() if k != "anthropic_version"})
    assert missing.status_code == 400
    assert missing.headers["x-amzn-errortype"].startswith("ValidationException:")
    assert "required key [anthropic_version] not found" in missing.json()["message"]
    wrong = await client.post(BEDROCK, json={**BEDROCK_BODY, "anthropic_version": "2023-06-01"})
    assert wrong.status_code == 400 and "anthropic_version" in wrong.json()["message"]
    extra = await client.post(BEDROCK, json={**BEDROCK_BODY, "colour": "blue"})
    assert extra.json()["message"] == (
        "Malformed input request: #: extraneous key [colour] is not permitted, please reformat your input and try again."
    )
    assert (await client.post(BEDROCK, json=BEDROCK_BODY)).status_code == 200


VERTEX = "/v1/projects/p/locations/us-east5/publishers/anthropic/models/{model}:rawPredict"


async def test_vertex_body_needs_its_anthropic_version(client: httpx.AsyncClient) -> None:
    path = VERTEX.format(model="claude-sonnet-4-5@20250929")
    request = {"max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]}
    missing = await client.post(path, json=request)
    assert missing.status_code == 400
    assert missing.json()["error"]["message"] == "anthropic_version: Field required"
    wrong = await client.post(path, json={**request, "anthropic_version": "bedrock-2023-05-31"})
    assert wrong.json()["error"]["message"] == "anthropic_version: Input should be 'vertex-2023-10-16'"
    assert (await client.post(path, json={**request, "anthropic_version": "vertex-2023-10-16"})).status_code == 200


# --- models ----------------------------------------------------------------------------

REQUIRED_MODELS = (
    "claude-opus-4-8", "claude-sonnet-5", "claude-haiku-4-5-20251001", "claude-opus-4-7",
    "claude-fable-5", "claude-mythos-5", "claude-opus-4-6", "claude-sonnet-4-6",
    "claude-sonnet-4-5", "claude-sonnet-4-5-20250929", "claude-opus-4-5", "claude-opus-4-5-20251101",
    "claude-haiku-4-5", "claude-opus-4-1-20250805",
)  # fmt: skip


@pytest.mark.parametrize("model", REQUIRED_MODELS)
async def test_catalog_models_are_served(client: httpx.AsyncClient, model: str) -> None:
    response = await client.post("/v1/messages", json={**body(), "model": model})
    assert response.status_code == 200 and response.json()["model"] == model


@pytest.mark.parametrize("model", ["claude-opus-4-6[1m]", "claude-sonnet-9", "gpt-4o", "claude-sonnet-4-20250514"])
@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
async def test_unknown_model_is_404(client: httpx.AsyncClient, emu: Emulator, model: str, path: str) -> None:
    # [1m] is a client-side suffix, never a wire id; Sonnet 4 is retired.
    emu.script("529")
    request = {**(body() if path == "/v1/messages" else prompt()), "model": model}
    assert _error(await client.post(path, json=request)) == (404, "not_found_error", f"model: {model}")
    # A refused request takes no queued fault.
    assert emu.pending_faults != ()


async def test_extra_models_can_be_added(nursery: trio.Nursery) -> None:
    emulator = Emulator(models=["claude-test-1"])
    url = await nursery.start(emulator.run)
    async with httpx.AsyncClient(base_url=url, headers=API_HEADERS) as http:
        assert (await http.post("/v1/messages", json={**body(), "model": "claude-test-1"})).status_code == 200
        assert (await http.post("/v1/messages", json={**body(), "model": "claude-test-2"})).status_code == 404


async def test_cloud_model_ids(client: httpx.AsyncClient) -> None:
    unknown = await client.post("/model/us.anthropic.claude-sonnet-9-v1:0/invoke", json=BEDROCK_BODY)
    assert unknown.status_code == 400
    assert unknown.json() == {"message": "The provided model identifier is invalid."}
    arn = "/model/arn:aws:bedrock:us-east-1:123456789012:application-inference-profile%2Fabc/invoke"
    assert (await client.post(arn, json=BEDROCK_BODY)).status_code == 200
    vertex = {"anthropic_version": "vertex-2023-10-16", **{k: v for k, v in BEDROCK_BODY.items() if k != "anthropic_version"}}
    missing = await client.post(VERTEX.format(model="claude-sonnet-9@20990101"), json=vertex)
    assert missing.status_code == 404 and missing.json()["error"]["status"] == "NOT_FOUND"
    assert (await client.post(VERTEX.format(model="claude-opus-4-6"), json=vertex)).status_code == 200


def test_cloud_ids_map_to_first_party_ids() -> None:
    assert bedrock_base("us.anthropic.claude-opus-4-6-v1") == "claude-opus-4-6"
    assert bedrock_base("global.anthropic.claude-haiku-4-5-20251001-v1:0") == "claude-haiku-4-5-20251001"
    assert bedrock_base("anthropic.claude-sonnet-4-6") == "claude-sonnet-4-6"
    assert bedrock_base("arn:aws:bedrock:us-east-1:1:inference-profile/x") is None
    assert vertex_base("claude-sonnet-4-5@20250929") == "claude-sonnet-4-5-20250929"


# --- top-level fields ------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=5,
)
NAMES = st.text(string.ascii_lowercase + "_", min_size=1, max_size=24) | st.text(max_size=24)


@given(name=NAMES.filter(lambda n: n not in MESSAGES_FIELDS), value=JSON_VALUES)
def test_any_unknown_field_is_refused(name: str, value: object) -> None:
    problem = check_body({**body(), name: value})
    assert isinstance(problem, ErrorResponse)
    assert (problem.status, problem.error_type) == (400, "invalid_request_error")
    assert problem.message == f"{name}: Extra inputs are not permitted"


# A value of the right type for each known field (hypothesis picks among them).
_TEXT = st.text(max_size=8)
_OBJECT = st.dictionaries(st.sampled_from(["a", "b", "edits"]), _TEXT, max_size=2)
RIGHT_TYPES: dict[str, st.SearchStrategy[Any]] = {
    "model": st.sampled_from([model.id for model in CATALOG]),
    "messages": st.lists(
        st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": _TEXT | st.just([])}),
        min_size=1, max_size=3,
    ),
    "max_tokens": st.integers(1, 128_000),
    "system": _TEXT | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": _TEXT}), max_size=2),
    "metadata": st.fixed_dictionaries({}, optional={"user_id": st.none() | _TEXT}),
    "stop_sequences": st.lists(_TEXT, max_size=3),
    "stream": st.booleans(),
    "temperature": st.floats(0, 1) | st.sampled_from([0, 1]),
    "top_k": st.integers(0, 500),
    "top_p": st.floats(0, 1),
    "tools": st.lists(_OBJECT, max_size=2),
    "tool_choice": st.sampled_from([{"type": "auto"}, {"type": "any"}, {"type": "none"}, {"type": "tool", "name": "t"}]),
    "thinking": st.sampled_from([{"type": "disabled"}, {"type": "adaptive"}]) | st.builds(
        lambda budget: {"type": "enabled", "budget_tokens": budget}, st.integers(1024, 64_000)
    ),
    "service_tier": st.sampled_from(["auto", "standard_only"]),
    "container": st.none() | _TEXT | _OBJECT,
    "mcp_servers": st.lists(_OBJECT, max_size=2),
    "context_management": st.none() | _OBJECT,
    "output_config": _OBJECT,
    "output_format": st.none() | _OBJECT,
    "speed": st.sampled_from([None, "standard", "fast"]),
    "inference_geo": st.none() | _TEXT,
    "cache_control": st.sampled_from([None, {"type": "ephemeral"}, {"type": "ephemeral", "ttl": "1h"}]),
    "fallbacks": st.sampled_from([None, "default", [], [{"model": "claude-opus-4-8"}]]),
    "fallback_credit_token": st.none() | _TEXT | _OBJECT,
    "diagnostics": st.none() | _OBJECT,
    "context_hint": st.none() | _OBJECT,
    "billing_policy": st.none() | _OBJECT,
    "compaction": st.none() | _OBJECT,
    "thread": st.none() | _OBJECT,
}


def test_every_known_field_has_a_right_type_strategy() -> None:
    assert RIGHT_TYPES.keys() == MESSAGES_FIELDS.keys()


@given(st.data())
def test_any_known_fields_of_the_right_type_are_accepted(data: st.DataObject) -> None:
    optional = sorted(set(MESSAGES_FIELDS) - {"model", "messages", "max_tokens"})
    chosen = data.draw(st.lists(st.sampled_from(optional), unique=True, max_size=len(optional)))
    request = {name: data.draw(RIGHT_TYPES[name], label=name) for name in ["model", "messages", "max_tokens", *chosen]}
    assert check_body(request) == request
    counted = {name: value for name, value in request.items() if name in COUNT_TOKENS_FIELDS}
    assert check_body(counted, counting=True) == counted


WRONG_TYPES = [
    ("max_tokens", "1024", "max_tokens: Input should be a valid integer"),
    ("max_tokens", 0, "max_tokens: Input should be greater than or equal to 1"),
    ("stream", "true", "stream: Input should be a valid boolean"),
    ("temperature", 1.5, "temperature: Input should be less than or equal to 1"),
    ("temperature", "hot", "temperature: Input should be a valid number"),
    ("top_k", -1, "top_k: Input should be greater than or equal to 0"),
    ("system", 42, "system: Input should be a valid string"),
    ("system", [{"type": "image"}], "system.0.type: Input should be 'text'"),
    ("stop_sequences", "END", "stop_sequences: Input should be a valid list"),
    ("stop_sequences", ["a", 1], "stop_sequences.1: Input should be a valid string"),
    ("metadata", {"user_id": 7}, "metadata.user_id: Input should be a valid string"),
    ("tools", {"name": "t"}, "tools: Input should be a valid list"),
    ("tool_choice", {"type": "sometimes"}, "tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'"),
    ("thinking", {"type": "enabled", "budget_tokens": 100}, "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"),
    ("service_tier", "priority", "service_tier: Input should be 'auto' or 'standard_only'"),
    ("speed", "ludicrous", "speed: Input should be 'standard' or 'fast'"),
    ("output_config", None, "output_config: Input should be a valid dictionary"),
    ("cache_control", {"type": "permanent"}, "cache_control.type: Input should be 'ephemeral'"),
    ("messages", [{"role": "robot", "content": "x"}], "messages.0.role: Input should be 'user' or 'assistant'"),
]  # fmt: skip


@pytest.mark.parametrize(("field", "value", "message"), WRONG_TYPES)
async def test_wrong_types_are_400(client: httpx.AsyncClient, field: str, value: object, message: str) -> None:
    response = await client.post("/v1/messages", json={**body(), field: value})
    assert _error(response) == (400, "invalid_request_error", message)


@pytest.mark.parametrize("field", ["colour", "max_token", "betas", "anthropic_version", "Model"])
async def test_unknown_fields_over_http(client: httpx.AsyncClient, field: str) -> None:
    for path, request in (("/v1/messages", body()), ("/v1/messages/count_tokens", prompt())):
        response = await client.post(path, json={**request, field: 1})
        assert _error(response) == (400, "invalid_request_error", f"{field}: Extra inputs are not permitted")


async def test_sampling_fields_are_gone_in_2026_10_21(client: httpx.AsyncClient) -> None:
    request = body(temperature=1)
    assert (await client.post("/v1/messages", json=request)).status_code == 200
    newer = await client.post("/v1/messages", json=request, headers={"anthropic-version": "2026-10-21"})
    assert _error(newer) == (400, "invalid_request_error", "temperature: Extra inputs are not permitted")


# --- prompt-cache minimum --------------------------------------------------------------


def _cached(text: str) -> dict[str, Any]:
    return body(system=[{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}])


async def test_cache_only_above_the_models_minimum(client: httpx.AsyncClient) -> None:
    short = (await client.post("/v1/messages", json=_cached("Brief. " * 100))).json()["usage"]
    assert short["cache_creation_input_tokens"] == 0 and short["cache_read_input_tokens"] == 0
    again = (await client.post("/v1/messages", json=_cached("Brief. " * 100))).json()["usage"]
    assert again["cache_read_input_tokens"] == 0
    # About 1350 tokens: over Sonnet 4.6's 1024, under Haiku 4.5's 4096.
    sonnet = (await client.post("/v1/messages", json=_cached(CACHEABLE_TEXT))).json()["usage"]
    assert sonnet["cache_creation_input_tokens"] > 1024
    haiku_request = {**_cached(CACHEABLE_TEXT), "model": "claude-haiku-4-5"}
    haiku = (await client.post("/v1/messages", json=haiku_request)).json()["usage"]
    assert haiku["cache_creation_input_tokens"] == 0


def test_cache_minimum_boundary() -> None:
    assert (cache_minimum("claude-sonnet-4-6"), cache_minimum("claude-haiku-4-5")) == (1024, 4096)
    assert (cache_minimum("claude-opus-4-7"), cache_minimum("claude-fable-5")) == (4096, 512)
    cache = PromptCache()
    request = _cached("abcd" * 1100)
    usage = cache.usage(request, "m", minimum=1024)
    prefix = usage.cache_creation_input_tokens
    assert prefix >= 1024
    # Exactly at the minimum a prefix is cached; one token above it, it is not.
    assert PromptCache().usage(request, "m", minimum=prefix).cache_creation_input_tokens == prefix
    assert PromptCache().usage(request, "m", minimum=prefix + 1).cache_creation_input_tokens == 0


# --- the request log -------------------------------------------------------------------


async def test_request_log_shows_what_a_client_sent(client: httpx.AsyncClient) -> None:
    secret = {"authorization": "Bearer eyJhbGciOiJSUzI1NiJ9.secret-part", "cookie": "session=hunter2"}
    await client.post("/v1/messages", json=body("logged"), headers={"x-api-key": "sk-ant-api03-supersecret", **secret})
    await client.post("/v1/messages/count_tokens", content=b"not json", headers={"content-type": "text/plain"})
    log = (await client.get("/_emulator/requests")).json()
    first, second = log[0], log[1]
    assert (first["method"], first["path"], first["status"]) == ("POST", "/v1/messages", 200)
    assert first["body"] == body("logged")
    headers = first["headers"]
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["x-api-key"] == "sk-ant…"
    assert headers["authorization"] == "Bearer eyJhbG…"
    assert headers["cookie"] == "sessi…"
    text = str(log)
    assert "supersecret" not in text and "secret-part" not in text and "hunter2" not in text
    assert second["body"] == "not json" and second["status"] == 400
    assert second["headers"]["x-api-key"] == "te…"  # test-key: a third of a short secret
    assert log[-1]["path"] == "/_emulator/requests"


async def test_request_log_delete_clears(client: httpx.AsyncClient, emu: Emulator) -> None:
    emu.script("500")
    await client.post("/v1/messages", json=body())
    cleared = await client.delete("/_emulator/requests")
    assert cleared.json() == {"cleared": True}
    assert emu.requests == []
    # Only the log: the queued faults, the cache and the like stay.
    assert (await client.post("/v1/messages", json=body())).status_code == 200
    assert [entry["index"] for entry in (await client.get("/_emulator/requests")).json()] == [0, 1]
    assert (await client.put("/_emulator/requests")).headers["allow"] == "GET, DELETE"


async def test_request_log_is_bounded(
    client: httpx.AsyncClient, emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(router, "REQUEST_LOG_LIMIT", 3)
    for n in range(5):
        await client.post("/v1/messages", json=body(f"n{n}"))
    assert [record.index for record in emu.requests] == [2, 3, 4]
    assert (await emu.wait_for_request(4)).json == body("n4")
    with pytest.raises(LookupError):
        await emu.wait_for_request(0)
    log = (await client.get("/_emulator/requests")).json()
    assert [entry["index"] for entry in log] == [3, 4, 5]


# --- thinking budget against max_tokens ------------------------------------------------


async def test_thinking_budget_must_fit_under_max_tokens(client: httpx.AsyncClient) -> None:
    request = body(max_tokens=2000, thinking={"type": "enabled", "budget_tokens": 2000})
    status, kind, message = _error(await client.post("/v1/messages", json=request))
    assert (status, kind) == (400, "invalid_request_error")
    assert message.startswith("`max_tokens` must be greater than `thinking.budget_tokens`.")
    # Interleaved thinking lets the budget span the turn, past max_tokens.
    interleaved = {"anthropic-beta": "interleaved-thinking-2025-05-14"}
    assert (await client.post("/v1/messages", json=request, headers=interleaved)).status_code == 200
    fits = body(max_tokens=2001, thinking={"type": "enabled", "budget_tokens": 2000})
    assert (await client.post("/v1/messages", json=fits)).status_code == 200
    bedrock = {**BEDROCK_BODY, "max_tokens": 1024, "thinking": {"type": "enabled", "budget_tokens": 1024}}
    refused = await client.post(BEDROCK, json=bedrock)
    assert refused.status_code == 400 and "thinking.budget_tokens" in refused.json()["message"]
    with_beta = {**bedrock, "anthropic_beta": ["interleaved-thinking-2025-05-14"]}
    assert (await client.post(BEDROCK, json=with_beta)).status_code == 200
