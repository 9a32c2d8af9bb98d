"""Structured logging to stderr, with every known secret redacted.

One line per record: ``ts level logger message key=value ...``. ``Redactor`` replaces each
registered secret (``Config.secrets()``) and anything shaped like an API key, a bearer
token or the password of a URL (``scheme://user:password@host``) with ``***``.
``RedactingFilter`` applies it to a record's message and arguments; it is installed on the
handler so that library loggers (httpx, httpcore) are covered too. The gateway applies the
same ``Redactor`` to upstream error text before a client sees it (``actors.stream_relay``).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Final

# Shapes of credentials that must never reach a log even when not registered: Anthropic keys,
# bearer tokens in header dumps, x-api-key header values, the password in a URL's userinfo.
_PATTERNS: Final = re.compile(
    r"sk-ant-[A-Za-z0-9_\-]+|(?i:bearer\s+)[A-Za-z0-9._~+/=\-]+|(?i:x-api-key['\"]?\s*[:=,]\s*['\"]?)[^'\"\s,)]+"
    r"|(?<=://)(?P<user>[^/?#@\s:]*):[^/?#@\s]+@"
)


class Redactor:
    """Replaces registered secrets (values shorter than 4 characters are not: they would mask
    ordinary text) and the known shapes of credentials with ``***``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return _PATTERNS.sub(_mask, text)


class RedactingFilter(logging.Filter):
    """Rewrites records so that no secret survives: registered values and known shapes."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.redact = Redactor(secrets).redact

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redact(record.getMessage())
        record.args = None
        return True


def _mask(match: re.Match[str]) -> str:
    user = match.group("user")
    if user is not None:
        # A URL's userinfo: the user name stays, the password goes.
        return user + ":***@"
    text = match.group(0)
    lowered = text.lower()
    if lowered.startswith("bearer"):
        return text[: len("bearer ")] + "***"
    if lowered.startswith("x-api-key"):
        cut = max(text.rfind(c) for c in ":=,") + 1
        return text[:cut] + " ***"
    return "***"


# The HTTP and WebSocket libraries' loggers: a line per header and frame, too much for
# ``--debug`` alone (which logs one line per upstream attempt on ``switchboard.upstream``).
HTTP_LOGGERS: Final = ("httpx", "httpcore", "hpack", "trio-websocket")


def configure_logging(
    *, debug: bool, secrets: Iterable[str] = (), environ: Mapping[str, str] = os.environ, label: str = ""
) -> None:
    """Send log lines to stderr; debug turns on the actors' debug logs, and the HTTP
    client's internals too when ``SWITCHBOARD_DEBUG_HTTP=1`` (README "Configuration").
    ``label``: put in every line (``[worker 2]`` for ``serve --workers N``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter(secrets))
    prefix = f"[{label}] " if label else ""
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s %(levelname)s {prefix}%(name)s %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    http_debug = debug and environ.get("SWITCHBOARD_DEBUG_HTTP", "").strip() == "1"
    for noisy in HTTP_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.DEBUG if http_debug else logging.WARNING)
