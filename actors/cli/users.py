"""``switchboard users``: the users who sign in to the gateway (``serve --oauth``), kept in the
ledger with their groups (``actors.access.identities``; README.md "Claude Code for a whole
organisation").

::

    switchboard users add NAME [--group G ...] [--password-stdin] [--ledger PATH|postgresql://...]
    switchboard users list [--json]
    switchboard users disable NAME
    switchboard users set-group NAME [--group G ...]

``add`` asks for the password twice on the terminal, or reads one line from stdin with
``--password-stdin`` (scripts); it is kept only as an argon2id hash. ``disable`` revokes
every token the user holds at once (their next request gets 401, their next refresh
``invalid_grant``: the client asks them to sign in again, which they cannot). ``set-group``
replaces the user's groups; their tokens name the new ones from the next request. Works
beside running gateways (on a PostgreSQL ledger, every gateway on it sees the change). Exit
codes as ``switchboard``'s: 2 for a wrong argument or an unusable ledger, 1 for a name that
is not there.
"""

from __future__ import annotations

import argparse
import datetime
import getpass
import os
import sys

import msgspec

from actors.access.identities import check_name, hash_password
from actors.access.identity_stores import open_identity_store
from actors.config.settings import default_ledger_path
from protocol.errors import ConfigError

# A password shorter than this is refused: argon2id slows guessing, it cannot save "1234".
MIN_PASSWORD_CHARS = 8


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``users`` and its commands on the ``switchboard`` parser."""
    users = sub.add_parser("users", help="manage the users who sign in (serve --oauth; kept in the ledger)")
    commands = users.add_subparsers(dest="users_command", required=True)
    add = commands.add_parser("add", help="add a user")
    add.add_argument("name")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin's first line")
    listing = commands.add_parser("list", help="the users, their groups, and who is disabled")
    listing.add_argument("--json", action="store_true")
    disable = commands.add_parser("disable", help="disable a user and revoke their tokens at once")
    disable.add_argument("name")
    groups = commands.add_parser("set-group", help="replace a user's groups")
    groups.add_argument("name")
    for command in (add, groups):
        command.add_argument("--group", action="append", default=[], metavar="G", help="a group (repeat for more)")
    for command in (add, listing, disable, groups):
        command.add_argument("--ledger", default=None, metavar="PATH", help="ledger file or postgresql:// URL (default as for serve)")


def _password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise ConfigError("the two passwords differ")
    if len(password) < MIN_PASSWORD_CHARS:
        raise ConfigError(f"a password has at least {MIN_PASSWORD_CHARS} characters")
    return password


def run(args: argparse.Namespace) -> None:
    """Run one ``users`` command."""
    path = args.ledger or os.environ.get("SWITCHBOARD_LEDGER", "").strip() or default_ledger_path(os.environ)
    now = datetime.datetime.now(datetime.UTC)
    command = args.users_command
    groups = tuple(check_name(g, "group") for g in getattr(args, "group", []))
    if command == "add":
        check_name(args.name)
        password_hash = hash_password(_password(args.password_stdin))
    store = open_identity_store(path)
    try:
        if command == "add":
            store.add_user(args.name, password_hash, groups, now)
            print(f"user {args.name!r} added", file=sys.stderr)
        elif command == "set-group":
            if not store.set_groups(args.name, groups):
                print(f"switchboard: no user {args.name!r}", file=sys.stderr)
                raise SystemExit(1)
        elif command == "disable":
            if not store.disable(args.name, now):
                print(f"switchboard: no enabled user {args.name!r}", file=sys.stderr)
                raise SystemExit(1)
        else:
            users = store.users()
            if args.json:
                print(msgspec.json.format(msgspec.json.encode(users), indent=2).decode())
            for user in [] if args.json else users:
                state = f"disabled {user.disabled_at}" if user.disabled_at else "enabled"
                print("  ".join([user.name, ",".join(user.groups) or "-", state]))
    finally:
        store.close()
