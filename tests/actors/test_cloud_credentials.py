"""Cloud credentials in the ClientPool (issue 6): the provider variables, the AWS chain, and
the refresh ahead of expiry that keeps serving the current keys (docs/reference/peers.md)."""

from __future__ import annotations

import pytest
import trio

import actors.upstream.cloud_credentials
from actors._util import ask
from actors.client_pool import EARLY_REFRESH_RETRY_INTERVAL, ClientPool
from actors.config.from_env import config_from_env
from actors.config.settings import Config, Secret
from actors.messages.pool import Acquire, Lease, Refresh, RefreshResult
from actors.upstream.cloud_credentials import EARLY_REFRESH, EXPIRY_MARGIN, load_cloud_credential
from actors.upstream.credentials import AwsKeys, Credential, CredentialError
from actors.upstream.endpoints import BedrockEndpoint, FoundryEndpoint
from protocol.errors import ConfigError


def test_provider_selection_follows_the_reference_order() -> None:
    assert config_from_env({}).provider == "firstParty"
    both = {"CLAUDE_CODE_USE_VERTEX": "1", "CLAUDE_CODE_USE_BEDROCK": "true", "CLAUDE_CODE_USE_FOUNDRY": "1"}
    assert config_from_env(both).provider == "bedrock"
    assert config_from_env({"CLAUDE_CODE_USE_VERTEX": "1", "CLAUDE_CODE_USE_FOUNDRY": "1"}).provider == "vertex"
    assert config_from_env({"CLAUDE_CODE_USE_FOUNDRY": "yes"}).provider == "foundry"
    assert config_from_env({"CLAUDE_CODE_USE_BEDROCK": "0"}).provider == "firstParty"


def test_bedrock_variables() -> None:
    config = config_from_env(
        {
            "CLAUDE_CODE_USE_BEDROCK": "1",
            "AWS_DEFAULT_REGION": "eu-west-1",
            "ANTHROPIC_SMALL_FAST_MODEL": "us.anthropic.claude-haiku-4-5-20251001-v1:0",
            "ANTHROPIC_SMALL_FAST_MODEL_AWS_REGION": "us-west-2",
            "AWS_BEARER_TOKEN_BEDROCK": "bedrock-key",
        }
    )
    assert config.use_emulator is False
    assert config.bedrock_region == "eu-west-1"
    assert config.bedrock_bearer is not None and "bedrock-key" in config.secrets()
    assert "bedrock-key" not in repr(config)
    endpoint = BedrockEndpoint(config, Credential())
    assert endpoint.region("us.anthropic.claude-haiku-4-5-20251001-v1:0") == "us-west-2"
    assert endpoint.region("us.anthropic.claude-sonnet-4-5-20250929-v1:0") == "eu-west-1"
    assert config_from_env({"CLAUDE_CODE_USE_BEDROCK": "1"}).bedrock_region == "us-east-1"
    assert config_from_env({"AWS_REGION": "ap-south-1", "AWS_DEFAULT_REGION": "x"}).bedrock_region == "ap-south-1"
    assert config_from_env({"CLAUDE_CODE_SKIP_BEDROCK_AUTH": "1"}).skip_bedrock_auth


KEYS_1 = AwsKeys(access_key="AKIDEXAMPLE", secret_key="secret-1")
KEYS_2 = AwsKeys(access_key="AKIDEXAMPLE2", secret_key="secret-2")


async def test_keys_are_refreshed_ahead_of_expiry_while_the_old_ones_are_served(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    lifetime = 1000.0
    answers: list[tuple[AwsKeys, float | None] | Exception] = [
        (KEYS_1, lifetime),
        CredentialError("sts unreachable"),
        (KEYS_2, lifetime),
    ]
    calls: list[float] = []

    async def load() -> tuple[AwsKeys, float | None]:
        calls.append(trio.current_time())
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(actors.upstream.cloud_credentials, "_load_aws", load)
    pool = ClientPool(Config(provider="bedrock", bedrock_base_url="http://127.0.0.1:9"))
    address = await nursery.start(pool.run)

    async def keys() -> tuple[AwsKeys | None, int]:
        lease: Lease = await ask(address, lambda reply: Acquire(reply=reply))
        assert isinstance(lease.endpoint, BedrockEndpoint)
        return lease.endpoint.keys, lease.generation

    start = trio.current_time()
    assert await keys() == (KEYS_1, 1)
    await trio.sleep_until(start + lifetime - EARLY_REFRESH)
    # Early: the refresh starts in the background, and this request gets the current keys.
    assert await keys() == (KEYS_1, 1)
    await trio.testing.wait_all_tasks_blocked()
    assert len(calls) == 2  # ... and it failed: the current keys are still served,
    assert await keys() == (KEYS_1, 1)
    assert len(calls) == 2  # without asking the chain again on every request
    await trio.sleep(EARLY_REFRESH_RETRY_INTERVAL)
    assert await keys() == (KEYS_1, 1)
    await trio.testing.wait_all_tasks_blocked()
    assert await keys() == (KEYS_2, 2)
    assert len(calls) == 3 and calls[2] - start < lifetime - EXPIRY_MARGIN
    address.close()


def test_an_empty_aws_chain_is_a_credential_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                 "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(CredentialError, match="no AWS credentials"):
        actors.upstream.cloud_credentials._load_aws_sync()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-1")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-1")
    keys, remaining = actors.upstream.cloud_credentials._load_aws_sync()
    assert keys == AwsKeys(access_key="AKIDEXAMPLE", secret_key="secret-1", token="session-1")
    assert remaining is None and "secret-1" not in repr(keys)


def test_foundry_variables() -> None:
    config = config_from_env(
        {"CLAUDE_CODE_USE_FOUNDRY": "1", "ANTHROPIC_FOUNDRY_RESOURCE": "my-res", "ANTHROPIC_FOUNDRY_API_KEY": "k-1"}
    )
    assert config.provider == "foundry" and not config.use_emulator
    assert config.foundry_base_url == "https://my-res.services.ai.azure.com/anthropic"
    assert "k-1" in config.secrets() and "k-1" not in repr(config)
    url = config_from_env({"ANTHROPIC_FOUNDRY_BASE_URL": "https://proxy.example/anthropic/"}).foundry_base_url
    assert url == "https://proxy.example/anthropic"
    with pytest.raises(ConfigError):
        config_from_env({"ANTHROPIC_FOUNDRY_RESOURCE": "r", "ANTHROPIC_FOUNDRY_BASE_URL": "https://x"})


async def test_skip_auth_sends_no_credential() -> None:
    bedrock = await load_cloud_credential(Config(provider="bedrock", skip_bedrock_auth=True))
    assert bedrock == Credential()
    vertex = await load_cloud_credential(Config(provider="vertex", skip_vertex_auth=True, vertex_project="p"))
    assert vertex == Credential(project="p") and vertex.headers() == []
    foundry = await load_cloud_credential(
        Config(provider="foundry", skip_foundry_auth=True, foundry_base_url="https://x/anthropic")
    )
    assert foundry == Credential()
    with pytest.raises(CredentialError):
        await load_cloud_credential(Config(provider="vertex", skip_vertex_auth=True))


async def test_one_pool_leases_for_every_provider_side_by_side(nursery: trio.Nursery) -> None:
    config = Config(
        provider="bedrock",
        skip_bedrock_auth=True,
        bedrock_base_url="http://127.0.0.1:9",
        foundry_base_url="http://127.0.0.1:9/anthropic",
        foundry_api_key=Secret("foundry-key"),
        api_key=Secret("sk-ant-first-party"),
        base_url="http://127.0.0.1:9",
    )
    address = await nursery.start(ClientPool(config).run)

    async def lease(provider: str | None) -> Lease:
        return await ask(address, lambda reply: Acquire(reply=reply, provider=provider))

    default, foundry, first = await lease(None), await lease("foundry"), await lease("firstParty")
    assert default.provider == "bedrock" and isinstance(default.endpoint, BedrockEndpoint)
    assert foundry.provider == "foundry" and isinstance(foundry.endpoint, FoundryEndpoint)
    assert ("x-api-key", "foundry-key") in foundry.headers
    assert first.provider == "firstParty" and first.endpoint is None
    assert ("x-api-key", "sk-ant-first-party") in first.headers
    # One set of upstream clients serves every provider (leases take them in turn).
    assert len({id(default.client), id(foundry.client), id(first.client)}) == 3
    # Each provider's credential has its own generations.
    result: RefreshResult = await ask(
        address, lambda reply: Refresh(generation=foundry.generation, reply=reply, provider="foundry")
    )
    assert result.changed is False and (await lease("bedrock")).generation == default.generation
    address.close()
