"""First-party credential sources: a static key or token, a key-helper command, an OAuth
token file. Each loads a ``Credential``; the ClientPool decides when (reference 1.9).

- static: ``ANTHROPIC_API_KEY`` (``x-api-key``) and/or ``ANTHROPIC_AUTH_TOKEN`` (Bearer);
  reloading it gives the same value, so a 401 on it is final.
- key helper (``SWITCHBOARD_API_KEY_HELPER``, a shell command printing the key): its output
  is cached for ``CLAUDE_CODE_API_KEY_HELPER_TTL_MS`` (5 min default) and the command is
  run again after a 401.
- OAuth token file (``SWITCHBOARD_OAUTH_TOKEN_FILE``): JSON with ``accessToken`` (and
  optionally ``expiresAt`` in epoch ms), either at the top level or under ``claudeAiOauth``
  as the reference client stores it; re-read after a 401, or once it is within 5 minutes of
  expiry. Sent as Bearer with the ``oauth-2025-04-20`` beta (docs/reference/wire.md 1.1).

Errors: a source that cannot load raises ``CredentialError``; the message never includes a
credential.
"""

from __future__ import annotations

import functools
import subprocess
import time
from typing import Final

import msgspec
import trio

from actors.config.settings import Config
from protocol.betas import OAUTH
from protocol.bounded_json import BoundedDecoder
from protocol.errors import SwitchboardError

# docs/reference/reference-client.md 1.9: an OAuth token counts as expired 5 minutes before expiresAt.
OAUTH_EXPIRY_MARGIN: Final = 300.0
# A key helper that hangs must not hang every request behind it.
HELPER_TIMEOUT: Final = 30.0


class CredentialError(SwitchboardError):
    """A credential source could not produce a credential."""


class AwsKeys(msgspec.Struct, frozen=True, kw_only=True):
    """issue 6: AWS keys a request is signed with (SigV4); never on the wire themselves."""

    access_key: str
    secret_key: str
    token: str | None = None

    def __repr__(self) -> str:
        return f"AwsKeys(access_key={self.access_key!r}, secret_key='***')"


class Credential(msgspec.Struct, frozen=True, kw_only=True):
    """What goes on the wire, and until when it may be reused (trio time; None: forever).

    issue 6: ``aws`` keys sign each request instead of a header; ``refresh_at`` (before
    ``valid_until``) starts a background refresh while this credential is still served.
    """

    api_key: str | None = None
    bearer: str | None = None
    oauth: bool = False
    valid_until: float | None = None
    aws: AwsKeys | None = None
    refresh_at: float | None = None
    project: str | None = None

    def headers(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        if self.api_key is not None:
            out.append(("x-api-key", self.api_key))
        if self.bearer is not None:
            out.append(("authorization", f"Bearer {self.bearer}"))
        if self.oauth:
            out.append(("anthropic-beta", OAUTH))
        return out


class _TokenFile(msgspec.Struct):
    accessToken: str
    expiresAt: float | None = None


class _WrappedTokenFile(msgspec.Struct):
    claudeAiOauth: _TokenFile


async def load_first_party_credential(config: Config) -> Credential:
    """Load the configured first-party credential now (the clouds': actors/upstream/cloud_credentials.py).
    A checkpoint.

    Raises:
        CredentialError: the helper failed or printed nothing, or the token file is unusable.
    """
    if config.api_key_helper is not None:
        return await _run_helper(config.api_key_helper, config.api_key_helper_ttl)
    if config.oauth_token_file is not None:
        return await _read_token_file(config.oauth_token_file)
    return Credential(
        api_key=config.api_key.reveal() if config.api_key else None,
        bearer=config.auth_token.reveal() if config.auth_token else None,
    )


def _run_helper_sync(command: str) -> tuple[int, bytes]:
    result = subprocess.run(command, shell=True, capture_output=True, check=False, timeout=HELPER_TIMEOUT)
    return result.returncode, result.stdout


async def _run_helper(command: str, ttl: float) -> Credential:
    # In a thread with a real-time timeout: a helper is an outside process, so its deadline
    # belongs to the wall clock, not to trio's (which a test's MockClock may jump).
    try:
        returncode, stdout = await trio.to_thread.run_sync(
            functools.partial(_run_helper_sync, command), abandon_on_cancel=True
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CredentialError(f"API key helper could not run: {type(exc).__name__}") from exc
    key = stdout.decode("utf-8", "replace").strip()
    if returncode != 0 or not key:
        raise CredentialError(f"API key helper exited with {returncode} and no key")
    return Credential(api_key=key, valid_until=trio.current_time() + ttl)


_WRAPPED_TOKEN_FILE: Final = BoundedDecoder(_WrappedTokenFile)
_TOKEN_FILE: Final = BoundedDecoder(_TokenFile)


async def _read_token_file(path: str) -> Credential:
    try:
        raw = await trio.Path(path).read_bytes()
    except OSError as exc:
        raise CredentialError(f"OAuth token file unreadable: {type(exc).__name__}") from exc
    token: _TokenFile
    try:
        token = _WRAPPED_TOKEN_FILE.decode(raw).claudeAiOauth
    except msgspec.DecodeError:
        try:
            token = _TOKEN_FILE.decode(raw)
        except msgspec.DecodeError as exc:
            raise CredentialError("OAuth token file has no accessToken") from exc
    valid_until = None
    if token.expiresAt is not None:
        # Wall-clock expiry turned into a trio deadline: re-read that long from now.
        remaining = token.expiresAt / 1000 - time.time() - OAUTH_EXPIRY_MARGIN
        valid_until = trio.current_time() + max(remaining, 0.0)
    return Credential(bearer=token.accessToken, oauth=True, valid_until=valid_until)

