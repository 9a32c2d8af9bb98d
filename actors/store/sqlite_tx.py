"""One write transaction on an SQLite connection, the way every store of ours takes it.

``BEGIN IMMEDIATE`` takes the database's write lock before the first read, so a
read-then-write (a token's counters, a refresh token's rotation) cannot interleave with
another connection's, in this process or another (``serve --workers N``). The connection is
in autocommit mode (``isolation_level=None``), so the transaction is ours to end.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run the block in ``BEGIN IMMEDIATE`` ... ``COMMIT``; roll back on any exception
    (cancellation included) that leaves a transaction open, and re-raise it."""
    try:
        db.execute("BEGIN IMMEDIATE")
        yield db
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
