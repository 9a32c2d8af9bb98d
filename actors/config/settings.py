"""Configuration: the ``Config`` everything is handed, built once (docs/architecture.md 3.8).

``Config`` is built from CLI flags and the reference client's environment variables by
``config_from_env`` (actors/config/from_env.py, which lists the variables read) and handed to
everything else. Secrets are kept in ``Secret`` wrappers whose ``repr`` never shows the value,
and registered with the log redactor. Here too: the defaults, and where the cost ledger and the
bootstrap cache live (``ledger_file``, ``bootstrap_cache_file``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final
from urllib.parse import unquote, urlsplit

import msgspec

from actors.config.env import is_secret_header
from protocol.passthrough import RetryMode
from protocol.request_builder import BuildSettings

DEFAULT_BASE_URL: Final = "https://api.anthropic.com"
# docs/reference/reference-client.md 5.1: timeout = parseInt(API_TIMEOUT_MS || 600000).
DEFAULT_API_TIMEOUT: Final = 600.0
# docs/protocol.md 1: the API's own request limit is 32 MiB, so no frame needs to be larger.
DEFAULT_MAX_FRAME_BYTES: Final = 32 * 1024 * 1024
# docs/reference/reference-client.md 1.9: apiKeyHelper output is cached 5 min by default.
DEFAULT_KEY_HELPER_TTL: Final = 300.0
# docs/reference/reference-client.md 2.2: the watchdog is on by default with a 5-minute threshold.
DEFAULT_STREAM_IDLE_TIMEOUT: Final = 300.0
# docs/reference/reference-client.md 2.3: the non-streaming fallback's own timeout (300 s, under the API's
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
# issue 4: the provider the bootstrap API belongs to (docs/reference/reference-client.md 4: firstParty only),
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
    # issue 4: the bootstrap fetch at start (docs/reference/reference-client.md 4) runs only for the first
    # party, with a credential, and without CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC. The
    # ledger file is ``ledger_path``: None means ``ledger_file(config)`` picks it.
    disable_nonessential_traffic: bool = False
    provider: str = FIRST_PARTY
    # issue 6: the cloud providers (docs/reference/reference-client.md 5.2; docs/reference/wire.md 7 to 9). ``provider`` is
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
