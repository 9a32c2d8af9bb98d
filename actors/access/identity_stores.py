"""Which identity store a ledger's location names (actors/access/identities.py says what one
does): an SQLite file (or ``:memory:``), or a PostgreSQL URL, whose users and tokens every
gateway on that ledger shares (README.md "Claude Code for a whole organisation").
"""

from __future__ import annotations

from actors.access.identities import IdentityStore, SqliteIdentityStore


def open_identity_store(location: str) -> IdentityStore:
    """The users of the ledger at ``location`` (psycopg is imported only for a PostgreSQL
    one). Raises ConfigError when it cannot be opened."""
    from actors.config.settings import is_postgres_url

    if is_postgres_url(location):
        from actors.access.pg_identities import PgIdentityStore

        return PgIdentityStore.open(location)
    return SqliteIdentityStore.open(location)
