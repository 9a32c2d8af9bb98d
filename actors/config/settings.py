"""Configuration: the one place that reads the environment (DESIGN principle 7).

``Config`` is built once from CLI flags and the reference client's environment variables
(``config_from_env``) and handed to everything else. Secrets are kept in ``Secret`` wrappers
whose ``repr`` never shows the value, and registered with the log redactor. Here too: the
cloud providers' variables, and where the cost ledger and the bootstrap cache live.

``config_from_env`` is handed the environment and passes it on to two helpers, which never
read ``os.environ`` themselves: ``actors.config.env`` (truthy/falsy switches, integers,
custom headers, proxies) and ``actors.config.request`` (issue 5's ``build_settings_from_env``).
Their public names are re-exported here, so ``actors.config.settings`` stays the one import.

Environment variables read (the main ones):

- ``ANTHROPIC_API_KEY`` (sent as ``x-api-key``), ``ANTHROPIC_AUTH_TOKEN`` (sent as
  ``Authorization: Bearer``); both are sent when both are set, as the SDK does (wire.md 1.1).
- ``ANTHROPIC_BASE_URL`` (default ``https://api.anthropic.com``).
- ``ANTHROPIC_CUSTOM_HEADERS``: lines of ``Name: Value``, split on the first colon, lines
  without a colon skipped (reference-client.md 5.1).
- ``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY`` (lower-case names win): the
  upstream proxies (``environment_proxies`` in ``actors.config.env``).
- ``API_TIMEOUT_MS``: the upstream request timeout (default 600 000 ms, reference-client.md 5.1).
- ``CLAUDE_CODE_MAX_RETRIES``: retries after the first attempt (default 10, reference 1.1).
- ``ANTHROPIC_LOG=debug``: debug logging, as ``--debug``.
- ``SWITCHBOARD_ACCESS_TOKENS``: comma-separated tokens clients must present (none: no auth,
  and then the gateway refuses to listen on a non-loopback address unless ``--allow-no-auth``).
- ``SWITCHBOARD_ADMIN_TOKENS``: comma-separated tokens that see every session on the
  dashboard's endpoints (``/v1/switchboard/...``, docs/protocol.md "Dashboard"); an access
  token sees only its own sessions there. An admin token is accepted there only: to send
  queries with it too, list it in ``SWITCHBOARD_ACCESS_TOKENS`` as well.
- ``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC`` (any value): no bootstrap fetch at start
  (reference-client.md 4).
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
from urllib.parse import unquote, urlsplit

import msgspec

from actors.config.env import (
    environment_proxies,
    int_env,
    is_falsy,
    is_secret_header,
    is_truthy,
    parse_custom_headers,
)
from actors.config.request import build_settings_from_env
from protocol.errors import ConfigError
from protocol.passthrough import RETRY_MODES, RetryMode
from protocol.providers import parse_routes
from protocol.request_builder import BuildSettings

DEFAULT_BASE_URL: Final = "https://api.anthropic.com"
# reference-client.md 5.1: timeout = parseInt(API_TIMEOUT_MS || 600000).
DEFAULT_API_TIMEOUT: Final = 600.0
# PROTOCOL.md 1: the API's own request limit is 32 MiB, so no frame needs to be larger.
DEFAULT_MAX_FRAME_BYTES: Final = 32 * 1024 * 1024
# reference-client.md 1.9: apiKeyHelper output is cached 5 min by default.
DEFAULT_KEY_HELPER_TTL: Final = 300.0
# reference-client.md 2.2: the watchdog is on by default with a 5-minute threshold.
DEFAULT_STREAM_IDLE_TIMEOUT: Final = 300.0
# reference-client.md 2.3: the non-streaming fallback's own timeout (300 s, under the API's
# 10-minute non-streaming limit), unless API_TIMEOUT_MS says otherwise.
DEFAULT_NONSTREAMING_TIMEOUT: Final = 300.0
# A client that takes no data for this long while frames wait has its queries aborted (and
# charged), through either door; a WebSocket connection is then closed (4408). Shorter than
# the upstream idle watchdog, which waits meanwhile: a stuck reader never turns into
# upstream timeouts and retries.
DEFAULT_SLOW_READER_TIMEOUT: Final = 60.0
# A graceful shutdown lets queries in flight run this long before it ends them with
# ``shutting_down`` (docs/protocol.md 3): most answers finish well within it, and it stays
# under the 30-60 s a load balancer or an orchestrator usually allows before SIGKILL.
DEFAULT_SHUTDOWN_GRACE: Final = 30.0
# Queries one gateway process runs at once (docs/protocol.md "Admission"); more wait in line.
# About one core's worth of paced streams (README "Performance": 256 streams keep a core at
# 81 % and add ~0.1 s to the first event; at 512 new queries silently queued for 5 s).
DEFAULT_MAX_QUERIES: Final = 256
# How long an HTTP request waits in that line before a 529 with retry-after: the SDKs retry a
# 529 by themselves, and a few seconds' wait is common in answers' own latency.
DEFAULT_ADMISSION_WAIT: Final = 10.0
# A session runs its queries concurrently; past this many, new ones are rejected so one
# client cannot take every upstream connection.
DEFAULT_MAX_QUERIES_PER_SESSION: Final = 32
# issue 4: the provider the bootstrap API belongs to (reference-client.md 4: firstParty only),
# and the ledger path that keeps no file.
FIRST_PARTY: Final = "firstParty"
MEMORY_LEDGER: Final = ":memory:"
# The URL schemes libpq takes: a ledger given so lives in PostgreSQL (actors/store/postgres.py).
POSTGRES_SCHEMES: Final = ("postgresql://", "postgres://")


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
    # Upstream proxies: (scheme, proxy URL) pairs and the NO_PROXY entries (``environment_proxies``).
    proxies: tuple[tuple[str, str], ...] = ()
    no_proxy: tuple[str, ...] = ()
    api_timeout: float = DEFAULT_API_TIMEOUT
    max_retries: int = 10
    access_tokens: tuple[Secret, ...] = ()
    # The dashboard's admin tokens (``SWITCHBOARD_ADMIN_TOKENS``): they see every session.
    admin_tokens: tuple[Secret, ...] = ()
    allow_no_auth: bool = False
    use_emulator: bool = False
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    max_queries_per_session: int = DEFAULT_MAX_QUERIES_PER_SESSION
    # Queries the process runs at once (0: no bound), and the HTTP door's wait for a slot.
    max_queries: int = DEFAULT_MAX_QUERIES
    admission_wait: float = DEFAULT_ADMISSION_WAIT
    slow_reader_timeout: float = DEFAULT_SLOW_READER_TIMEOUT
    # Seconds the queries in flight get to finish once a graceful shutdown begins
    # (``Gateway.shutdown``; SIGTERM/SIGINT for ``switchboard serve``).
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE
    retry_seed: int | None = None
    # issue 7: the Anthropic-compatible HTTP door (None: off; 0: any free port). Its request
    # body limit is ``max_frame_bytes``, the API's own 32 MiB.
    http_port: int | None = None
    # issue 15: the processes of ``serve --workers N`` (README.md "Deployment"). Above 1 this
    # process is one of them: its listeners share their ports (SO_REUSEPORT), its SQLite
    # ledger is shared (the parent holds its lock: actors/store/sqlite_shared.py).
    workers: int = 1
    # issue 3: retries, credentials, stream health
    api_key_helper: str | None = None
    api_key_helper_ttl: float = DEFAULT_KEY_HELPER_TTL
    oauth_token_file: str | None = None
    stream_idle_timeout: float | None = DEFAULT_STREAM_IDLE_TIMEOUT
    nonstreaming_fallback: bool = True
    nonstreaming_timeout: float = DEFAULT_NONSTREAMING_TIMEOUT
    unattended_retry: bool = False
    allow_persistent_queries: bool = False
    fallback_for_all_models: bool = False
    disable_fast_mode: bool = False
    # issue 4: the bootstrap fetch at start (reference-client.md 4) runs only for the first
    # party, with a credential, and without CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC. The
    # ledger file is ``ledger_path``: None means ``ledger_file(config)`` picks it.
    disable_nonessential_traffic: bool = False
    provider: str = FIRST_PARTY
    # issue 6: the cloud providers (reference-client.md 5.2; wire.md 7 to 9). ``provider`` is
    # the default one (CLAUDE_CODE_USE_BEDROCK > _VERTEX > _FOUNDRY > first party). AWS keys,
    # profiles and SSO are read by botocore's own chain, Google's by google-auth.
    bedrock_region: str = "us-east-1"
    bedrock_small_fast_region: str | None = None
    small_fast_model: str | None = None
    bedrock_base_url: str | None = None
    bedrock_bearer: Secret | None = None
    skip_bedrock_auth: bool = False
    vertex_project: str | None = None
    vertex_region: str = "us-east5"
    vertex_region_overrides: tuple[tuple[str, str], ...] = ()
    vertex_base_url: str | None = None
    skip_vertex_auth: bool = False
    foundry_base_url: str | None = None
    foundry_api_key: Secret | None = None
    skip_foundry_auth: bool = False
    # Side by side: model-id prefix -> provider (SWITCHBOARD_PROVIDER_ROUTES), longest first
    # wins; a model no route matches goes to ``provider``.
    provider_routes: tuple[tuple[str, str], ...] = ()
    # issue 5: request construction (models, betas, extra body, prompt caching), read once
    # by ``build_settings_from_env`` (actors/config/request.py); see protocol/request_builder.py.
    build: BuildSettings = BuildSettings()
    # While the cost ledger cannot commit (a full disk, an I/O error), new queries are refused
    # (``ledger_unavailable``) unless this is set: then they are served, each answer saying
    # its cost is not recorded (docs/protocol.md).
    ledger_fail_open: bool = False
    # The HTTP door (docs/protocol.md 2): who retries a request by default (``auto``: the
    # client, when it says it retries with ``x-stainless-retry-count``), and the tokens whose
    # requests get the reference construction.
    http_retries: RetryMode = "auto"
    construct_tokens: tuple[Secret, ...] = ()
    # issue 19: sign-in by the Claude Code gateway protocol (``--oauth``: users and the tokens
    # issued them, kept in the ledger; actors/doors/oauth.py), the URL clients reach the
    # gateway at (``--public-url``; default: the request's Host), and the HTTP door's TLS.
    oauth: bool = False
    public_url: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    allow_plain_http: bool = False
    # The Claude Code gateway protocol (README.md "Claude Code for a whole organisation"):
    # the organisation policy file (``--policy``, ``SWITCHBOARD_POLICY``; actors/access/policy.py)
    # and the OTLP collectors telemetry is forwarded to (``SWITCHBOARD_OTLP_FORWARD``).
    policy_path: str | None = None
    otlp_forward: tuple[str, ...] = ()

    def secrets(self) -> list[str]:
        """Every secret value, for the redactor of logs and of upstream error text
        (``actors.observe.log.Redactor``): credentials, secret custom headers, and the password of
        every configured URL (the base URLs, the proxies)."""
        found = [s.reveal() for s in (self.api_key, self.auth_token, *self.access_tokens, *self.construct_tokens, *self.admin_tokens) if s]
        found += [s.reveal() for s in (self.bedrock_bearer, self.foundry_api_key) if s]
        found += [value for name, value in self.custom_headers if is_secret_header(name)]
        urls = [self.base_url, self.bedrock_base_url, self.vertex_base_url, self.foundry_base_url]
        urls += [self.ledger_path] if self.ledger_path and is_postgres_url(self.ledger_path) else []
        urls += [url for _, url in self.proxies]
        urls += list(self.otlp_forward)
        for url in urls:
            # A password in any configured URL, as written and percent-decoded.
            password = urlsplit(url).password if url else None
            if password:
                found += [password, unquote(password)]
        return [s for s in found if s]


def default_ledger_path(env: Mapping[str, str]) -> str:
    """``$XDG_STATE_HOME/switchboard/ledger.sqlite3``, by default under ``~/.local/state``
    (the XDG spec: a relative ``XDG_STATE_HOME`` is invalid and ignored)."""
    state = env.get("XDG_STATE_HOME", "").strip()
    if not os.path.isabs(state):
        home = env.get("HOME", "").strip() or os.path.expanduser("~")
        state = os.path.join(home, ".local", "state")
    return os.path.join(state, "switchboard", "ledger.sqlite3")


def is_postgres_url(location: str) -> bool:
    """Whether a ledger location names a PostgreSQL database rather than an SQLite file."""
    return location.lower().startswith(POSTGRES_SCHEMES)


def redact_url(location: str) -> str:
    """A ledger location fit for a message: a URL's password replaced by ``***``."""
    if not is_postgres_url(location):
        return location
    parts = urlsplit(location)
    if parts.password is None:
        return location
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].partition(":")[0]
    return parts._replace(netloc=f"{user}:***@{netloc[2]}").geturl()


def ledger_file(config: Config) -> str:
    """The cost ledger's file: ``ledger_path`` when set (``":memory:"``: no file), else in
    memory for the built-in emulator (its made-up usage must not mix with real costs),
    else ``default_ledger_path``."""
    if config.ledger_path:
        return config.ledger_path
    return MEMORY_LEDGER if config.use_emulator else default_ledger_path(os.environ)


def bootstrap_cache_file(config: Config) -> str | None:
    """Where the last good bootstrap answer is kept: ``bootstrap.json`` next to the ledger
    (with a PostgreSQL ledger, in the directory of the default ledger file); None (no cache)
    with an in-memory ledger."""
    ledger = ledger_file(config)
    if ledger == MEMORY_LEDGER:
        return None
    if is_postgres_url(ledger):
        ledger = default_ledger_path(os.environ)
    return os.path.join(os.path.dirname(os.path.abspath(ledger)), "bootstrap.json")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# issue 6: reference-client.md 5.2, getVertexRegionForModel: each variable names the model
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
    """reference-client.md 5.1: Bedrock, else Vertex, else Foundry, else the first party."""
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
    api_key = env.get("ANTHROPIC_API_KEY", "").strip()
    auth_token = env.get("ANTHROPIC_AUTH_TOKEN", "").strip()
    base_url = env.get("ANTHROPIC_BASE_URL", "").strip()
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
    grace = _shutdown_grace(env) if shutdown_grace is None else shutdown_grace
    if not grace >= 0:  # also NaN
        raise ConfigError(f"the shutdown grace must be >= 0 seconds, got {grace:g}")
    limit, wait = _admission(env, max_queries, admission_wait)
    config = Config(
        host=host,
        port=port,
        ledger_path=ledger_path or env.get("SWITCHBOARD_LEDGER", "").strip() or None,
        debug=debug or env.get("ANTHROPIC_LOG", "").strip().lower() == "debug",
        base_url=(base_url or DEFAULT_BASE_URL).rstrip("/"),
        api_key=Secret(api_key) if api_key else None,
        auth_token=Secret(auth_token) if auth_token else None,
        custom_headers=parse_custom_headers(env.get("ANTHROPIC_CUSTOM_HEADERS", "")),
        proxies=proxies,
        no_proxy=no_proxy,
        api_timeout=timeout_ms / 1000,
        max_retries=max_retries,
        access_tokens=tokens,
        admin_tokens=admin_tokens,
        allow_no_auth=allow_no_auth,
        http_port=http_port,
        shutdown_grace=grace,
        max_queries=limit,
        admission_wait=wait,
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
        ledger_fail_open=ledger_fail_open or is_truthy(env.get("SWITCHBOARD_LEDGER_FAIL_OPEN")),
    )
    config = _with_http_door(_with_providers(config, env), env)
    # issue 5: request construction's settings, for the provider just chosen.
    return msgspec.structs.replace(config, build=build_settings_from_env(env, config.provider))
