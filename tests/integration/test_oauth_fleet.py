"""Two gateways with sign-in on one PostgreSQL ledger (README.md "Claude Code for a whole
organisation"): a user added through one signs in at the other, and each accepts the bearer
token the other issued; a refresh token rotated at one is used up at the other too. The
device flow itself stays with the gateway that started it (its pending grants are in memory).
"""

from __future__ import annotations

import datetime
import functools
from typing import Any

import httpx
import msgspec
import trio
from harness import clean_env, serve_process

from actors.access.identities import hash_password
from actors.config.settings import Config
from actors.server import Server, run_server
from protocol.oauth import GRANT_DEVICE, GRANT_REFRESH, METADATA_PATH

PASSWORD = "correct horse battery"
MESSAGE = {"model": "claude-sonnet-4-6", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
NOW = datetime.datetime.now(datetime.UTC)


async def sign_in(client: httpx.AsyncClient) -> dict[str, Any]:
    """The device flow at one gateway, approved on its page as a user would."""
    device = (await client.post("/oauth/device_authorization", data={"surface": "claude_code"})).json()
    form = {"user_code": device["user_code"], "username": "ada", "password": PASSWORD, "action": "approve"}
    assert (await client.post("/device", data=form)).status_code == 200
    answer = await client.post("/oauth/token", data={"grant_type": GRANT_DEVICE, "device_code": device["device_code"]})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def messages(client: httpx.AsyncClient, bearer: str) -> httpx.Response:
    headers = {"authorization": f"Bearer {bearer}", "anthropic-version": "2023-06-01"}
    return await client.post("/v1/messages", json=MESSAGE, headers=headers)


async def test_two_gateways_on_one_postgresql_ledger_accept_each_others_tokens(
    nursery: trio.Nursery, config: Config, pg_url: str
) -> None:
    config = msgspec.structs.replace(config, http_port=0, oauth=True, ledger_path=pg_url)
    first: Server = await nursery.start(functools.partial(run_server, config))
    second: Server = await nursery.start(functools.partial(run_server, config))
    assert first.oauth is not None and first.http_url is not None and second.http_url is not None
    first.oauth.store.add_user("ada", hash_password(PASSWORD), ("eng",), NOW)
    async with httpx.AsyncClient(base_url=first.http_url) as one, httpx.AsyncClient(base_url=second.http_url) as two:
        from_second = await sign_in(two)
        from_first = await sign_in(one)
        assert (await messages(one, from_second["access_token"])).status_code == 200
        assert (await messages(two, from_first["access_token"])).status_code == 200
        rotated = await one.post("/oauth/token", data={"grant_type": GRANT_REFRESH, "refresh_token": from_second["refresh_token"]})
        assert rotated.status_code == 200, rotated.text
        reused = await two.post("/oauth/token", data={"grant_type": GRANT_REFRESH, "refresh_token": from_second["refresh_token"]})
        assert reused.status_code == 401 and reused.json()["error"] == "invalid_grant"
        # The reuse revoked that sign-in at both gateways; the other sign-in lives on.
        assert (await messages(one, rotated.json()["access_token"])).status_code == 401
        assert (await messages(one, from_first["access_token"])).status_code == 200


async def test_serve_oauth_accepts_a_postgresql_ledger(pg_url: str) -> None:
    async with serve_process(clean_env(), "--ledger", pg_url, "--http-port", "0", "--oauth") as served:
        await served.read_line()  # the WebSocket door
        http_url = await served.read_line()
        async with httpx.AsyncClient(base_url=http_url) as client:
            doc = (await client.get(METADATA_PATH)).json()
    assert doc["token_endpoint"] == http_url + "/oauth/token"
