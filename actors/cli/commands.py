"""The ``switchboard`` command: ``serve`` the gateway, run the ``emulator``.

``switchboard serve`` prints the WebSocket door's URL as the first line of stdout once it
accepts connections, then, with ``--http-port``, the HTTP door's URL as the second
(docs/protocol.md 3); logs go to stderr.

``switchboard cost [SESSION] [--ledger PATH|URL] [--json]`` prints the costs kept in a
ledger (an SQLite file read-only, also while a gateway writes it, or a PostgreSQL URL): one
session's or every session's, in the reference client's format or as docs/protocol.md cost
summaries. Estimated figures (streams cut short, protocol/estimate.py) are marked: ``(of
which $X estimated)`` after the total, ``(~N estimated)`` after a model's output;
``estimated_cost_usd`` and ``estimated_output_tokens`` in the JSON.

``switchboard cost --by session|token|user|model|day [--json|--csv]`` prints the spend grouped one
way (``actors.cli.cost``).

``switchboard tokens add|list|revoke|set-budget`` manages access tokens with limits
(``actors.cli.tokens``).

``switchboard users add|list|disable|set-group`` manages the users who sign in with
``serve --oauth`` (``actors.cli.users``; README.md "Claude Code for a whole organisation").

``switchboard ledger migrate --from PATH.sqlite3 --to postgresql://...`` copies an SQLite
ledger into PostgreSQL (``actors.cli.ledger_migrate``; idempotent).

``serve`` owns its process, so it also sets the garbage collector's policy (``tune_gc``); a
program that embeds the gateway (``actors.gateway.open_gateway``) keeps its own.

``serve --workers N|auto`` runs N worker processes on the same ports and ledger, under a
parent that starts them again when they die and forwards the signals (``actors.cli.workers``,
README.md "Deployment").

On SIGTERM or SIGINT ``serve`` shuts down gracefully (``Gateway.shutdown``, docs/protocol.md 3):
no new work, the queries in flight get ``--shutdown-grace`` seconds, then those left end
with ``shutting_down``; the actors stop, the ledger last, and the process exits 0. A second
signal ends the grace at once (usage is still recorded).

Exit codes (docs/supervision.md): 0 after Ctrl-C or SIGTERM's KeyboardInterrupt; 2 for a
configuration that cannot work (``ConfigError``, also a ledger that cannot be opened); 1 when
the service became unusable (``ServiceFailed``: a door's listener lost) or an unexpected
exception escaped every boundary. Each ends with one line on stderr,
``switchboard: <what>`` (an unexpected exception's traceback is logged before it).
"""

from __future__ import annotations

import argparse
import functools
import gc
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from typing import Literal

import msgspec
import trio

from actors.cli import cost as cost_by
from actors.cli import tokens as tokens_cli
from actors.cli import users as users_cli
from actors.cli.workers import stop_with_parent, supervise, workers_arg
from actors.config.from_env import config_from_env, with_sign_in
from actors.config.settings import Config, default_ledger_path, is_postgres_url, redact_url
from actors.gateway import Gateway
from actors.observe.log import configure_logging
from actors.server import Server, run_server
from actors.store.stores import read_sessions, require_psycopg
from protocol.cost_report import format_report
from protocol.errors import ConfigError, ServiceFailed

log = logging.getLogger("switchboard")

# Young-generation threshold of the cyclic garbage collector (CPython's default is 700).
GC_GEN0_THRESHOLD = 10_000


def tune_gc() -> None:
    """Freeze what start-up allocated and collect the young generation less often.

    A streamed request lives for seconds, long enough for its objects to reach the oldest
    generation, whose collections then scanned every live object for 15-50 ms with the event
    loop stopped: the inter-event gap p99 of 128 paced streams was 15 ms above the direct
    path's (``scripts/bench.py --levels 128 --pace-ms 20 --deltas 64 --paths direct,ws``).
    With the start-up heap frozen out of every scan and young collections 14 times rarer
    it is within 1 ms, at the same CPU and resident memory.
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchboard", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway")
    _listen_options(serve)
    _capacity_options(serve)
    serve.add_argument(
        "--allow-no-auth",
        action="store_true",
        help="listen on a non-loopback address without SWITCHBOARD_ACCESS_TOKENS",
    )
    _sign_in_options(serve)
    serve.add_argument(
        "--policy",
        default=None,
        metavar="FILE",
        help="organisation policy (TOML: model allow-lists, managed settings per group and "
        "user; default $SWITCHBOARD_POLICY)",
    )
    _cost_parsers(sub)
    tokens_cli.add_parser(sub)
    users_cli.add_parser(sub)
    _emulator_parser(sub)
    return parser


def _listen_options(serve: argparse.ArgumentParser) -> None:
    """``serve``'s doors, ledger and logs."""
    serve.add_argument("--host", default="127.0.0.1", help="address of the WebSocket door (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8765, help="WebSocket port; 0 picks a free one (default 8765)")
    serve.add_argument(
        "--http-port",
        type=int,
        default=None,
        help="port of the Anthropic-compatible HTTP door (off unless given; 0 picks a free one)",
    )
    serve.add_argument(
        "--ledger",
        default=None,
        metavar="PATH|URL",
        help="cost ledger: an SQLite file, or a PostgreSQL URL (postgresql://...); default "
        "$SWITCHBOARD_LEDGER, else $XDG_STATE_HOME/switchboard/ledger.sqlite3, in memory with "
        "the built-in emulator; ':memory:' keeps no file",
    )
    serve.add_argument(
        "--ledger-fail-open",
        action="store_true",
        help="keep serving queries while the ledger cannot commit, each answer flagged "
        "cost_recorded false (default: refuse them; also SWITCHBOARD_LEDGER_FAIL_OPEN=1)",
    )
    serve.add_argument("--debug", action="store_true", help="debug logs of the actors and the HTTP client")


def _capacity_options(serve: argparse.ArgumentParser) -> None:
    """``serve``'s shutdown grace, admission (docs/protocol.md "Admission") and workers."""
    serve.add_argument(
        "--shutdown-grace",
        type=float,
        default=None,
        metavar="SECONDS",
        help="on SIGTERM/SIGINT, how long queries in flight may run on "
        "(default $SWITCHBOARD_SHUTDOWN_GRACE_S, else 30)",
    )
    serve.add_argument(
        "--max-queries",
        type=int,
        default=None,
        metavar="N",
        help="queries run at once, the others wait in line; 0: no bound "
        "(default $SWITCHBOARD_MAX_QUERIES, else 256)",
    )
    serve.add_argument(
        "--admission-wait",
        type=float,
        default=None,
        metavar="SECONDS",
        help="how long an HTTP request waits for a slot before a 529 "
        "(default $SWITCHBOARD_ADMISSION_WAIT_S, else 10)",
    )
    serve.add_argument(
        "--workers",
        type=workers_arg,
        default=1,
        metavar="N|auto",
        help="worker processes sharing the ports and the ledger (auto: one per usable CPU; "
        "default 1; above 1 the ledger must be a file or PostgreSQL, README.md \"Deployment\")",
    )
    # Set by the parent of ``--workers N`` on each worker's command line (actors/cli/workers.py).
    serve.add_argument("--worker-of", type=int, default=None, help=argparse.SUPPRESS)


def _cost_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``cost`` and ``ledger migrate``."""
    cost = sub.add_parser("cost", help="print the costs kept in a ledger file")
    cost.add_argument("session", nargs="?", default=None, help="one session (default: all of them)")
    cost.add_argument("--ledger", default=None, metavar="PATH|URL", help="ledger file or URL (default as for serve)")
    cost.add_argument("--json", action="store_true", help="docs/protocol.md cost summaries (a list without SESSION)")
    cost.add_argument("--by", choices=cost_by.BY, default=None, help="spend grouped by session, token, signed-in user, model or UTC day")
    cost.add_argument("--csv", action="store_true", help="with --by: CSV instead of a table")
    ledger = sub.add_parser("ledger", help="manage a cost ledger")
    ledger_sub = ledger.add_subparsers(dest="ledger_command", required=True)
    copy = ledger_sub.add_parser("migrate", help="copy an SQLite ledger into PostgreSQL (idempotent)")
    copy.add_argument("--from", dest="source", required=True, metavar="PATH", help="the SQLite ledger file")
    copy.add_argument("--to", dest="target", required=True, metavar="URL", help="the PostgreSQL ledger (postgresql://...)")


def _emulator_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``emulator``: the upstream API emulator alone."""
    emulator = sub.add_parser("emulator", help="run the upstream API emulator alone")
    emulator.add_argument("--host", default="127.0.0.1")
    emulator.add_argument("--port", type=int, default=8766, help="0 picks a free one (default 8766)")
    emulator.add_argument(
        "--write-per-event",
        action="store_true",
        help="write each SSE event on its own, as the API does while it generates "
        "(default: an unpaced answer goes out in one write)",
    )
    emulator.add_argument("--debug", action="store_true")


def _sign_in_options(serve: argparse.ArgumentParser) -> None:
    """``serve``'s sign-in and TLS options (README.md "Claude Code for a whole organisation")."""
    serve.add_argument(
        "--oauth",
        action="store_true",
        help="sign users in with the Claude Code gateway protocol (device flow; users from "
        "'switchboard users'); needs --http-port",
    )
    serve.add_argument("--public-url", default=None, metavar="URL", help="the base URL clients use (default: the request's Host)")
    serve.add_argument("--tls-cert", default=None, metavar="PEM", help="the HTTP door's certificate chain (https)")
    serve.add_argument("--tls-key", default=None, metavar="PEM", help="the HTTP door's private key")
    serve.add_argument(
        "--allow-plain-http",
        action="store_true",
        help="allow --oauth over plain HTTP on a non-loopback address (a proxy in front terminates TLS)",
    )


def _config(config_args: argparse.Namespace) -> Config:
    config = config_from_env(
        os.environ,
        host=config_args.host,
        port=config_args.port,
        ledger_path=config_args.ledger,
        debug=config_args.debug,
        allow_no_auth=config_args.allow_no_auth,
        http_port=config_args.http_port,
        shutdown_grace=config_args.shutdown_grace,
        ledger_fail_open=config_args.ledger_fail_open,
        max_queries=config_args.max_queries,
        admission_wait=config_args.admission_wait,
        oauth=config_args.oauth,
    )
    if config_args.oauth and config_args.http_port is None:
        raise ConfigError("--oauth needs the HTTP door: pass --http-port")
    config = with_sign_in(
        config,
        oauth=config_args.oauth,
        public_url=config_args.public_url,
        tls_cert=config_args.tls_cert,
        tls_key=config_args.tls_key,
        allow_plain_http=config_args.allow_plain_http,
    )
    if config_args.policy:
        config = msgspec.structs.replace(config, policy_path=config_args.policy)
    return msgspec.structs.replace(config, workers=config_args.workers)


async def _serve(config_args: argparse.Namespace) -> None:
    config = _config(config_args)
    worker = config_args.worker_of
    configure_logging(debug=config.debug, secrets=config.secrets(), label="" if worker is None else f"worker {worker}")
    # Opened first: a signal that arrives during start-up waits here, and SIGINT no longer
    # raises KeyboardInterrupt.
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            server: Server = await nursery.start(functools.partial(run_server, config))
            if worker is not None:
                nursery.start_soon(stop_with_parent)
            tune_gc()
            print(server.ws_url, flush=True)
            if server.http_url is not None:
                print(server.http_url, flush=True)
            log.info(
                "switchboard instance %s listening on %s (sessions at %s/v1/sessions/{id})",
                server.gateway.instance_id, server.ws_url, server.ws_url,
            )
            if server.http_url is not None:
                log.info("Anthropic-compatible HTTP door on %s (base_url for the SDKs)", server.http_url)
            await shut_down_on_signals(signals, server.gateway)
            # Drained: stop the actors; the ledger drains last (actors/server.py).
            nursery.cancel_scope.cancel(reason="shut down")
    log.info("switchboard stopped")


async def shut_down_on_signals(signals: AsyncIterator[int], gateway: Gateway) -> None:
    """Wait for a signal, then shut the gateway down gracefully (``Gateway.shutdown``, with
    ``Config.shutdown_grace``); a further signal meanwhile ends the grace at once. Returns
    once the shutdown is done."""
    async for signum in signals:
        log.info(
            "%s: shutting down; queries in flight get %g s",
            signal.Signals(signum).name,
            gateway.config.shutdown_grace,
        )
        break
    else:
        return
    async with trio.open_nursery() as nursery:

        async def end_grace_on_signal() -> None:
            async for signum in signals:
                log.warning("%s again: ending the grace now", signal.Signals(signum).name)
                await gateway.shutdown(0.0)

        nursery.start_soon(end_grace_on_signal)
        await gateway.shutdown()
        nursery.cancel_scope.cancel(reason="shut down")


def _cost(args: argparse.Namespace) -> None:
    path = args.ledger or os.environ.get("SWITCHBOARD_LEDGER", "").strip() or default_ledger_path(os.environ)
    if args.by is not None or args.csv:
        if args.session is not None or args.by is None:
            raise ConfigError("--by takes no SESSION, and --csv needs --by")
        fmt: Literal["text", "json", "csv"] = "json" if args.json else "csv" if args.csv else "text"
        sys.stdout.write(cost_by.render(cost_by.read_spend(path, args.by), args.by, fmt))
        return
    sessions = read_sessions(path, args.session)
    if args.session is not None and not sessions:
        print(f"switchboard: no session {args.session!r} in {redact_url(path)}", file=sys.stderr)
        raise SystemExit(1)
    if args.json:
        summaries = [totals.summary(session_id) for session_id, totals in sessions]
        encoded = msgspec.json.encode(summaries[0] if args.session is not None else summaries)
        print(msgspec.json.format(encoded, indent=2).decode())
    else:
        sys.stdout.write(format_report(sessions))


def _ledger(args: argparse.Namespace) -> None:
    if not is_postgres_url(args.target):
        raise ConfigError(f"--to must be a PostgreSQL URL (postgresql://...), got {redact_url(args.target)!r}")
    require_psycopg()
    from actors.cli.ledger_migrate import migrate_ledger

    report = migrate_ledger(args.source, args.target)
    print(
        f"copied {report.sessions} session(s) and {report.records} usage record(s) from "
        f"{args.source} to {redact_url(args.target)} (what was there already is unchanged)"
    )


async def _emulator(args: argparse.Namespace) -> None:
    from emulator import Emulator

    configure_logging(debug=args.debug)
    emulator = Emulator()
    emulator.write_per_event = args.write_per_event
    async with trio.open_nursery() as nursery:
        url = await nursery.start(functools.partial(emulator.run, host=args.host, port=args.port))
        print(url, flush=True)
        log.info("emulator listening on %s", url)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    # except*: a ConfigError raised inside the actors (the ledger file cannot be opened, is
    # corrupt or in use by another gateway) arrives wrapped in the nurseries' exception groups.
    # The exit code is decided after, since a SystemExit raised in an except* clause would be
    # wrapped in a group too.
    code = 0
    try:
        if args.command == "serve" and args.workers > 1 and args.worker_of is None:
            trio.run(_supervise, args, sys.argv[1:] if argv is None else argv)
        elif args.command == "serve":
            trio.run(_serve, args)
        elif args.command == "cost":
            _cost(args)
        elif args.command == "ledger":
            _ledger(args)
        elif args.command == "tokens":
            tokens_cli.run(args)
        elif args.command == "users":
            users_cli.run(args)
        else:
            trio.run(_emulator, args)
    except* ConfigError as group:
        print(f"switchboard: {_first(group)}", file=sys.stderr)
        code = code or 2
    except* ServiceFailed as group:
        print(f"switchboard: {_first(group)}", file=sys.stderr)
        code = code or 1
    except* KeyboardInterrupt:
        pass
    except* Exception as group:
        log.critical("switchboard stopped on an internal error", exc_info=group)
        print(f"switchboard: internal error: {_first(group)!r}", file=sys.stderr)
        code = code or 1
    if code:
        raise SystemExit(code)


async def _supervise(args: argparse.Namespace, argv: list[str]) -> None:
    config = _config(args)
    configure_logging(debug=config.debug, secrets=config.secrets(), label="workers")
    await supervise(argv, args.workers, config)


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first error of a (nested) group, for a one-line message."""
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


if __name__ == "__main__":
    main()
