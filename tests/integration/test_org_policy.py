"""The organisation policy and telemetry on the HTTP door (README.md "Claude Code for a whole
organisation"): allow-lists at /v1/messages and /v1/models, /managed/settings with ETags,
OTLP exports. The identity store is a fake resolver (the seam: ``Gateway.resolve_principal``).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio
from harness import API_VERSION, chat, clean_env, connect
from prometheus_client.parser import text_string_to_metric_families

from actors.cli.cost import read_spend
from actors.config.settings import Config, Secret
from actors.server import Server, run_server
from emulator import Emulator
from protocol.frames import Done, ErrorFrame, Rejected
from protocol.identity import Principal
from protocol.policy import parse_policy
from protocol.pricing import PICO_PER_USD

POLICY = """
[default]
settings = { env = { CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY = "1" } }

[groups.eng]
models = ["claude-sonnet-4-*", "claude-haiku-4-5*"]
settings = { permissions = { deny = ["WebFetch"] } }
"""
PRINCIPALS = {
    "tok-ada": Principal(user="ada", groups=("eng",)),
    "tok-eve": Principal(user="eve", groups=("sales",)),
}
PLAIN_TOKEN = "plain-access-token"


async def _resolve(token: str) -> Principal | None:
    return PRINCIPALS.get(token)


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(POLICY)
    return path


@pytest.fixture
async def server(nursery: trio.Nursery, config: Config, policy_file: Path) -> Server:
    config = msgspec.structs.replace(
        config, http_port=0, policy_path=str(policy_file), access_tokens=(Secret(PLAIN_TOKEN),)
    )
    server: Server = await nursery.start(functools.partial(run_server, config))
    server.gateway.resolve_principal = _resolve
    return server


def client(server: Server, token: str) -> httpx.AsyncClient:
    headers = {**API_VERSION, "authorization": f"Bearer {token}"}
    return httpx.AsyncClient(headers=headers, base_url=str(server.http_url), timeout=30)


def upstream_messages(emulator: Emulator) -> int:
    return sum(1 for r in emulator.requests if r.path.split("?")[0] == "/v1/messages")


async def test_a_model_outside_the_groups_allow_list_is_refused_before_going_upstream(
    server: Server, emulator: Emulator
) -> None:
    async with client(server, "tok-ada") as http:
        refused = await http.post("/v1/messages", json=chat(model="claude-opus-4-1"))
        allowed = await http.post("/v1/messages", json=chat(model="claude-sonnet-4-6"))
        fallback = await http.post(
            "/v1/messages",
            json=chat(model="claude-sonnet-4-6"),
            headers={"x-switchboard-fallback-model": "claude-opus-4-1"},
        )
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "claude-opus-4-1" in error["message"] and "not allowed" in error["message"]
    assert refused.headers["x-should-retry"] == "false"
    assert fallback.status_code == 400
    assert allowed.status_code == 200
    assert upstream_messages(emulator) == 1


async def test_a_user_without_a_list_and_a_token_without_a_user_may_use_any_model(server: Server) -> None:
    for token in ("tok-eve", PLAIN_TOKEN):
        async with client(server, token) as http:
            answer = await http.post("/v1/messages", json=chat(model="claude-opus-4-1"))
        assert answer.status_code == 200, answer.text


async def test_models_lists_only_what_the_user_may_use(server: Server) -> None:
    async with client(server, "tok-ada") as http:
        listed = [m["id"] for m in (await http.get("/v1/models", params={"limit": 1000})).json()["data"]]
        opus = await http.get("/v1/models/claude-opus-4-1")
    async with client(server, PLAIN_TOKEN) as http:
        everything = [m["id"] for m in (await http.get("/v1/models", params={"limit": 1000})).json()["data"]]
    assert listed and all(m.startswith(("claude-sonnet-4-", "claude-haiku-4-5")) for m in listed)
    assert set(listed) < set(everything)
    assert opus.status_code == 404


async def test_managed_settings_are_the_users_merged_settings_with_an_etag_and_304(server: Server) -> None:
    async with client(server, "tok-ada") as http:
        first = await http.get("/managed/settings")
        again = await http.get("/managed/settings", headers={"if-none-match": first.headers["etag"]})
        star = await http.get("/managed/settings", headers={"if-none-match": "*"})
    assert first.status_code == 200
    body = first.json()
    assert body["settings"] == {
        "env": {"CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY": "1"},
        "permissions": {"deny": ["WebFetch"]},
    }
    assert first.headers["etag"] == f'"{body["checksum"]}"'
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == first.headers["etag"]
    assert star.status_code == 200


async def test_managed_settings_404_without_a_policy_for_the_token(server: Server, policy_file: Path) -> None:
    async with client(server, PLAIN_TOKEN) as http:
        answer = await http.get("/managed/settings")
    assert answer.status_code == 404
    assert answer.json()["error"]["type"] == "not_found_error"


async def test_an_edited_policy_file_is_in_force_after_a_reload(server: Server, policy_file: Path) -> None:
    async with client(server, "tok-ada") as http:
        before = await http.get("/managed/settings")
        await trio.Path(policy_file).write_text(POLICY.replace("WebFetch", "Bash") + "\n# edited\n")
        assert await server.gateway.policy.reload()
        after = await http.get("/managed/settings", headers={"if-none-match": before.headers["etag"]})
    assert after.status_code == 200
    assert after.json()["settings"]["permissions"] == {"deny": ["Bash"]}
    assert after.headers["etag"] != before.headers["etag"]


def _otlp_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("switchboard_otlp") and sample.name.endswith("_total"):
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_otlp_exports_get_200_whatever_they_hold_and_are_counted(server: Server) -> None:
    logs: dict[str, Any] = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{}, {}]}]}]}
    async with client(server, "tok-ada") as http:
        # No anthropic-version: an OpenTelemetry exporter sends none.
        del http.headers["anthropic-version"]
        json_answer = await http.post("/v1/logs", content=json.dumps(logs), headers={"content-type": "application/json"})
        proto = await http.post(
            "/v1/metrics", content=b"\x0a\x04\x12\x02\x12\x00", headers={"content-type": "application/x-protobuf"}
        )
        garbage = await http.post("/v1/traces", content=b"\xff\xff", headers={"content-type": "application/x-protobuf"})
        metrics = await http.get("/metrics")
    async with client(server, "tok-nobody") as http:
        stranger = await http.post("/v1/logs", content=b"{}", headers={"content-type": "application/json"})
    assert (json_answer.status_code, json_answer.json()) == (200, {})
    assert proto.status_code == 200 and garbage.status_code == 200
    assert stranger.status_code == 401
    samples = _otlp_samples(metrics.text)
    items = "switchboard_otlp_items_total"
    exports = "switchboard_otlp_exports_total"
    assert samples[(items, (("signal", "logs"),))] == 2
    assert samples[(items, (("signal", "metrics"),))] == 1
    undecodable = (exports, (("encoding", "protobuf"), ("outcome", "undecodable"), ("signal", "traces")))
    assert samples[undecodable] == 1


def test_the_test_policy_parses() -> None:
    assert parse_policy(POLICY.encode()).groups["eng"].models is not None


async def test_the_ledger_names_the_user_a_query_was_spent_by(
    nursery: trio.Nursery, config: Config, policy_file: Path, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    config = msgspec.structs.replace(
        config, http_port=0, policy_path=str(policy_file), ledger_path=str(ledger), access_tokens=(Secret(PLAIN_TOKEN),)
    )
    server: Server = await nursery.start(functools.partial(run_server, config))
    server.gateway.resolve_principal = _resolve
    spent = {}
    for token in ("tok-ada", "tok-eve", PLAIN_TOKEN):
        async with client(server, token) as http:
            answer = await http.post("/v1/messages", json=chat(model="claude-sonnet-4-6"))
        assert answer.status_code == 200
        spent[token] = float(answer.headers["x-switchboard-cost-usd"])
    by_user = {g.key: g for g in await trio.to_thread.run_sync(read_spend, str(ledger), "user")}
    assert set(by_user) == {"ada", "eve", "(none)"}
    assert by_user["ada"].messages == 1
    assert by_user["ada"].cost_pico / PICO_PER_USD == pytest.approx(spent["tok-ada"])


LIMITS_POLICY = """
[groups.eng]
budget_usd = "0.000001"
period = "day"

[groups.ops]
rpm = 1

[users.bob]
rpm = 100
"""
LIMITED = {
    "tok-ada": Principal(user="ada", groups=("eng",)),
    "tok-bob": Principal(user="bob", groups=("ops",)),
    "tok-cy": Principal(user="cy", groups=("ops",)),
}


async def _resolve_limited(token: str) -> Principal | None:
    return LIMITED.get(token)


async def test_user_and_group_limits_refuse_with_429_billing_or_rate_limit_and_retry_after(
    nursery: trio.Nursery, config: Config, tmp_path: Path
) -> None:
    policy = tmp_path / "limits.toml"
    await trio.Path(policy).write_text(LIMITS_POLICY)
    config = msgspec.structs.replace(config, http_port=0, policy_path=str(policy))
    server: Server = await nursery.start(functools.partial(run_server, config))
    server.gateway.resolve_principal = _resolve_limited
    async with client(server, "tok-ada") as http:
        over_budget = await http.post("/v1/messages", json=chat())
    async with client(server, "tok-bob") as http:
        first = await http.post("/v1/messages", json=chat())
    async with client(server, "tok-cy") as http:
        second = await http.post("/v1/messages", json=chat())  # ops: one request a minute, shared
    assert over_budget.status_code == 429
    # A user's or group's spend cap is the protocol's billing_error, not to be retried into.
    assert over_budget.json()["error"]["type"] == "billing_error"
    assert over_budget.headers["x-should-retry"] == "false"
    assert "group eng: budget of $0.000001 per day reached" in over_budget.json()["error"]["message"]
    assert int(over_budget.headers["retry-after"]) > 0
    assert first.status_code == 200
    assert second.status_code == 429 and second.json()["error"]["type"] == "rate_limit_error"
    assert "group ops: 1 requests per minute" in second.json()["error"]["message"]
    assert int(second.headers["retry-after"]) > 0
    # The store holds the policy's subjects with their counters: bob's one request counted.
    store = server.gateway.budgets
    assert store is not None
    counts = {key: info.account.rpm_count for key in ("user:bob", "group:ops", "group:eng") if (info := store.store.get(key))}
    assert counts == {"user:bob": 1, "group:ops": 1, "group:eng": 0}


async def test_a_chunked_body_without_length_gets_411_and_one_over_the_cap_413(
    nursery: trio.Nursery, config: Config, policy_file: Path
) -> None:
    config = msgspec.structs.replace(config, http_port=0, policy_path=str(policy_file), max_frame_bytes=4096)
    server: Server = await nursery.start(functools.partial(run_server, config))

    async def chunks() -> AsyncIterator[bytes]:
        yield json.dumps(chat()).encode()

    async with httpx.AsyncClient(headers=API_VERSION, base_url=str(server.http_url)) as http:
        chunked = await http.post("/v1/messages", content=chunks())
        large = await http.post("/v1/messages", json=chat("x" * 5000))
    assert chunked.status_code == 411
    assert chunked.json()["error"]["type"] == "invalid_request_error"
    assert large.status_code == 413 and large.json()["error"]["type"] == "request_too_large"


async def test_x_app_and_x_stainless_headers_never_refuse_a_request(server: Server) -> None:
    headers = {
        "x-app": "cli",
        "x-stainless-lang": "js",
        "x-stainless-os": "Linux",
        "x-stainless-helper-method": "stream",
        "x-stainless-unknown-future-header": "anything at all",
        "x-stainless-timeout": "600",
    }
    async with client(server, "tok-ada") as http:
        answer = await http.post("/v1/messages", json=chat(), headers=headers)
    assert answer.status_code == 200, answer.text


async def test_the_websocket_door_applies_the_allow_list_and_limits_too(
    nursery: trio.Nursery, config: Config, tmp_path: Path
) -> None:
    policy = tmp_path / "ws.toml"
    await trio.Path(policy).write_text(POLICY + '\n[groups.ops]\nbudget_usd = "0.000001"\nperiod = "day"\n')
    config = msgspec.structs.replace(config, policy_path=str(policy))
    server: Server = await nursery.start(functools.partial(run_server, config))
    principals = {"tok-ada": Principal(user="ada", groups=("eng",)), "tok-cy": Principal(user="cy", groups=("ops",))}

    async def resolve(token: str) -> Principal | None:
        return principals.get(token)

    server.gateway.resolve_principal = resolve
    async with connect(server, "s1", extra_headers=[(b"authorization", b"Bearer tok-ada")]) as ws:
        await ws.receive()  # ready
        await ws.send(type="query", id="q", request=chat(model="claude-opus-4-1"))
        while not isinstance(refused := await ws.receive(), Rejected):
            pass
        await ws.send(type="query", id="ok", request=chat(model="claude-sonnet-4-6"))
        done = await ws.until_terminal("ok")
    async with connect(server, "s2", extra_headers=[(b"authorization", b"Bearer tok-cy")]) as ws:
        await ws.receive()
        await ws.send(type="query", id="q", request=chat())
        over = await ws.until_terminal("q")
    assert refused.id == "q" and refused.error.type == "invalid_request_error"
    assert "not allowed for ada" in refused.error.message
    assert isinstance(done[-1], Done)
    assert isinstance(over[-1], ErrorFrame) and "group ops: budget" in over[-1].error.message


async def test_a_policy_file_that_does_not_parse_stops_the_start_with_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    await trio.Path(bad).write_text("not [ toml")
    command = [sys.executable, "-c", "from actors.cli.commands import main; main()"]
    args = ["serve", "--port", "0", "--http-port", "0", "--ledger", ":memory:", "--policy", str(bad)]
    with trio.fail_after(120):  # a safety net: the start fails at once
        done = await trio.run_process([*command, *args], env=clean_env(), capture_stderr=True, check=False)
    assert done.returncode == 2
    assert b"the policy file is not TOML" in done.stderr
