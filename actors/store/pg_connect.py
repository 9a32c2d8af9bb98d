"""How the PostgreSQL modules reach a ledger: the libpq connection string of a URL with the
gateway's defaults (``conninfo``: connect timeout, keepalives), each new connection's settings
(UTC, ``STATEMENT_TIMEOUT``), and a psycopg error in one line (``message``), never with the
URL's password.
"""

from __future__ import annotations

from typing import Final

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow
from psycopg_pool import PoolTimeout

from actors.config.settings import redact_url
from protocol.errors import ConfigError

# Connecting at start, and each reconnection attempt: a server that does not answer within
# this long is down as far as the ledger is concerned (libpq's connect_timeout; a URL that
# sets its own wins).
CONNECT_TIMEOUT: Final = 5
# A statement that runs longer fails (the server's statement_timeout): a stuck lock or an
# overloaded server fails one commit, which is retried, instead of holding the ledger.
STATEMENT_TIMEOUT: Final = "10s"
# libpq settings added to the URL unless it sets them: keepalives notice a server that
# vanished without closing the connection; tcp_user_timeout bounds unacknowledged sends.
_CONNINFO_DEFAULTS: Final = {
    "connect_timeout": str(CONNECT_TIMEOUT),
    "application_name": "switchboard",
    "keepalives_idle": "15",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "20000",
}


def conninfo(url: str) -> str:
    """The libpq connection string for ``url``, with ``_CONNINFO_DEFAULTS`` where it sets none.

    Raises:
        ConfigError: ``url`` is not a valid PostgreSQL URL.
    """
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error as exc:
        raise ConfigError(f"the cost ledger {redact_url(url)} is not a valid PostgreSQL URL: {message(exc)}") from exc
    for key, value in _CONNINFO_DEFAULTS.items():
        params.setdefault(key, value)
    return make_conninfo("", **params)


def message(exc: BaseException) -> str:
    """A psycopg error in one line (libpq's own text spans lines)."""
    if isinstance(exc, PoolTimeout):
        return f"the PostgreSQL server cannot be reached ({exc})"
    return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__


def _configure(conn: psycopg.Connection[TupleRow]) -> None:
    """Each new connection of the pool: UTC timestamps, bounded statements."""
    conn.execute("SET TIME ZONE 'UTC'")
    conn.execute(f"SET statement_timeout = '{STATEMENT_TIMEOUT}'")
