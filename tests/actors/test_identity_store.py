"""The users and their tokens (actors/access/identities.py) and ``switchboard users``."""

from __future__ import annotations

import concurrent.futures
import datetime
import io
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pg_testkit import database_text

from actors.access.identities import IdentityStore, Issued, SqliteIdentityStore, hash_password
from actors.access.identity_stores import open_identity_store
from actors.access.pg_identities import PgIdentityStore
from actors.cli import commands as cli
from actors.store.sqlite import MEMORY
from protocol.errors import ConfigError
from protocol.identity import Principal
from protocol.oauth import ACCESS_TOKEN_TTL, REFRESH_TOKEN_TTL

NOW = datetime.datetime(2026, 12, 7, 12, 0, tzinfo=datetime.UTC)
PASSWORD = "correct horse battery"


@pytest.fixture
def store(ledger_location: str) -> Iterator[IdentityStore]:
    """A store with the user ada, once per ledger: an SQLite file, a PostgreSQL database."""
    store = open_identity_store(ledger_location)
    store.add_user("ada", hash_password(PASSWORD), ("eng", "ml"), NOW)
    try:
        yield store
    finally:
        store.close()


def stored_text(store: IdentityStore) -> str:
    """Everything the store's database holds, as text."""
    if isinstance(store, SqliteIdentityStore):
        return "\n".join(store._db.iterdump())
    assert isinstance(store, PgIdentityStore)
    return database_text(store._url)


def later(seconds: float) -> datetime.datetime:
    return NOW + datetime.timedelta(seconds=seconds)


def test_a_password_is_kept_as_an_argon2id_hash_and_verified(store: IdentityStore) -> None:
    assert "$argon2id$" in stored_text(store) and PASSWORD not in stored_text(store)
    assert store.verify("ada", PASSWORD)
    assert not store.verify("ada", "wrong password")
    assert not store.verify("nobody", PASSWORD)


def test_an_issued_access_token_resolves_to_the_user_and_their_groups(store: IdentityStore) -> None:
    issued = store.issue("ada", NOW)
    assert issued is not None and issued.expires_in == ACCESS_TOKEN_TTL
    assert store.resolve(issued.access_token, later(10)) == Principal(user="ada", groups=("eng", "ml"))
    assert store.resolve(issued.refresh_token, later(10)) is None
    assert store.resolve(issued.access_token, later(ACCESS_TOKEN_TTL)) is None


def test_tokens_are_kept_only_as_hashes(store: IdentityStore) -> None:
    issued = store.issue("ada", NOW)
    assert issued is not None
    dump = stored_text(store)
    assert issued.access_token not in dump and issued.refresh_token not in dump


def test_refresh_rotates_and_the_old_refresh_token_is_used_up(store: IdentityStore) -> None:
    first = store.issue("ada", NOW)
    assert first is not None
    second = store.rotate(first.refresh_token, later(60))
    assert second is not None and second.refresh_token != first.refresh_token
    assert store.resolve(second.access_token, later(61)) == Principal(user="ada", groups=("eng", "ml"))


def test_a_refresh_token_used_twice_revokes_the_whole_sign_in(store: IdentityStore) -> None:
    first = store.issue("ada", NOW)
    assert first is not None
    second = store.rotate(first.refresh_token, later(60))
    assert second is not None
    assert store.rotate(first.refresh_token, later(120)) is None
    assert store.resolve(second.access_token, later(121)) is None
    assert store.rotate(second.refresh_token, later(122)) is None


def test_an_expired_refresh_token_is_refused(store: IdentityStore) -> None:
    issued = store.issue("ada", NOW)
    assert issued is not None
    assert store.rotate(issued.refresh_token, later(REFRESH_TOKEN_TTL)) is None


def test_disabling_a_user_revokes_their_tokens_and_refuses_new_ones(store: IdentityStore) -> None:
    issued = store.issue("ada", NOW)
    assert issued is not None
    assert store.disable("ada", later(1))
    assert store.resolve(issued.access_token, later(2)) is None
    assert store.rotate(issued.refresh_token, later(2)) is None
    assert store.issue("ada", later(3)) is None
    assert not store.verify("ada", PASSWORD)
    assert not store.disable("ada", later(4))


def test_set_groups_applies_to_tokens_already_issued(store: IdentityStore) -> None:
    issued = store.issue("ada", NOW)
    assert issued is not None
    assert store.set_groups("ada", ("ops",))
    assert store.resolve(issued.access_token, later(1)) == Principal(user="ada", groups=("ops",))
    assert not store.set_groups("nobody", ())


def test_revoke_ends_the_sign_in_and_an_unknown_token_is_no_error(store: IdentityStore) -> None:
    issued = store.issue("ada", NOW)
    assert issued is not None
    store.revoke("not-a-token", later(1))
    store.revoke(issued.refresh_token, later(1))
    assert store.resolve(issued.access_token, later(2)) is None


def test_a_user_name_is_unique_and_checked(store: IdentityStore) -> None:
    with pytest.raises(ConfigError):
        store.add_user("ada", hash_password(PASSWORD), (), NOW)
    with pytest.raises(ConfigError):
        store.add_user("a,b", hash_password(PASSWORD), (), NOW)
    with pytest.raises(ConfigError):
        store.add_user("bob", hash_password(PASSWORD), ("",), NOW)


def test_an_in_memory_store_keeps_users_and_tokens() -> None:
    store = SqliteIdentityStore.open(MEMORY)
    store.add_user("ada", hash_password(PASSWORD), ("eng",), NOW)
    issued = store.issue("ada", NOW)
    assert issued is not None
    assert store.resolve(issued.access_token, later(1)) == Principal(user="ada", groups=("eng",))


def test_an_unreachable_postgresql_ledger_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="cannot open the users of the ledger"):
        open_identity_store("postgresql://127.0.0.1:1/switchboard")


def test_two_stores_on_one_postgresql_ledger_share_users_and_tokens(pg_url: str) -> None:
    first, second = open_identity_store(pg_url), open_identity_store(pg_url)
    try:
        first.add_user("ada", hash_password(PASSWORD), ("eng",), NOW)
        assert second.verify("ada", PASSWORD)
        issued = second.issue("ada", NOW)
        assert issued is not None
        assert first.resolve(issued.access_token, later(1)) == Principal(user="ada", groups=("eng",))
        rotated = first.rotate(issued.refresh_token, later(2))
        assert rotated is not None
        assert second.rotate(issued.refresh_token, later(3)) is None
        assert first.resolve(rotated.access_token, later(4)) is None
    finally:
        first.close()
        second.close()


def test_a_refresh_token_presented_to_two_stores_at_once_rotates_once(ledger_location: str) -> None:
    first, second = open_identity_store(ledger_location), open_identity_store(ledger_location)
    try:
        first.add_user("ada", hash_password(PASSWORD), (), NOW)
        issued = first.issue("ada", NOW)
        assert issued is not None
        start = threading.Barrier(2)

        def rotate(store: IdentityStore) -> Issued | None:
            start.wait()
            return store.rotate(issued.refresh_token, later(1))

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            results = list(pool.map(rotate, (first, second)))
        assert sum(result is not None for result in results) == 1
    finally:
        first.close()
        second.close()


def run_cli(monkeypatch: pytest.MonkeyPatch, *argv: str, stdin: str = "") -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    cli.main(list(argv))


def test_switchboard_users_add_list_set_group_disable(
    ledger_location: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = ledger_location
    run_cli(monkeypatch, "users", "add", "ada", "--group", "eng", "--password-stdin", "--ledger", ledger, stdin=PASSWORD + "\n")
    run_cli(monkeypatch, "users", "set-group", "ada", "--group", "ops", "--group", "ml", "--ledger", ledger)
    run_cli(monkeypatch, "users", "list", "--ledger", ledger)
    assert capsys.readouterr().out.split() == ["ada", "ops,ml", "enabled"]
    run_cli(monkeypatch, "users", "disable", "ada", "--ledger", ledger)
    run_cli(monkeypatch, "users", "list", "--ledger", ledger)
    assert "disabled" in capsys.readouterr().out
    with pytest.raises(SystemExit) as ended:
        run_cli(monkeypatch, "users", "disable", "ada", "--ledger", ledger)
    assert ended.value.code == 1
    store = open_identity_store(ledger)
    try:
        assert [user.groups for user in store.users()] == [("ops", "ml")]
    finally:
        store.close()


def test_switchboard_users_add_refuses_a_short_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit) as ended:
        run_cli(monkeypatch, "users", "add", "ada", "--password-stdin", "--ledger", str(tmp_path / "l.sqlite3"), stdin="short\n")
    assert ended.value.code == 2


def test_serve_oauth_refuses_what_cannot_work(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for argv, said in (
        (["serve", "--oauth"], "--http-port"),
        (["serve", "--host", "0.0.0.0", "--http-port", "0", "--oauth"], "plain HTTP"),
        (["serve", "--http-port", "0", "--oauth", "--tls-cert", "cert.pem"], "go together"),
    ):
        with pytest.raises(SystemExit) as ended:
            run_cli(monkeypatch, *argv)
        assert ended.value.code == 2 and said in capsys.readouterr().err
