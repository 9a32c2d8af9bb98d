"""UpstreamClient: requests through httpx's transport API, and the proxy environment."""

from __future__ import annotations

import httpx
import pytest
import trio

from actors.config.env import environment_proxies
from actors.config.from_env import config_from_env
from actors.config.settings import Config
from actors.upstream.client import UpstreamClient, bypasses_proxy
from emulator import Emulator

TIMEOUT = httpx.Timeout(5.0)
LIMITS = httpx.Limits(max_connections=4)


def client(proxies: dict[str, str] | None = None, no_proxy: tuple[str, ...] = ()) -> UpstreamClient:
    return UpstreamClient(
        tls=httpx.create_ssl_context(), timeout=TIMEOUT, limits=LIMITS, proxies=proxies, no_proxy=no_proxy
    )


def test_proxy_variables_lower_case_first_and_all_proxy_as_the_fallback() -> None:
    proxies, no_proxy = environment_proxies(
        {
            "HTTPS_PROXY": "http://upper:1",
            "https_proxy": "http://lower:2",
            "ALL_PROXY": "http://every:3",
            "NO_PROXY": " localhost, .internal.example ,,10.0.0.1:8080 ",
        }
    )
    assert proxies == (("http", "http://every:3"), ("https", "http://lower:2"))
    assert no_proxy == ("localhost", ".internal.example", "10.0.0.1:8080")
    assert environment_proxies({}) == ((), ())


def test_a_proxy_password_is_a_secret() -> None:
    config = config_from_env({"HTTPS_PROXY": "http://me:hunter2@proxy.example:3128"})
    assert config.proxies == (("https", "http://me:hunter2@proxy.example:3128"),)
    assert "hunter2" in config.secrets()
    assert Config().secrets() == []


@pytest.mark.parametrize(
    ("host", "port", "no_proxy", "bypass"),
    [
        ("api.anthropic.com", 443, ("*",), True),
        ("api.anthropic.com", 443, ("api.anthropic.com",), True),
        ("api.anthropic.com", 443, ("anthropic.com",), True),
        ("api.anthropic.com", 443, (".anthropic.com",), True),
        ("API.Anthropic.com", 443, ("anthropic.com",), True),
        ("notanthropic.com", 443, ("anthropic.com",), False),
        ("api.anthropic.com", 443, ("api.anthropic.com:443",), True),
        ("api.anthropic.com", 443, ("api.anthropic.com:8443",), False),
        ("::1", 8080, ("[::1]",), True),
        ("api.anthropic.com", 443, (), False),
    ],
)
def test_no_proxy_matching(host: str, port: int, no_proxy: tuple[str, ...], bypass: bool) -> None:
    assert bypasses_proxy(host, port, no_proxy) is bypass


def test_each_host_goes_direct_or_through_its_schemes_proxy() -> None:
    upstream = client(proxies={"https": "http://proxy.example:3128"}, no_proxy=("internal.example",))
    direct = upstream.transport_for(httpx.URL("http://api.example/v1/messages"))
    proxied = upstream.transport_for(httpx.URL("https://api.example/v1/messages"))
    exempt = upstream.transport_for(httpx.URL("https://llm.internal.example/v1/messages"))
    assert proxied is not direct and exempt is direct
    # The decision is made once per origin, and one proxy URL has one connection pool.
    assert upstream.transport_for(httpx.URL("https://api.example/other")) is proxied
    assert upstream.transport_for(httpx.URL("https://bedrock.example/x")) is proxied


async def test_a_request_through_a_proxy_is_sent_to_the_proxy_in_absolute_form(nursery: trio.Nursery) -> None:
    # The emulator plays the proxy: it receives the absolute-form request a proxy gets
    # (RFC 9112 3.2.2), for a host that does not resolve, and answers it.
    emulator = Emulator()
    proxy_url = await nursery.start(emulator.run)
    upstream = client(proxies={"http": proxy_url})
    try:
        response = await upstream.request(
            "POST", "http://upstream.invalid/v1/messages", content=b"{}", headers={"x-api-key": "k"}
        )
    finally:
        await upstream.aclose()
    assert response.status_code == 400  # the emulator checks headers before the path
    (seen,) = emulator.requests
    assert seen.path == "http://upstream.invalid/v1/messages" and seen.headers["host"] == "upstream.invalid"


async def test_requests_carry_only_the_given_headers_and_a_per_request_timeout(nursery: trio.Nursery) -> None:
    emulator = Emulator()
    url = await nursery.start(emulator.run)
    upstream = client()
    try:
        async with upstream.stream(
            "POST", url + "/v1/messages/count_tokens", content=b"{}", headers={"x-api-key": "k"},
            request_timeout=httpx.Timeout(1.0),
        ) as response:
            assert response.request.extensions["timeout"]["read"] == 1.0
            await response.aread()
    finally:
        await upstream.aclose()
    (seen,) = emulator.requests
    # No cookies, user agent or encodings of httpx's client layer: what the gateway built.
    assert set(seen.headers) == {"host", "x-api-key", "content-length"}
