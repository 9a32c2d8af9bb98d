"""Sign-in over the HTTP door (actors/doors/oauth.py): discovery, the device flow approved on
the verification page as a user would, bearer tokens on /v1/messages, refresh rotation, and a
disabled user sent back to sign in. The gateway talks to the emulator; httpx is the client.
"""

from __future__ import annotations

import datetime
import functools
import shutil
import sqlite3
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio

from actors.access.identities import hash_password
from actors.config.from_env import with_sign_in
from actors.config.settings import Config
from actors.doors.oauth import DEVICE_STARTS, PAGE_ATTEMPTS
from actors.server import Server, run_server
from protocol.errors import ConfigError
from protocol.identity import Principal
from protocol.oauth import DEVICE_CODE_TTL, GRANT_DEVICE, GRANT_REFRESH, POLL_INTERVAL

PASSWORD = "correct horse battery"
MESSAGE = {"model": "claude-sonnet-4-6", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
NOW = datetime.datetime.now(datetime.UTC)


@pytest.fixture
async def signed(nursery: trio.Nursery, config: Config) -> Server:
    config = msgspec.structs.replace(config, http_port=0, oauth=True)
    server: Server = await nursery.start(functools.partial(run_server, config))
    assert server.oauth is not None
    server.oauth.store.add_user("ada", hash_password(PASSWORD), ("eng",), NOW)
    return server


@pytest.fixture
async def client(signed: Server) -> AsyncIterator[httpx.AsyncClient]:
    assert signed.http_url is not None
    async with httpx.AsyncClient(base_url=signed.http_url) as client:
        yield client


async def authorize(client: httpx.AsyncClient) -> dict[str, Any]:
    answer = await client.post("/oauth/device_authorization", data={"surface": "claude_code"})
    assert answer.status_code == 200
    body: dict[str, Any] = answer.json()
    return body


async def approve(client: httpx.AsyncClient, user_code: str, *, password: str = PASSWORD, action: str = "approve") -> httpx.Response:
    form = {"user_code": user_code, "username": "ada", "password": password, "action": action}
    return await client.post("/device", data=form)


async def token(client: httpx.AsyncClient, **form: str) -> httpx.Response:
    return await client.post("/oauth/token", data=form)


async def sign_in(client: httpx.AsyncClient) -> dict[str, Any]:
    device = await authorize(client)
    assert (await approve(client, device["user_code"])).status_code == 200
    answer = await token(client, grant_type=GRANT_DEVICE, device_code=device["device_code"])
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def messages(client: httpx.AsyncClient, bearer: str) -> httpx.Response:
    headers = {"authorization": f"Bearer {bearer}", "anthropic-version": "2023-06-01"}
    return await client.post("/v1/messages", json=MESSAGE, headers=headers)


async def test_discovery_names_the_device_and_token_endpoints_on_the_same_origin(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/.well-known/oauth-authorization-server")).json()
    origin = str(client.base_url).rstrip("/")
    assert doc["device_authorization_endpoint"] == origin + "/oauth/device_authorization"
    assert doc["token_endpoint"] == origin + "/oauth/token"
    assert "authorization_endpoint" not in doc


async def test_a_hostile_host_header_never_reaches_the_urls(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/.well-known/oauth-authorization-server", headers={"host": "evil.example/<x>"})).json()
    assert doc["issuer"] == "http://localhost"


async def test_the_device_authorization_answers_rfc_8628(client: httpx.AsyncClient) -> None:
    device = await authorize(client)
    assert len(device["device_code"]) >= 43  # 256 bits, URL-safe base64
    assert device["verification_uri"].endswith("/device")
    assert device["verification_uri_complete"] == f"{device['verification_uri']}?user_code={device['user_code']}"
    assert device["interval"] == POLL_INTERVAL and device["expires_in"] == DEVICE_CODE_TTL


async def test_the_device_flow_signs_in_and_the_bearer_reaches_the_messages_api(
    client: httpx.AsyncClient, signed: Server
) -> None:
    device = await authorize(client)
    pending = await token(client, grant_type=GRANT_DEVICE, device_code=device["device_code"])
    assert pending.status_code == 400 and pending.json()["error"] == "authorization_pending"
    too_soon = await token(client, grant_type=GRANT_DEVICE, device_code=device["device_code"])
    assert too_soon.json()["error"] == "slow_down"
    page = await approve(client, device["user_code"])
    assert page.status_code == 200 and "signed in as ada" in page.text
    issued = (await token(client, grant_type=GRANT_DEVICE, device_code=device["device_code"])).json()
    assert issued["token_type"] == "Bearer" and issued["refresh_token"]
    again = await token(client, grant_type=GRANT_DEVICE, device_code=device["device_code"])
    assert again.status_code >= 400  # a device code is single use
    answer = await messages(client, issued["access_token"])
    assert answer.status_code == 200, answer.text
    assert signed.gateway.resolve_principal is not None
    assert await signed.gateway.resolve_principal(issued["access_token"]) == Principal(user="ada", groups=("eng",))


async def test_a_denied_sign_in_answers_access_denied(client: httpx.AsyncClient) -> None:
    device = await authorize(client)
    assert (await approve(client, device["user_code"], action="deny")).status_code == 200
    denied = await token(client, grant_type=GRANT_DEVICE, device_code=device["device_code"])
    assert denied.status_code == 400 and denied.json()["error"] == "access_denied"


async def test_a_wrong_password_approves_nothing(client: httpx.AsyncClient) -> None:
    device = await authorize(client)
    page = await approve(client, device["user_code"], password="not the password")
    assert page.status_code == 401 and "Wrong user name or password" in page.text
    pending = await token(client, grant_type=GRANT_DEVICE, device_code=device["device_code"])
    assert pending.json()["error"] == "authorization_pending"


async def test_the_page_prefills_the_code_but_never_submits_it(client: httpx.AsyncClient) -> None:
    device = await authorize(client)
    page = await client.get("/device", params={"user_code": device["user_code"]})
    assert page.status_code == 200 and f'value="{device["user_code"]}"' in page.text
    assert "<script" not in page.text and "frame-ancestors 'none'" in page.headers["content-security-policy"]
    hostile = await client.get("/device", params={"user_code": '"><script>alert(1)</script>'})
    assert "<script>" not in hostile.text


async def test_the_page_is_rate_limited_per_address(client: httpx.AsyncClient) -> None:
    for _ in range(PAGE_ATTEMPTS):
        assert (await approve(client, "BCDF-GHJK")).status_code == 400
    limited = await approve(client, "BCDF-GHJK")
    assert limited.status_code == 429 and limited.headers["retry-after"]


async def test_device_authorizations_are_rate_limited_per_address(client: httpx.AsyncClient) -> None:
    for _ in range(DEVICE_STARTS):
        await authorize(client)
    limited = await client.post("/oauth/device_authorization")
    assert limited.status_code == 429 and limited.json()["error"] == "slow_down" and limited.headers["retry-after"]


async def test_an_unapproved_device_code_expires(client: httpx.AsyncClient, autojump_clock: trio.testing.MockClock) -> None:
    device = await authorize(client)
    await trio.sleep(DEVICE_CODE_TTL)
    expired = await token(client, grant_type=GRANT_DEVICE, device_code=device["device_code"])
    assert expired.status_code == 400 and expired.json()["error"] == "expired_token"
    assert (await approve(client, device["user_code"])).status_code == 400


async def test_refresh_rotates_and_reuse_revokes_the_sign_in(client: httpx.AsyncClient) -> None:
    first = await sign_in(client)
    rotated = await token(client, grant_type=GRANT_REFRESH, refresh_token=first["refresh_token"])
    assert rotated.status_code == 200
    second = rotated.json()
    assert (await messages(client, second["access_token"])).status_code == 200
    reused = await token(client, grant_type=GRANT_REFRESH, refresh_token=first["refresh_token"])
    assert reused.status_code == 401 and reused.json()["error"] == "invalid_grant"
    assert (await messages(client, second["access_token"])).status_code == 401


async def test_a_disabled_user_is_refused_and_cannot_refresh(client: httpx.AsyncClient, signed: Server) -> None:
    issued = await sign_in(client)
    assert signed.oauth is not None
    signed.oauth.store.disable("ada", datetime.datetime.now(datetime.UTC))
    refused = await messages(client, issued["access_token"])
    assert refused.status_code == 401 and refused.headers["x-should-retry"] == "false"
    assert refused.json()["error"]["type"] == "authentication_error"
    assert "sign in again" in refused.json()["error"]["message"]
    refresh = await token(client, grant_type=GRANT_REFRESH, refresh_token=issued["refresh_token"])
    assert refresh.status_code == 401 and refresh.json()["error"] == "invalid_grant"


async def test_the_token_endpoint_refuses_what_it_does_not_know(client: httpx.AsyncClient) -> None:
    assert (await token(client)).json()["error"] == "invalid_request"
    assert (await token(client, grant_type="password")).json()["error"] == "unsupported_grant_type"
    repeated = await client.post("/oauth/token", content=b"grant_type=a&grant_type=b", headers={"content-type": "application/x-www-form-urlencoded"})
    assert repeated.status_code == 400 and repeated.json()["error"] == "invalid_request"
    assert (await client.get("/oauth/token")).status_code == 405


async def test_without_a_token_the_messages_api_is_refused_once_sign_in_is_on(client: httpx.AsyncClient) -> None:
    answer = await client.post("/v1/messages", json=MESSAGE, headers={"anthropic-version": "2023-06-01"})
    assert answer.status_code == 401


async def test_a_store_that_cannot_answer_gets_503_not_a_crash(
    client: httpx.AsyncClient, signed: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await sign_in(client)
    assert signed.oauth is not None

    def broken(*args: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(signed.oauth.store, "rotate", broken)
    monkeypatch.setattr(signed.oauth.store, "verify", broken)
    refresh = await token(client, grant_type=GRANT_REFRESH, refresh_token=first["refresh_token"])
    assert refresh.status_code == 503 and refresh.json()["error"] == "invalid_request"
    device = await authorize(client)
    page = await approve(client, device["user_code"])
    assert page.status_code == 503 and "try again" in page.text
    assert (await messages(client, first["access_token"])).status_code == 200


def test_sign_in_over_plain_http_is_refused_off_loopback() -> None:
    with pytest.raises(ConfigError, match="plain HTTP"):
        with_sign_in(Config(host="0.0.0.0"), oauth=True)
    assert with_sign_in(Config(host="0.0.0.0"), oauth=True, allow_plain_http=True).oauth
    with pytest.raises(ConfigError, match="go together"):
        with_sign_in(Config(), tls_cert="cert.pem")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a certificate")
async def test_the_door_serves_https_with_the_given_certificate(nursery: trio.Nursery, config: Config, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    await trio.run_process(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        capture_stdout=True, capture_stderr=True,
    )
    config = with_sign_in(msgspec.structs.replace(config, http_port=0), oauth=True, tls_cert=str(cert), tls_key=str(key))
    server: Server = await nursery.start(functools.partial(run_server, config))
    assert server.http_url is not None and server.http_url.startswith("https://")
    context = ssl.create_default_context(cafile=str(cert))
    async with httpx.AsyncClient(base_url=server.http_url, verify=context) as client:
        doc = (await client.get("/.well-known/oauth-authorization-server")).json()
    assert doc["token_endpoint"].startswith("https://")
