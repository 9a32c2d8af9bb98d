"""Cloud provider credentials (issue 6): where they come from and how long they are good.

- Bedrock: ``AWS_BEARER_TOKEN_BEDROCK`` (``Authorization: Bearer``), else the standard AWS
  chain through botocore (environment, shared config and profiles, SSO, credential_process,
  container and instance metadata), whose keys the gateway signs each request with (SigV4,
  ``actors/upstream/endpoints.py``). ``CLAUDE_CODE_SKIP_BEDROCK_AUTH``: nothing (a signing proxy).
  botocore reads its own environment variables and files: that is what "the standard chain"
  means, so it is the one exception to "config.py reads the environment".
- Vertex: a Google access token from application default credentials through google-auth
  (``GOOGLE_APPLICATION_CREDENTIALS`` service account file, gcloud, the metadata server),
  as ``Authorization: Bearer``; the project is ``ANTHROPIC_VERTEX_PROJECT_ID`` or ADC's.
  ``CLAUDE_CODE_SKIP_VERTEX_AUTH``: no token. A 401 fetches a new token once.
- Foundry: ``ANTHROPIC_FOUNDRY_API_KEY``, else an Entra ID token through azure-identity's
  ``DefaultAzureCredential`` (scope ``https://cognitiveservices.azure.com/.default``), sent as
  ``Authorization: Bearer``; ``CLAUDE_CODE_SKIP_FOUNDRY_AUTH``: nothing.

The libraries are optional extras, imported here only when their provider is configured;
each blocking call runs in a worker thread. Errors: ``CredentialError``, never with a
secret in its message.

Lifetimes (docs/reference/reference-client.md 1.9, docs/reference/peers.md): AWS credentials are reused for at most an
hour; ones that expire are refreshed ``EARLY_REFRESH`` before their expiry, while the old
ones are still served (``Credential.refresh_at``), and reloaded in the foreground only past
``valid_until``.
"""

from __future__ import annotations

import datetime
import time
from typing import Any, Final

import trio

from actors.config.settings import Config
from actors.upstream.credentials import AwsKeys, Credential, CredentialError
from protocol.providers.foundry import ENTRA_SCOPE

# docs/reference/reference-client.md 1.9: memoized AWS credentials live one hour.
AWS_CREDENTIALS_TTL: Final = 3600.0
# botocore's own advisory window: refresh 15 minutes ahead of expiry...
EARLY_REFRESH: Final = 900.0
# ... and never send credentials within a minute of it (clock skew, the request's own time).
EXPIRY_MARGIN: Final = 60.0
# docs/reference/wire.md 8: the OAuth scope Vertex tokens are asked for.
GOOGLE_SCOPE: Final = "https://www.googleapis.com/auth/cloud-platform"
# Google access tokens live an hour; a new one is fetched 5 minutes ahead (google-auth's own
# threshold is under 4), while the current one is served.
GOOGLE_EARLY_REFRESH: Final = 300.0
# Entra ID tokens live about an hour too; the same 5-minute lead.
ENTRA_EARLY_REFRESH: Final = 300.0


def _missing_extra(provider: str, extra: str) -> CredentialError:
    return CredentialError(f"{provider} needs the optional dependency: pip install 'switchboard[{extra}]'")


def _load_aws_sync() -> tuple[AwsKeys, float | None]:
    """The standard chain's current keys and their remaining lifetime (seconds, None: no expiry)."""
    try:
        import botocore.exceptions
        import botocore.session
    except ImportError as exc:
        raise _missing_extra("Bedrock", "bedrock") from exc
    try:
        credentials: Any = botocore.session.Session().get_credentials()
        if credentials is None:
            raise CredentialError("no AWS credentials found in the standard chain")
        frozen = credentials.get_frozen_credentials()
    except botocore.exceptions.BotoCoreError as exc:
        raise CredentialError(f"AWS credentials unavailable: {type(exc).__name__}") from exc
    remaining: float | None = None
    expiry = getattr(credentials, "_expiry_time", None)
    if isinstance(expiry, datetime.datetime):
        remaining = (expiry - datetime.datetime.now(datetime.UTC)).total_seconds()
    keys = AwsKeys(access_key=frozen.access_key, secret_key=frozen.secret_key, token=frozen.token)
    return keys, remaining


async def _load_aws() -> tuple[AwsKeys, float | None]:
    """``_load_aws_sync`` in a worker thread (botocore may run a process or call STS)."""
    return await trio.to_thread.run_sync(_load_aws_sync, abandon_on_cancel=True)


async def load_bedrock_credential(config: Config) -> Credential:
    """Bedrock's credential now. A checkpoint (a worker thread for the AWS chain).

    Raises:
        CredentialError: no credentials, or botocore is not installed.
    """
    if config.skip_bedrock_auth:
        return Credential()
    if config.bedrock_bearer is not None:
        return Credential(bearer=config.bedrock_bearer.reveal())
    keys, remaining = await _load_aws()
    now = trio.current_time()
    ttl = AWS_CREDENTIALS_TTL if remaining is None else min(AWS_CREDENTIALS_TTL, remaining - EXPIRY_MARGIN)
    ttl = max(ttl, 0.0)
    early = AWS_CREDENTIALS_TTL if remaining is None else remaining - EARLY_REFRESH
    return Credential(aws=keys, valid_until=now + ttl, refresh_at=now + max(min(early, ttl), 0.0))


def _load_google_sync() -> tuple[str, float | None, str | None]:
    """A fresh access token from application default credentials (a service account file
    named by ``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's user credentials, the metadata
    server): the token, its remaining lifetime, and the ADC project."""
    try:
        import google.auth
        import google.auth.exceptions
        import google.auth.transport.requests
    except ImportError as exc:
        raise _missing_extra("Vertex AI", "vertex") from exc
    try:
        found: tuple[Any, Any] = google.auth.default(scopes=[GOOGLE_SCOPE])
        credentials, project = found
        credentials.refresh(google.auth.transport.requests.Request())
    except google.auth.exceptions.GoogleAuthError as exc:
        raise CredentialError(f"Google credentials unavailable: {type(exc).__name__}") from exc
    remaining: float | None = None
    expiry = credentials.expiry
    if isinstance(expiry, datetime.datetime):
        # google-auth keeps a naive UTC expiry.
        remaining = (expiry.replace(tzinfo=datetime.UTC) - datetime.datetime.now(datetime.UTC)).total_seconds()
    if not credentials.token:
        raise CredentialError("Google credentials gave no access token")
    return str(credentials.token), remaining, project if isinstance(project, str) else None


async def _load_google() -> tuple[str, float | None, str | None]:
    return await trio.to_thread.run_sync(_load_google_sync, abandon_on_cancel=True)


async def load_vertex_credential(config: Config) -> Credential:
    """Vertex's credential: a Google access token (and the project). A checkpoint.

    Raises:
        CredentialError: no credentials or no project, or google-auth is not installed.
    """
    if config.skip_vertex_auth:
        if config.vertex_project is None:
            raise CredentialError("ANTHROPIC_VERTEX_PROJECT_ID is required with CLAUDE_CODE_SKIP_VERTEX_AUTH")
        return Credential(project=config.vertex_project)
    token, remaining, adc_project = await _load_google()
    project = config.vertex_project or adc_project
    if project is None:
        raise CredentialError("no Vertex project: set ANTHROPIC_VERTEX_PROJECT_ID")
    now = trio.current_time()
    if remaining is None:
        return Credential(bearer=token, project=project)
    return Credential(
        bearer=token,
        project=project,
        valid_until=now + max(remaining - EXPIRY_MARGIN, 0.0),
        refresh_at=now + max(remaining - GOOGLE_EARLY_REFRESH, 0.0),
    )


def _load_entra_sync() -> tuple[str, float]:
    """An Entra ID token for the cognitive-services scope from ``DefaultAzureCredential``
    (environment, workload identity, managed identity, the Azure CLI...), and its remaining
    lifetime. A new credential object each time: a forced refresh must not hit its cache."""
    try:
        import azure.core.exceptions
        import azure.identity
    except ImportError as exc:
        raise _missing_extra("Foundry", "foundry") from exc
    try:
        with azure.identity.DefaultAzureCredential() as credential:
            token: Any = credential.get_token(ENTRA_SCOPE)
    except azure.core.exceptions.ClientAuthenticationError as exc:
        raise CredentialError(f"Entra ID token unavailable: {type(exc).__name__}") from exc
    return str(token.token), float(token.expires_on) - time.time()


async def _load_entra() -> tuple[str, float]:
    return await trio.to_thread.run_sync(_load_entra_sync, abandon_on_cancel=True)


async def load_foundry_credential(config: Config) -> Credential:
    """Foundry's credential: the API key, else an Entra ID token. A checkpoint.

    Raises:
        CredentialError: no Entra ID credential, or azure-identity is not installed.
    """
    if config.foundry_base_url is None:
        raise CredentialError("Foundry needs ANTHROPIC_FOUNDRY_RESOURCE or ANTHROPIC_FOUNDRY_BASE_URL")
    if config.skip_foundry_auth:
        return Credential()
    if config.foundry_api_key is not None:
        return Credential(api_key=config.foundry_api_key.reveal())
    token, remaining = await _load_entra()
    now = trio.current_time()
    return Credential(
        bearer=token,
        valid_until=now + max(remaining - EXPIRY_MARGIN, 0.0),
        refresh_at=now + max(remaining - ENTRA_EARLY_REFRESH, 0.0),
    )


async def load_cloud_credential(config: Config) -> Credential:
    """The credential of ``config.provider`` (a cloud one). A checkpoint.

    Raises:
        CredentialError: as the provider's loader.
    """
    loaders = {
        "bedrock": load_bedrock_credential,
        "vertex": load_vertex_credential,
        "foundry": load_foundry_credential,
    }
    loader = loaders.get(config.provider)
    if loader is None:
        raise CredentialError(f"provider {config.provider} is not supported yet")
    return await loader(config)



