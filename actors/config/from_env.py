"""Reading the environment into a ``Config``: the one place that does (docs/architecture.md 3.8).

``config_from_env`` builds the ``Config`` (actors/config/settings.py) from CLI values and the
reference client's environment variables, the cloud providers' among them; ``with_sign_in``
adds sign-in and TLS. ``config_from_env`` is handed the environment and passes it on to two
helpers, which never read ``os.environ`` themselves: ``actors.config.env`` (truthy/falsy
switches, integers, custom headers, proxies) and ``actors.config.request`` (issue 5's
``build_settings_from_env``).

Environment variables read (the main ones):

- ``ANTHROPIC_API_KEY`` (sent as ``x-api-key``), ``ANTHROPIC_AUTH_TOKEN`` (sent as
  ``Authorization: Bearer``); both are sent when both are set, as the SDK does (docs/reference/wire.md 1.1).
- ``ANTHROPIC_BASE_URL`` (default ``https://api.anthropic.com``).
- ``ANTHROPIC_CUSTOM_HEADERS``: lines of ``Name: Value``, split on the first colon, lines
  without a colon skipped (docs/reference/reference-client.md 5.1).
- ``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY`` (lower-case names win): the
  upstream proxies (``environment_proxies`` in ``actors.config.env``).
- ``API_TIMEOUT_MS``: the upstream request timeout (default 600 000 ms, docs/reference/reference-client.md 5.1).
- ``CLAUDE_CODE_MAX_RETRIES``: retries after the first attempt (default 10, reference 1.1).
- ``ANTHROPIC_LOG=debug``: debug logging, as ``--debug``.
- ``SWITCHBOARD_ACCESS_TOKENS``: comma-separated tokens clients must present (none: no auth,
  and then the gateway refuses to listen on a non-loopback address unless ``--allow-no-auth``).
- ``SWITCHBOARD_ADMIN_TOKENS``: comma-separated tokens that see every session on the
  dashboard's endpoints (``/v1/switchboard/...``, docs/protocol.md "Dashboard"); an access
  token sees only its own sessions there. An admin token is accepted there only: to send
  queries with it too, list it in ``SWITCHBOARD_ACCESS_TOKENS`` as well.
- ``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC`` (any value): no bootstrap fetch at start
  (docs/reference/reference-client.md 4).
- issue 6, the cloud providers: ``CLAUDE_CODE_USE_BEDROCK`` / ``_VERTEX`` / ``_FOUNDRY``;
  Bedrock ``AWS_REGION``, ``AWS_DEFAULT_REGION``, ``ANTHROPIC_SMALL_FAST_MODEL_AWS_REGION``,
  ``ANTHROPIC_BEDROCK_BASE_URL``, ``AWS_BEARER_TOKEN_BEDROCK``, ``CLAUDE_CODE_SKIP_BEDROCK_AUTH``;
  Vertex ``ANTHROPIC_VERTEX_PROJECT_ID``, ``CLOUD_ML_REGION``, ``VERTEX_REGION_CLAUDE_*``,
  ``ANTHROPIC_VERTEX_BASE_URL``, ``CLAUDE_CODE_SKIP_VERTEX_AUTH``; Foundry
  ``ANTHROPIC_FOUNDRY_RESOURCE`` / ``_BASE_URL`` / ``_API_KEY``, ``CLAUDE_CODE_SKIP_FOUNDRY_AUTH``;
  and ``SWITCHBOARD_PROVIDER_ROUTES`` (``prefix=provider,...``): models routed to other providers.
- issue 5, request construction (``build_settings_from_env`` in ``actors.config.request``,
  the README's table): models (``ANTHROPIC_MODEL``, ``ANTHROPIC_DEFAULT_*_MODEL``,
  ``ANTHROPIC_SMALL_FAST_MODEL``, ...), betas (``ANTHROPIC_BETAS``, ...),
  ``CLAUDE_CODE_EXTRA_BODY``, prompt caching.
- ``SWITCHBOARD_SHUTDOWN_GRACE_S``: seconds the queries in flight get to finish after
  SIGTERM/SIGINT (``Config.shutdown_grace``, default 30; ``--shutdown-grace`` wins).
- ``SWITCHBOARD_MAX_QUERIES``: queries one gateway process runs at once, the others wait in
  line (``Config.max_queries``, default 256, 0: no bound; ``--max-queries`` wins), and
  ``SWITCHBOARD_ADMISSION_WAIT_S``: how long an HTTP request waits in that line before its
  529 (``Config.admission_wait``, default 10; ``--admission-wait`` wins).
- ``XDG_STATE_HOME`` (default ``~/.local/state``): where the cost ledger lives when
  neither ``--ledger`` nor ``SWITCHBOARD_LEDGER`` is given (``default_ledger_path``).
- ``SWITCHBOARD_LEDGER``, as ``--ledger`` (the flag wins): the cost ledger, an SQLite file or a
  PostgreSQL URL (``postgresql://...`` or ``postgres://...``, ``is_postgres_url``; README.md
  "Deployment").
- ``SWITCHBOARD_LEDGER_FAIL_OPEN`` (truthy), as ``--ledger-fail-open``: keep serving new
  queries while the cost ledger cannot commit (their ``done`` says ``cost_recorded: false``).
- ``SWITCHBOARD_POLICY`` (as ``--policy``, the flag wins): the organisation policy file, and
  ``SWITCHBOARD_OTLP_FORWARD``: comma-separated OTLP/HTTP collector base URLs (README.md
  "Claude Code for a whole organisation").
- The HTTP door (docs/protocol.md 2): ``SWITCHBOARD_HTTP_RETRIES`` (``auto``, ``gateway``,
  ``client``: who retries), ``SWITCHBOARD_CONSTRUCT_TOKENS`` (access tokens whose requests
  get the reference construction instead of going upstream as sent).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from typing import Final
from urllib.parse import urlsplit

import msgspec

from actors.config.env import (
    environment_proxies,
    int_env,
    is_falsy,
    is_truthy,
    parse_custom_headers,
)
from actors.config.request import build_settings_from_env
from actors.config.settings import (
    DEFAULT_ADMISSION_WAIT,
    DEFAULT_API_TIMEOUT,
    DEFAULT_BASE_URL,
    DEFAULT_KEY_HELPER_TTL,
    DEFAULT_MAX_QUERIES,
    DEFAULT_NONSTREAMING_TIMEOUT,
    DEFAULT_SHUTDOWN_GRACE,
    DEFAULT_STREAM_IDLE_TIMEOUT,
    FIRST_PARTY,
    Config,
    Secret,
)
from protocol.errors import ConfigError
from protocol.passthrough import RETRY_MODES
from protocol.providers import parse_routes


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# issue 6: docs/reference/reference-client.md 5.2, getVertexRegionForModel: each variable names the model
# prefix it covers; the longest matching prefix wins (most specific first).
VERTEX_REGION_VARIABLES: Final = (
    ("VERTEX_REGION_CLAUDE_HAIKU_4_5", "claude-haiku-4-5"),
    ("VERTEX_REGION_CLAUDE_3_5_HAIKU", "claude-3-5-haiku"),
    ("VERTEX_REGION_CLAUDE_3_5_SONNET", "claude-3-5-sonnet"),
    ("VERTEX_REGION_CLAUDE_3_7_SONNET", "claude-3-7-sonnet"),
    ("VERTEX_REGION_CLAUDE_4_1_OPUS", "claude-opus-4-1"),
    ("VERTEX_REGION_CLAUDE_4_0_OPUS", "claude-opus-4"),
    ("VERTEX_REGION_CLAUDE_4_6_SONNET", "claude-sonnet-4-6"),
    ("VERTEX_REGION_CLAUDE_4_5_SONNET", "claude-sonnet-4-5"),
    ("VERTEX_REGION_CLAUDE_4_0_SONNET", "claude-sonnet-4"),
)


def select_provider(env: Mapping[str, str]) -> str:
    """docs/reference/reference-client.md 5.1: Bedrock, else Vertex, else Foundry, else the first party."""
    for variable, provider in (
        ("CLAUDE_CODE_USE_BEDROCK", "bedrock"),
        ("CLAUDE_CODE_USE_VERTEX", "vertex"),
        ("CLAUDE_CODE_USE_FOUNDRY", "foundry"),
    ):
        if is_truthy(env.get(variable)):
            return provider
    return FIRST_PARTY


def _with_providers(config: Config, env: Mapping[str, str]) -> Config:
    """The issue-6 fields: the provider and each provider's own variables."""

    def get(name: str) -> str | None:
        return env.get(name, "").strip() or None

    provider = select_provider(env)
    bearer = get("AWS_BEARER_TOKEN_BEDROCK")
    foundry_key = get("ANTHROPIC_FOUNDRY_API_KEY")
    resource = get("ANTHROPIC_FOUNDRY_RESOURCE")
    foundry_url = get("ANTHROPIC_FOUNDRY_BASE_URL")
    if resource and foundry_url:
        raise ConfigError("ANTHROPIC_FOUNDRY_RESOURCE and ANTHROPIC_FOUNDRY_BASE_URL are mutually exclusive")
    if resource:
        foundry_url = f"https://{resource}.services.ai.azure.com/anthropic"
    overrides = sorted(
        ((prefix, region) for name, prefix in VERTEX_REGION_VARIABLES if (region := get(name))),
        key=lambda pair: -len(pair[0]),
    )
    try:
        routes = parse_routes(env.get("SWITCHBOARD_PROVIDER_ROUTES", ""))
    except ValueError as exc:
        raise ConfigError(f"SWITCHBOARD_PROVIDER_ROUTES: {exc}") from exc
    return msgspec.structs.replace(
        config,
        provider=provider,
        provider_routes=routes,
        # A cloud provider is something real to talk to.
        use_emulator=config.use_emulator and provider == FIRST_PARTY,
        bedrock_region=get("AWS_REGION") or get("AWS_DEFAULT_REGION") or "us-east-1",
        bedrock_small_fast_region=get("ANTHROPIC_SMALL_FAST_MODEL_AWS_REGION"),
        small_fast_model=get("ANTHROPIC_SMALL_FAST_MODEL"),
        bedrock_base_url=(get("ANTHROPIC_BEDROCK_BASE_URL") or "").rstrip("/") or None,
        bedrock_bearer=Secret(bearer) if bearer else None,
        skip_bedrock_auth=is_truthy(env.get("CLAUDE_CODE_SKIP_BEDROCK_AUTH")),
        vertex_project=get("ANTHROPIC_VERTEX_PROJECT_ID"),
        vertex_region=get("CLOUD_ML_REGION") or "us-east5",
        vertex_region_overrides=tuple(overrides),
        vertex_base_url=(get("ANTHROPIC_VERTEX_BASE_URL") or "").rstrip("/") or None,
        skip_vertex_auth=is_truthy(env.get("CLAUDE_CODE_SKIP_VERTEX_AUTH")),
        foundry_base_url=foundry_url.rstrip("/") if foundry_url else None,
        foundry_api_key=Secret(foundry_key) if foundry_key else None,
        skip_foundry_auth=is_truthy(env.get("CLAUDE_CODE_SKIP_FOUNDRY_AUTH")),
    )


def _shutdown_grace(env: Mapping[str, str]) -> float:
    """``SWITCHBOARD_SHUTDOWN_GRACE_S`` in seconds (a decimal number), the default when unset."""
    raw = env.get("SWITCHBOARD_SHUTDOWN_GRACE_S", "").strip()
    if not raw:
        return DEFAULT_SHUTDOWN_GRACE
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigError(f"SWITCHBOARD_SHUTDOWN_GRACE_S must be a number of seconds, got {raw!r}") from exc


def _admission(
    env: Mapping[str, str], max_queries: int | None, admission_wait: float | None
) -> tuple[int, float]:
    """``(max_queries, admission_wait)``: each flag wins over its environment variable."""
    limit = int_env(env, "SWITCHBOARD_MAX_QUERIES", DEFAULT_MAX_QUERIES) if max_queries is None else max_queries
    if limit < 0:
        raise ConfigError(f"the maximum of queries in flight must be >= 0 (0: no bound), got {limit}")
    if admission_wait is None:
        raw = env.get("SWITCHBOARD_ADMISSION_WAIT_S", "").strip()
        try:
            admission_wait = float(raw) if raw else DEFAULT_ADMISSION_WAIT
        except ValueError as exc:
            raise ConfigError(f"SWITCHBOARD_ADMISSION_WAIT_S must be a number of seconds, got {raw!r}") from exc
    if not 0 <= admission_wait < float("inf"):  # also NaN
        raise ConfigError(f"the admission wait must be a finite number of seconds >= 0, got {admission_wait:g}")
    return limit, admission_wait


def _with_http_door(config: Config, env: Mapping[str, str]) -> Config:
    retries = env.get("SWITCHBOARD_HTTP_RETRIES", "").strip().lower() or "auto"
    if retries not in RETRY_MODES:
        raise ConfigError(f"SWITCHBOARD_HTTP_RETRIES must be one of {', '.join(RETRY_MODES)}, got {retries!r}")
    raw = env.get("SWITCHBOARD_CONSTRUCT_TOKENS", "")
    construct = tuple(Secret(t.strip()) for t in raw.split(",") if t.strip())
    forward = tuple(u.strip() for u in env.get("SWITCHBOARD_OTLP_FORWARD", "").split(",") if u.strip())
    for url in forward:
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            raise ConfigError("SWITCHBOARD_OTLP_FORWARD: each entry must be an http(s) URL with a host")
    return msgspec.structs.replace(
        config,
        http_retries=retries,
        construct_tokens=construct,
        policy_path=env.get("SWITCHBOARD_POLICY", "").strip() or None,
        otlp_forward=forward,
    )


def with_sign_in(
    config: Config,
    *,
    oauth: bool = False,
    public_url: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    allow_plain_http: bool = False,
) -> Config:
    """``config`` with sign-in and TLS (README.md "Claude Code for a whole organisation").

    Raises:
        ConfigError: only one of the certificate and key, a file that cannot be read, or
            sign-in over plain HTTP on a non-loopback host without ``allow_plain_http``
            (bearer tokens and passwords would cross the network in clear).
    """
    if (tls_cert is None) != (tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together")
    for path in (tls_cert, tls_key):
        if path is not None and not os.access(path, os.R_OK):
            raise ConfigError(f"cannot read {path!r}")
    if public_url is not None and urlsplit(public_url).scheme not in ("http", "https"):
        raise ConfigError(f"--public-url must be an http(s) URL, got {public_url!r}")
    if oauth and tls_cert is None and not allow_plain_http and not is_loopback(config.host):
        raise ConfigError(
            f"refusing sign-in over plain HTTP on {config.host}: pass --tls-cert and --tls-key "
            "(or --allow-plain-http behind a proxy that terminates TLS)"
        )
    return msgspec.structs.replace(
        config, oauth=oauth, public_url=public_url, tls_cert=tls_cert, tls_key=tls_key, allow_plain_http=allow_plain_http
    )


def config_from_env(
    env: Mapping[str, str],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    ledger_path: str | None = None,
    debug: bool = False,
    allow_no_auth: bool = False,
    http_port: int | None = None,
    shutdown_grace: float | None = None,
    ledger_fail_open: bool = False,
    max_queries: int | None = None,
    admission_wait: float | None = None,
    oauth: bool = False,
) -> Config:
    """Build the Config from CLI values and the environment (``oauth``: signed-in users are
    the access control, so a non-loopback host needs no access tokens).

    ``shutdown_grace`` (``--shutdown-grace``) wins over ``SWITCHBOARD_SHUTDOWN_GRACE_S``,
    ``ledger_path`` (``--ledger``) over ``SWITCHBOARD_LEDGER``,
    ``max_queries`` over ``SWITCHBOARD_MAX_QUERIES``, ``admission_wait`` over
    ``SWITCHBOARD_ADMISSION_WAIT_S``.

    Raises:
        ConfigError: a malformed value, or a non-loopback host without access tokens.
    """
    tokens = tuple(
        Secret(t.strip()) for t in env.get("SWITCHBOARD_ACCESS_TOKENS", "").split(",") if t.strip()
    )
    admin_tokens = tuple(
        Secret(t.strip()) for t in env.get("SWITCHBOARD_ADMIN_TOKENS", "").split(",") if t.strip()
    )
    if not tokens and not allow_no_auth and not oauth and not is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {host} without access tokens: set SWITCHBOARD_ACCESS_TOKENS "
            "or pass --allow-no-auth"
        )
    upstream = _upstream(env)
    grace = _shutdown_grace(env) if shutdown_grace is None else shutdown_grace
    if not grace >= 0:  # also NaN
        raise ConfigError(f"the shutdown grace must be >= 0 seconds, got {grace:g}")
    limit, wait = _admission(env, max_queries, admission_wait)
    config = msgspec.structs.replace(
        upstream,
        host=host,
        port=port,
        ledger_path=ledger_path or env.get("SWITCHBOARD_LEDGER", "").strip() or None,
        debug=debug or env.get("ANTHROPIC_LOG", "").strip().lower() == "debug",
        access_tokens=tokens,
        admin_tokens=admin_tokens,
        allow_no_auth=allow_no_auth,
        http_port=http_port,
        shutdown_grace=grace,
        max_queries=limit,
        admission_wait=wait,
        ledger_fail_open=ledger_fail_open or is_truthy(env.get("SWITCHBOARD_LEDGER_FAIL_OPEN")),
    )
    config = _with_http_door(_with_providers(config, env), env)
    # issue 5: request construction's settings, for the provider just chosen.
    return msgspec.structs.replace(config, build=build_settings_from_env(env, config.provider))


def _upstream(env: Mapping[str, str]) -> Config:
    """A Config with the upstream's fields read (credentials, base URL, custom headers,
    proxies, timeout and retries; issue 3's key helper, token file and stream health), the
    others at their defaults for ``config_from_env`` to fill."""
    api_key = env.get("ANTHROPIC_API_KEY", "").strip()
    auth_token = env.get("ANTHROPIC_AUTH_TOKEN", "").strip()
    base_url = env.get("ANTHROPIC_BASE_URL", "").strip()
    timeout_ms = int_env(env, "API_TIMEOUT_MS", int(DEFAULT_API_TIMEOUT * 1000))
    max_retries = int_env(env, "CLAUDE_CODE_MAX_RETRIES", 10)
    if timeout_ms <= 0 or max_retries < 0:
        raise ConfigError("API_TIMEOUT_MS must be > 0 and CLAUDE_CODE_MAX_RETRIES >= 0")
    helper = env.get("SWITCHBOARD_API_KEY_HELPER", "").strip() or None
    token_file = env.get("SWITCHBOARD_OAUTH_TOKEN_FILE", "").strip() or None
    helper_ttl_ms = int_env(env, "CLAUDE_CODE_API_KEY_HELPER_TTL_MS", int(DEFAULT_KEY_HELPER_TTL * 1000))
    idle_ms = int_env(env, "CLAUDE_STREAM_IDLE_TIMEOUT_MS", int(DEFAULT_STREAM_IDLE_TIMEOUT * 1000))
    watchdog_off = is_falsy(env.get("CLAUDE_ENABLE_STREAM_WATCHDOG"))
    proxies, no_proxy = environment_proxies(env)
    return Config(
        base_url=(base_url or DEFAULT_BASE_URL).rstrip("/"),
        api_key=Secret(api_key) if api_key else None,
        auth_token=Secret(auth_token) if auth_token else None,
        custom_headers=parse_custom_headers(env.get("ANTHROPIC_CUSTOM_HEADERS", "")),
        proxies=proxies,
        no_proxy=no_proxy,
        api_timeout=timeout_ms / 1000,
        max_retries=max_retries,
        # No credential and no base URL: nothing real to talk to, so use the built-in emulator.
        use_emulator=not (api_key or auth_token or base_url or helper or token_file),
        api_key_helper=helper,
        api_key_helper_ttl=max(helper_ttl_ms, 0) / 1000,
        oauth_token_file=token_file,
        stream_idle_timeout=None if watchdog_off or idle_ms <= 0 else idle_ms / 1000,
        nonstreaming_fallback=not env.get("CLAUDE_CODE_DISABLE_NONSTREAMING_FALLBACK", "").strip(),
        nonstreaming_timeout=timeout_ms / 1000 if "API_TIMEOUT_MS" in env else DEFAULT_NONSTREAMING_TIMEOUT,
        unattended_retry=is_truthy(env.get("CLAUDE_CODE_UNATTENDED_RETRY")),
        allow_persistent_queries=is_truthy(env.get("SWITCHBOARD_ALLOW_PERSISTENT_RETRY")),
        fallback_for_all_models=bool(env.get("FALLBACK_FOR_ALL_PRIMARY_MODELS", "").strip()),
        disable_fast_mode=is_truthy(env.get("CLAUDE_CODE_DISABLE_FAST_MODE")),
        disable_nonessential_traffic=bool(env.get("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "").strip()),
    )
