"""``switchboard tokens``: access tokens with a name and limits, kept in the ledger's store
(``actors.store.tokens``; docs/protocol.md "Access tokens and budgets").

::

    switchboard tokens add NAME [--budget-usd X --period day|month|total --max-concurrent N
                                 --rpm N --models a,b] [--ledger PATH|URL]
    switchboard tokens list [--json]
    switchboard tokens revoke NAME
    switchboard tokens set-budget NAME [the options of add: those given replace the token's]

``add`` prints the new token once, on stdout: it is stored only as a hash and cannot be
shown again. Works beside a running gateway (it reads the table at each request, so a
revoked token is refused at its next request). Exit codes as ``switchboard``'s: 2 for
a wrong argument or an unusable ledger, 1 for a name that is not there.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys

import msgspec

from actors.config.settings import default_ledger_path
from actors.store.stores import open_token_store
from actors.store.token_rows import TokenInfo, new_token
from protocol.budget import PERIODS, Limits, Period, format_usd, renews_at, usd_to_pico
from protocol.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``tokens`` and its commands on the ``switchboard`` parser."""
    tokens = sub.add_parser("tokens", help="manage access tokens with limits (kept in the ledger)")
    commands = tokens.add_subparsers(dest="tokens_command", required=True)
    for name, text in (("add", "create a token (printed once)"), ("set-budget", "change a token's limits")):
        command = commands.add_parser(name, help=text)
        command.add_argument("name")
        _ledger_option(command)
        command.add_argument("--budget-usd", default=None, metavar="USD", help="spend allowed per period ('none': no budget)")
        command.add_argument("--period", choices=PERIODS, default=None, help="day or month (UTC calendar), or total (default)")
        command.add_argument("--max-concurrent", type=int, default=None, metavar="N", help="queries at once ('0' lifts it)")
        command.add_argument("--rpm", type=int, default=None, metavar="N", help="requests per minute ('0' lifts it)")
        command.add_argument("--models", default=None, metavar="A,B", help="the models allowed ('' lifts it)")
    listing = commands.add_parser("list", help="the active tokens, their limits and spend")
    _ledger_option(listing)
    listing.add_argument("--json", action="store_true")
    revoke = commands.add_parser("revoke", help="revoke a token at once")
    revoke.add_argument("name")
    _ledger_option(revoke)


def _ledger_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ledger", default=None, metavar="PATH|URL", help="ledger file or URL (default as for serve)")


def _limits(args: argparse.Namespace, base: Limits) -> Limits:
    limits = base
    if args.budget_usd is not None:
        if args.budget_usd.strip().lower() == "none":
            limits = msgspec.structs.replace(limits, budget_pico=None)
        else:
            try:
                limits = msgspec.structs.replace(limits, budget_pico=usd_to_pico(args.budget_usd))
            except ValueError as exc:
                raise ConfigError(f"--budget-usd: {exc}") from exc
    if args.period is not None:
        period: Period = args.period
        limits = msgspec.structs.replace(limits, period=period)
    for option in ("max_concurrent", "rpm"):
        value = getattr(args, option)
        if value is not None:
            if value < 0:
                raise ConfigError(f"--{option.replace('_', '-')}: must not be negative")
            limits = msgspec.structs.replace(limits, **{option: value or None})
    if args.models is not None:
        models = tuple(m.strip() for m in args.models.split(",") if m.strip())
        limits = msgspec.structs.replace(limits, models=models or None)
    return limits


def describe(info: TokenInfo, now: datetime.datetime) -> dict[str, object]:
    """A token as ``list --json`` shows it (the ``budget`` fields of docs/protocol.md)."""
    limits, account = info.limits, info.account
    current = account.period_key == _key(info, now)
    spent = account.spent_pico if current else 0
    out: dict[str, object] = {"name": info.name, "created_at": info.created_at}
    if limits.budget_pico is not None:
        renewal = renews_at(limits.period, now)
        out["budget"] = {
            "limit_usd": float(format_usd(limits.budget_pico)),
            "period": limits.period,
            "spent_usd": float(format_usd(spent)),
            "reserved_usd": float(format_usd(account.reserved_pico)),
            "remaining_usd": float(format_usd(max(0, limits.budget_pico - spent - account.reserved_pico))),
            "renews_at": None if renewal is None else renewal.isoformat(),
        }
    out["max_concurrent"] = limits.max_concurrent
    out["rpm"] = limits.rpm
    out["models"] = None if limits.models is None else list(limits.models)
    out["in_flight"] = account.in_flight
    return out


def _key(info: TokenInfo, now: datetime.datetime) -> str:
    from protocol.budget import period_key

    return period_key(info.limits.period, now)


def run(args: argparse.Namespace) -> None:
    """Run one ``tokens`` command."""
    path = args.ledger or os.environ.get("SWITCHBOARD_LEDGER", "").strip() or default_ledger_path(os.environ)
    now = datetime.datetime.now(datetime.UTC)
    store = open_token_store(path)
    try:
        command = args.tokens_command
        if command == "add":
            token = new_token()
            store.add(args.name, token, _limits(args, Limits()), now)
            print(token)
            print(f"token {args.name!r} added; it is shown only now", file=sys.stderr)
        elif command == "set-budget":
            found = next((info for info in store.list() if info.name == args.name), None)
            if found is None or not store.set_limits(args.name, _limits(args, found.limits)):
                print(f"switchboard: no token {args.name!r}", file=sys.stderr)
                raise SystemExit(1)
        elif command == "revoke":
            if not store.revoke(args.name, now):
                print(f"switchboard: no token {args.name!r}", file=sys.stderr)
                raise SystemExit(1)
        else:
            rows = [describe(info, now) for info in store.list()]
            if args.json:
                print(msgspec.json.format(msgspec.json.encode(rows), indent=2).decode())
            else:
                for row in rows:
                    budget = row.get("budget")
                    text = "no budget"
                    if isinstance(budget, dict):
                        text = (
                            f"${budget['spent_usd']} of ${budget['limit_usd']} per {budget['period']} "
                            f"(reserved ${budget['reserved_usd']})"
                        )
                    extra = [f"{k}={row[k]}" for k in ("max_concurrent", "rpm") if row[k] is not None]
                    if row["models"] is not None:
                        extra.append("models=" + ",".join(str(m) for m in row["models"]))  # type: ignore[attr-defined]
                    print("  ".join([str(row["name"]), text, *extra]))
    finally:
        store.close()
