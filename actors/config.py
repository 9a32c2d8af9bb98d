"""Configuration: the one place that reads the environment (DESIGN principle 7).

``Config`` is built once from CLI flags and the reference client's environment variables
(``config_from_env``) and handed to everything else. Secrets are kept in ``Secret`` wrappers
whose ``repr`` never shows the value, and registered with the log redactor.

Environment variables read (first party):

- ``ANTHROPIC_API_KEY`` (sent as ``x-api-key``), ``ANTHROPIC_AUTH_TOKEN`` (sent as
  ``Authorization: Bearer``); both are sent when both are set, as the SDK does (wire.md 1.1).
- ``ANTHROPIC_BASE_URL`` (default ``https://api.anthropic.com``).
- ``ANTHROPIC_CUSTOM_HEADERS``: lines of ``Name: Value``, split on the first colon, lines
  without a colon skipped (reference-client.md 5.1).
- ``API_TIMEOUT_MS``: the upstream request timeout (default 600 000 ms, reference-client.md 5.1).
- ``CLAUDE_CODE_MAX_RETRIES``: retries after the first attempt (default 10, reference 1.1).
- ``ANTHROPIC_LOG=debug``: debug logging, as ``--debug``.
- ``SWITCHBOARD_ACCESS_TOKENS``: comma-separated tokens clients must present (none: no auth,
  and then the gateway refuses to listen on a non-loopback address unless ``--allow-no-auth``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Final

import msgspec

from protocol.errors import ConfigError

DEFAULT_BASE_URL: Final = "https://api.anthropic.com"
# reference-client.md 5.1: timeout = parseInt(API_TIMEOUT_MS || 600000).
DEFAULT_API_TIMEOUT: Final = 600.0
# PROTOCOL.md 1: the API's own request limit is 32 MiB, so no frame needs to be larger.
DEFAULT_MAX_FRAME_BYTES: Final = 32 * 1024 * 1024
# A session runs its queries concurrently; past this many, new ones are rejected so one
# client cannot take every upstream connection.
DEFAULT_MAX_QUERIES_PER_SESSION: Final = 32


class Secret(msgspec.Struct, frozen=True):
    """A credential. ``repr``/``str`` never show it; ``reveal()`` does, at the one use site."""

    value: str

    def reveal(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


class Config(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the gateway needs to know, built once."""

    host: str = "127.0.0.1"
    port: int = 0
    ledger_path: str | None = None
    debug: bool = False
    base_url: str = DEFAULT_BASE_URL
    api_key: Secret | None = None
    auth_token: Secret | None = None
    custom_headers: tuple[tuple[str, str], ...] = ()
    api_timeout: float = DEFAULT_API_TIMEOUT
    max_retries: int = 10
    access_tokens: tuple[Secret, ...] = ()
    allow_no_auth: bool = False
    use_emulator: bool = False
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    max_queries_per_session: int = DEFAULT_MAX_QUERIES_PER_SESSION
    retry_seed: int | None = None

    def secrets(self) -> list[str]:
        """Every secret value, for the log redactor."""
        found = [s.reveal() for s in (self.api_key, self.auth_token, *self.access_tokens) if s]
        found += [value for name, value in self.custom_headers if _is_secret_header(name)]
        return [s for s in found if s]


def _is_secret_header(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in ("auth", "key", "token", "secret", "cookie"))


def parse_custom_headers(raw: str) -> tuple[tuple[str, str], ...]:
    """``ANTHROPIC_CUSTOM_HEADERS``: ``Name: Value`` per line, split on the first colon."""
    headers: list[tuple[str, str]] = []
    for line in raw.replace("\r\n", "\n").split("\n"):
        name, sep, value = line.partition(":")
        if sep and name.strip():
            headers.append((name.strip(), value.strip()))
    return tuple(headers)


def _int_env(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def config_from_env(
    env: Mapping[str, str],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    ledger_path: str | None = None,
    debug: bool = False,
    allow_no_auth: bool = False,
) -> Config:
    """Build the Config from CLI values and the environment.

    Raises:
        ConfigError: a malformed value, or a non-loopback host without access tokens.
    """
    api_key = env.get("ANTHROPIC_API_KEY", "").strip()
    auth_token = env.get("ANTHROPIC_AUTH_TOKEN", "").strip()
    base_url = env.get("ANTHROPIC_BASE_URL", "").strip()
    tokens = tuple(
        Secret(t.strip()) for t in env.get("SWITCHBOARD_ACCESS_TOKENS", "").split(",") if t.strip()
    )
    if not tokens and not allow_no_auth and not is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {host} without access tokens: set SWITCHBOARD_ACCESS_TOKENS "
            "or pass --allow-no-auth"
        )
    timeout_ms = _int_env(env, "API_TIMEOUT_MS", int(DEFAULT_API_TIMEOUT * 1000))
    max_retries = _int_env(env, "CLAUDE_CODE_MAX_RETRIES", 10)
    if timeout_ms <= 0 or max_retries < 0:
        raise ConfigError("API_TIMEOUT_MS must be > 0 and CLAUDE_CODE_MAX_RETRIES >= 0")
    return Config(
        host=host,
        port=port,
        ledger_path=ledger_path,
        debug=debug or env.get("ANTHROPIC_LOG", "").strip().lower() == "debug",
        base_url=(base_url or DEFAULT_BASE_URL).rstrip("/"),
        api_key=Secret(api_key) if api_key else None,
        auth_token=Secret(auth_token) if auth_token else None,
        custom_headers=parse_custom_headers(env.get("ANTHROPIC_CUSTOM_HEADERS", "")),
        api_timeout=timeout_ms / 1000,
        max_retries=max_retries,
        access_tokens=tokens,
        allow_no_auth=allow_no_auth,
        # No credential and no base URL: nothing real to talk to, so use the built-in emulator.
        use_emulator=not (api_key or auth_token or base_url),
    )
