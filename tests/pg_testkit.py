"""PostgreSQL for the tests (import as ``pg_testkit``; its fixtures are registered by
``tests/conftest.py``).

The server is the machine's own, on 127.0.0.1:5432 with trust authentication (``.ci/run``
starts it when it is down). ``pg_url`` gives each test a database of its own, created with a
random name and dropped at the end (``WITH (FORCE)``: a connection a failed test left open
does not keep it). Without a server the test is skipped, saying why, except under CI
(``CI=true``), where that is a failure: CI must test both stores.

``ledger_location`` runs a test once per store: an SQLite file and a PostgreSQL database.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

HOST = "127.0.0.1"
PORT = 5432
# Who may create databases: the server's superuser, else root (both trusted on this machine).
USERS = ("postgres", "root")


def admin_url(user: str, database: str = "postgres") -> str:
    return f"postgresql://{user}@{HOST}:{PORT}/{database}"


def find_server() -> tuple[str | None, str]:
    """The URL of a user that can create databases, or None and why not."""
    reasons = []
    for user in USERS:
        try:
            with psycopg.connect(admin_url(user), connect_timeout=3, autocommit=True) as conn:
                row = conn.execute("SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
                if row is not None and row[0]:
                    return user, ""
                reasons.append(f"{user} may not create databases")
        except psycopg.Error as exc:
            reasons.append(f"{user}: {str(exc).strip().splitlines()[0]}")
    return None, "; ".join(reasons)


@pytest.fixture(scope="session")
def pg_admin() -> str:
    """The PostgreSQL user that creates the tests' databases (skips or fails without one)."""
    user, why = find_server()
    if user is None:
        message = f"no PostgreSQL server at {HOST}:{PORT} to test the PostgreSQL ledger ({why})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; .ci/run should have started it")
        pytest.skip(message)
    return user


@pytest.fixture
def pg_url(pg_admin: str) -> Iterator[str]:
    """A fresh, empty database for this test; dropped afterwards."""
    name = f"switchboard_test_{secrets.token_hex(6)}"
    with psycopg.connect(admin_url(pg_admin), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"'.encode())
    try:
        yield admin_url(pg_admin, name)
    finally:
        with psycopg.connect(admin_url(pg_admin), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a durable ledger lives, once per store: an SQLite file, a PostgreSQL URL."""
    if request.param == "sqlite":
        return str(tmp_path / "ledger.sqlite3")
    url: str = request.getfixturevalue("pg_url")
    return url


def cluster() -> tuple[str, str] | None:
    """The Debian cluster (version, name) serving ``PORT``, if ``pg_lsclusters`` knows one."""
    if shutil.which("pg_lsclusters") is None:
        return None
    listing = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True, timeout=30, check=False)
    for line in listing.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] == str(PORT):
            return fields[0], fields[1]
    return None


def restart_cluster_or_skip() -> None:
    """Skip (fail under CI) unless this test may restart the cluster: ``pg_ctlcluster`` and root."""
    if cluster() is None or os.geteuid() != 0:
        reason = "restarting PostgreSQL needs pg_ctlcluster and root"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


def restart_cluster() -> None:
    """Restart the cluster serving ``PORT`` (``-m fast``: its connections are cut at once)."""
    found = cluster()
    assert found is not None
    subprocess.run(["pg_ctlcluster", "-m", "fast", *found, "restart"], check=True, timeout=60, capture_output=True)


def clear_ledger(url: str) -> None:
    """Remove the ledger's schema from a test database: the next store starts afresh."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS switchboard CASCADE")


def database_text(url: str) -> str:
    """Every row of the ledger's tables as text, to look for what must not be stored."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'switchboard'"
        ).fetchall()
        rows = []
        for (table,) in tables:
            rows += [str(row[0]) for row in conn.execute(f"SELECT t::text FROM switchboard.{table} t".encode())]
    return "\n".join(rows)
