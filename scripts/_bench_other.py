"""Another gateway, run against the same upstream so its numbers sit next to ours.

``--other-gateway "CMD"`` names any command that serves the Messages API
(``POST /v1/messages`` with SSE answers) and relays to an upstream it is told about. Before
it runs, these placeholders in CMD are replaced (plain text replacement, so other braces in
CMD stay as they are):

- ``{upstream}``: the emulator's base URL (``http://127.0.0.1:PORT``);
- ``{port}``: a free loopback port the command must listen on (HTTP);
- ``{host}``: ``127.0.0.1``.

The command is split like a shell would (``shlex``) but run without one, in a session of its
own (so workers it starts can be stopped with it), pinned like our gateway, with
``ANTHROPIC_BASE_URL`` and ``ANTHROPIC_API_KEY`` set to the upstream and the benchmark key
too. It is ready once ``{port}`` accepts a TCP connection; its CPU time is the sum over its
process tree (workers included), read by ``tree_cpu_seconds``.
"""

from __future__ import annotations

import functools
import os
import shlex
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

import trio
from _bench_procs import REPO, STOP_GRACE, Child, ChildFailed, cpu_seconds, log_tail, prepare_child

HOST: Final = "127.0.0.1"
# How often readiness is probed while the command starts.
_PROBE_INTERVAL: Final = 0.1


def free_port() -> int:
    """A loopback port nobody listens on now (the command binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def other_command(template: str, upstream: str, port: int) -> list[str]:
    """``template`` with its placeholders replaced, split into arguments (see the module
    docstring). Raises ValueError when it is empty or does not name ``{port}``."""
    if "{port}" not in template:
        raise ValueError("the other gateway's command must contain {port}: the port it listens on")
    text = template.replace("{upstream}", upstream).replace("{port}", str(port)).replace("{host}", HOST)
    argv = shlex.split(text)
    if not argv:
        raise ValueError("the other gateway's command is empty")
    return argv


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (scanning /proc: it needs no kernel option)."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Field 4 (ppid) follows the command name, which may hold spaces and parentheses.
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants."""
    tree = [pid]
    index = 0
    while index < len(tree):
        tree += _children(tree[index])
        index += 1
    return tree


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and its live descendants (``_bench_procs.cpu_seconds`` each)."""
    total = 0.0
    for member in process_tree(pid):
        try:
            total += cpu_seconds(member)
        except (OSError, ValueError):
            # It exited while we looked.
            continue
    return total


async def _wait_listening(process: trio.Process, port: int) -> bool:
    """Probe ``port`` until it accepts a connection (True) or the process exits (False).

    Polling, since another program tells nothing when it is ready but by listening.
    """
    while process.poll() is None:
        try:
            stream = await trio.open_tcp_stream(HOST, port)
        except OSError:
            await trio.sleep(_PROBE_INTERVAL)
            continue
        await stream.aclose()
        return True
    return False


@asynccontextmanager
async def open_other(
    template: str,
    *,
    upstream: str,
    env: Mapping[str, str],
    cpus: frozenset[int] | None,
    log_path: Path,
    start_timeout: float,
) -> AsyncIterator[Child]:
    """Start the other gateway; yield it once its port accepts connections.

    Its stdout and stderr go to ``log_path``. Raises ChildFailed when it exits or does not
    listen within ``start_timeout`` s, ValueError for a bad template. Stopped on exit in
    every case: SIGINT to its session, SIGKILL after a grace period.
    """
    port = free_port()
    argv = other_command(template, upstream, port)
    with log_path.open("wb") as log:
        process = await trio.lowlevel.open_process(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=str(REPO),
            preexec_fn=functools.partial(prepare_child, cpus),
            start_new_session=True,
        )
    try:
        ready = False
        with trio.move_on_after(start_timeout):
            ready = await _wait_listening(process, port)
        if not ready:
            raise ChildFailed(
                f"the other gateway ({shlex.join(argv)}) did not listen on port {port} "
                f"(exit status {process.poll()}); log {log_path}:\n{log_tail(log_path)}"
            )
        yield Child(name="other", pid=process.pid, url=f"http://{HOST}:{port}", log_path=log_path)
    finally:
        await _stop_session(process)


async def _stop_session(process: trio.Process) -> None:
    """SIGINT to the process's session (it leads it), SIGKILL after STOP_GRACE; shielded."""

    def signal_group(signum: int) -> None:
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            pass

    with trio.CancelScope(shield=True):
        if process.returncode is None:
            signal_group(signal.SIGINT)
            with trio.move_on_after(STOP_GRACE):
                await process.wait()
        # Workers it started may outlive it: the session goes in any case.
        signal_group(signal.SIGKILL)
        if process.returncode is None:
            await process.wait()
