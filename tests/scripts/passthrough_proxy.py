"""A trivial "other gateway" for the benchmark's tests: a TCP pass-through to the upstream.

``python passthrough_proxy.py UPSTREAM_URL PORT`` listens on 127.0.0.1:PORT and copies the
bytes of each connection to and from UPSTREAM_URL's host and port, so it serves whatever the
upstream serves (the emulator's ``POST /v1/messages``). Standard library only, so it starts
fast; SIGINT stops it.
"""

from __future__ import annotations

import socket
import sys
import threading
from urllib.parse import urlsplit


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        # The other direction may still be talking: end only this one.
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _serve(client: socket.socket, upstream: tuple[str, int]) -> None:
    with client, socket.create_connection(upstream) as server:
        server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        back = threading.Thread(target=_pump, args=(server, client), daemon=True)
        back.start()
        _pump(client, server)
        back.join()


def main() -> None:
    url = urlsplit(sys.argv[1])
    assert url.hostname is not None and url.port is not None
    upstream = (url.hostname, url.port)
    with socket.create_server(("127.0.0.1", int(sys.argv[2]))) as listener:
        while True:
            client, _ = listener.accept()
            threading.Thread(target=_serve, args=(client, upstream), daemon=True).start()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
