"""The ``switchboard`` command: ``serve`` the gateway, run the ``emulator``.

``switchboard serve`` prints the WebSocket door's URL as the first line of stdout once it
accepts connections (PROTOCOL.md 3); logs go to stderr.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys

import trio

from actors.config import config_from_env
from actors.log import configure_logging
from actors.server import Server, run_server
from protocol.errors import ConfigError

log = logging.getLogger("switchboard")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchboard", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--host", default="127.0.0.1", help="address of the WebSocket door (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8765, help="WebSocket port; 0 picks a free one (default 8765)")
    serve.add_argument("--ledger", default=None, metavar="PATH", help="cost ledger file (SQLite; issue #4)")
    serve.add_argument("--debug", action="store_true", help="debug logs of the actors and the HTTP client")
    serve.add_argument(
        "--allow-no-auth",
        action="store_true",
        help="listen on a non-loopback address without SWITCHBOARD_ACCESS_TOKENS",
    )
    emulator = sub.add_parser("emulator", help="run the upstream API emulator alone")
    emulator.add_argument("--host", default="127.0.0.1")
    emulator.add_argument("--port", type=int, default=8766, help="0 picks a free one (default 8766)")
    emulator.add_argument("--debug", action="store_true")
    return parser


async def _serve(config_args: argparse.Namespace) -> None:
    config = config_from_env(
        os.environ,
        host=config_args.host,
        port=config_args.port,
        ledger_path=config_args.ledger,
        debug=config_args.debug,
        allow_no_auth=config_args.allow_no_auth,
    )
    configure_logging(debug=config.debug, secrets=config.secrets())
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(functools.partial(run_server, config))
        print(server.ws_url, flush=True)
        log.info("switchboard listening on %s (sessions at %s/v1/sessions/{id})", server.ws_url, server.ws_url)


async def _emulator(args: argparse.Namespace) -> None:
    from emulator import Emulator

    configure_logging(debug=args.debug)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(functools.partial(Emulator().run, host=args.host, port=args.port))
        print(url, flush=True)
        log.info("emulator listening on %s", url)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            trio.run(_serve, args)
        else:
            trio.run(_emulator, args)
    except ConfigError as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    except KeyboardInterrupt:
        pass
