"""Provider endpoints (issue 6): what a ``Lease`` carries to reach a cloud provider.

An ``Endpoint`` turns a first-party request into the provider's (URL, headers, body,
stream framing), adding the credential the way the provider wants it: pure shaping comes
from ``protocol/providers``, signing happens here (it reads the wall clock). It also
adjusts a failure by the provider's rules (docs/reference/reference-client.md 1.9: any Bedrock 403 is a
credential to refresh). The first party needs no endpoint: a lease without one is sent as
before.

Errors: ``CredentialError`` when signing needs a library that is not installed.
"""

from __future__ import annotations

from typing import Final, Protocol

import msgspec

from actors.config.settings import Config
from actors.upstream.credentials import AwsKeys, Credential, CredentialError
from protocol.providers import DecoderKind, ProviderRequest, bedrock, foundry, vertex
from protocol.retry import Failure
from protocol.wire import COUNT_TOKENS_RESULT, JsonObject

# docs/reference/wire.md 7.3: the SigV4 signing name of bedrock-runtime.
BEDROCK_SIGNING_NAME: Final = "bedrock"
# botocore drops this one before signing; the rest of its blacklist is never set here.
_UNSIGNED: Final = frozenset({"connection", "user-agent", "expect", "transfer-encoding"})


class Prepared(msgspec.Struct, frozen=True, kw_only=True):
    url: str
    headers: dict[str, str]
    content: bytes
    decoder: DecoderKind = "sse"


class Endpoint(Protocol):
    label: str

    def messages(self, body: JsonObject, headers: dict[str, str], *, streaming: bool) -> Prepared: ...

    def count(self, body: JsonObject, headers: dict[str, str]) -> Prepared: ...

    def count_result(self, raw: bytes) -> int: ...

    def adjust(self, failure: Failure, body: bytes) -> Failure: ...


def sigv4_headers(
    keys: AwsKeys, region: str, service: str, method: str, url: str, headers: dict[str, str], body: bytes
) -> dict[str, str]:
    """``headers`` plus botocore's SigV4 ``Authorization``, ``X-Amz-Date`` (and token).

    Raises:
        CredentialError: botocore is not installed.
    """
    try:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials
    except ImportError as exc:
        raise CredentialError("Bedrock needs the optional dependency: pip install 'switchboard[bedrock]'") from exc
    signed = {name: value for name, value in headers.items() if name.lower() not in _UNSIGNED}
    request = AWSRequest(method=method, url=url, headers=signed, data=body)
    SigV4Auth(Credentials(keys.access_key, keys.secret_key, keys.token), service, region).add_auth(request)
    out = dict(headers)
    for name, value in request.headers.items():
        out[name.lower()] = value
    return out


class BedrockEndpoint:
    """Bedrock's InvokeModel API (docs/reference/wire.md 7), signed with SigV4 unless a bearer is set."""

    label = "bedrock"

    def __init__(self, config: Config, credential: Credential) -> None:
        self._config = config
        self.keys = credential.aws

    def region(self, model: str) -> str:
        config = self._config
        if config.bedrock_small_fast_region and config.small_fast_model and model == config.small_fast_model:
            return config.bedrock_small_fast_region
        return config.bedrock_region

    def _prepare(self, shaped: ProviderRequest, model: str) -> Prepared:
        region = self.region(model)
        base = self._config.bedrock_base_url or f"https://bedrock-runtime.{region}.amazonaws.com"
        url = base + shaped.path
        headers = dict(shaped.headers)
        if self.keys is not None:
            headers = sigv4_headers(self.keys, region, BEDROCK_SIGNING_NAME, "POST", url, headers, shaped.body)
        return Prepared(url=url, headers=headers, content=shaped.body, decoder=shaped.decoder)

    def messages(self, body: JsonObject, headers: dict[str, str], *, streaming: bool) -> Prepared:
        shaped = bedrock.messages_request(body, tuple(headers.items()), streaming=streaming)
        return self._prepare(shaped, str(body.get("model", "")))

    def count(self, body: JsonObject, headers: dict[str, str]) -> Prepared:
        return self._prepare(bedrock.count_tokens_request(body, tuple(headers.items())), str(body.get("model", "")))

    def count_result(self, raw: bytes) -> int:
        return bedrock.count_tokens_result(raw)

    def adjust(self, failure: Failure, body: bytes) -> Failure:
        message = bedrock.error_message(body) or failure.message
        # docs/reference/reference-client.md 1.9: on Bedrock any 403 may be a stale credential.
        return msgspec.structs.replace(failure, message=message, credential_rejected=failure.status == 403)


class VertexEndpoint:
    """Vertex AI's rawPredict API (docs/reference/wire.md 8); the bearer token is in the lease headers."""

    label = "vertex"

    def __init__(self, config: Config, credential: Credential) -> None:
        self._config = config
        self.project = credential.project or config.vertex_project or ""

    def region(self, model: str) -> str:
        return vertex.region_for(model, self._config.vertex_region, self._config.vertex_region_overrides)

    def _prepare(self, shaped: ProviderRequest, region: str) -> Prepared:
        base = self._config.vertex_base_url or vertex.base_url(region)
        return Prepared(url=base + shaped.path, headers=dict(shaped.headers), content=shaped.body, decoder=shaped.decoder)

    def messages(self, body: JsonObject, headers: dict[str, str], *, streaming: bool) -> Prepared:
        region = self.region(str(body.get("model", "")))
        shaped = vertex.messages_request(
            body, tuple(headers.items()), project=self.project, region=region, streaming=streaming
        )
        return self._prepare(shaped, region)

    def count(self, body: JsonObject, headers: dict[str, str]) -> Prepared:
        region = self.region(str(body.get("model", "")))
        return self._prepare(
            vertex.count_tokens_request(body, tuple(headers.items()), project=self.project, region=region), region
        )

    def count_result(self, raw: bytes) -> int:
        return COUNT_TOKENS_RESULT.decode(raw).input_tokens

    def adjust(self, failure: Failure, body: bytes) -> Failure:
        # A 401 is an auth failure for every provider already (docs/reference/reference-client.md 1.9).
        rpc = vertex.rpc_error(body)
        if rpc is None:
            return failure
        return msgspec.structs.replace(failure, error_type=rpc[0], message=rpc[1])


class FoundryEndpoint:
    """Microsoft Foundry (docs/reference/wire.md 9): first-party requests under the resource's base URL."""

    label = "foundry"

    def __init__(self, config: Config) -> None:
        self._base = config.foundry_base_url or ""

    def _prepare(self, shaped: ProviderRequest) -> Prepared:
        return Prepared(url=self._base + shaped.path, headers=dict(shaped.headers), content=shaped.body)

    def messages(self, body: JsonObject, headers: dict[str, str], *, streaming: bool) -> Prepared:
        return self._prepare(foundry.messages_request(body, tuple(headers.items())))

    def count(self, body: JsonObject, headers: dict[str, str]) -> Prepared:
        return self._prepare(foundry.count_tokens_request(body, tuple(headers.items())))

    def count_result(self, raw: bytes) -> int:
        return COUNT_TOKENS_RESULT.decode(raw).input_tokens

    def adjust(self, failure: Failure, body: bytes) -> Failure:
        return failure


def endpoint_for(config: Config, credential: Credential) -> Endpoint | None:
    """The endpoint of ``config.provider``; None for the first party."""
    if config.provider == "bedrock":
        return BedrockEndpoint(config, credential)
    if config.provider == "vertex":
        return VertexEndpoint(config, credential)
    if config.provider == "foundry":
        return FoundryEndpoint(config)
    return None
