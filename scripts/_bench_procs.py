"""The benchmark's subprocesses: start them pinned, read their URL, watch their CPU, stop them.

``open_child`` starts one ``switchboard`` subcommand (``emulator`` or ``serve``) on loopback,
pinned to a CPU set, and yields it once it printed its URL(s) (``serve --http-port 0``
prints two: the WebSocket door's, then the HTTP door's); leaving the block stops it
(SIGINT, then SIGKILL after a grace period), whatever happened inside. ``cpu_seconds``,
``peak_rss_bytes``, ``memory_bytes`` and ``reset_peak_rss`` read or write ``/proc``, so the
benchmark is Linux-only.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import trio

REPO: Final = Path(__file__).resolve().parent.parent
# A cold interpreter importing the package takes about a second; this only fails a broken one.
START_TIMEOUT: Final = 30.0
# Time for a trio program to unwind on SIGINT before it is killed.
STOP_GRACE: Final = 5.0
# /proc/<pid>/stat counts CPU time in clock ticks (USER_HZ, 100 on every common kernel).
_TICKS_PER_SECOND: Final = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Pinning:
    """Which CPUs the gateway and the rest (emulator, load generator) run on; None: unpinned."""

    gateway: frozenset[int] | None
    others: frozenset[int] | None

    def describe(self) -> str:
        if self.gateway is None or self.others is None:
            return "none (fewer than 2 usable CPUs: gateway, emulator and load generator share them)"
        return f"gateway on CPU {_cpus(self.gateway)}; emulator and load generator on CPU {_cpus(self.others)}"


def _cpus(cpus: frozenset[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def plan_pinning(enabled: bool = True) -> Pinning:
    """Gateway on the first usable CPU and everything else on the others, when there are 2+.

    The gateway gets a core of its own so its CPU time is not inflated by waiting behind the
    load it is measured under.
    """
    cpus = sorted(os.sched_getaffinity(0))
    if not enabled or len(cpus) < 2:
        return Pinning(gateway=None, others=None)
    return Pinning(gateway=frozenset(cpus[:1]), others=frozenset(cpus[1:]))


def pin_self(cpus: frozenset[int] | None) -> None:
    """Pin this process. Call before any thread starts: threads inherit their creator's set."""
    if cpus is not None:
        os.sched_setaffinity(0, cpus)


def switchboard_command() -> list[str]:
    """How to run the ``switchboard`` CLI: the venv's script, else its module in this Python.

    The fallback serves a checkout whose package is not installed (yet).
    """
    script = Path(sys.executable).with_name("switchboard")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from actors.cli.commands import main; main()"]


def child_env(extra: Mapping[str, str], drop: tuple[str, ...] = ()) -> dict[str, str]:
    """This environment without ``drop``, plus ``extra``, with the checkout on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


@dataclass(frozen=True, slots=True)
class Child:
    """A started subprocess: its name, pid, the URL(s) it printed and where its logs go.

    ``url`` is the first line (the emulator's URL, the gateway's WebSocket door);
    ``http_url`` the second, when one was asked for (the gateway's HTTP door).
    """

    name: str
    pid: int
    url: str
    log_path: Path
    http_url: str | None = None


class ChildFailed(Exception):
    """A subprocess did not print its URL in time (see its log)."""


async def _first_lines(stream: trio.abc.ReceiveStream, count: int) -> list[str]:
    """The first ``count`` lines of ``stream`` (fewer when it ends first)."""
    buffer = b""
    while buffer.count(b"\n") < count:
        chunk = await stream.receive_some()
        if not chunk:
            break
        buffer += chunk
    return [line.decode(errors="replace").strip() for line in buffer.split(b"\n")[:count]]


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def prepare_child(cpus: frozenset[int] | None) -> None:
    """Run in the child between fork and exec."""
    # Pinned before exec, so no thread of it ever runs elsewhere.
    if cpus is not None:
        os.sched_setaffinity(0, cpus)
    # A shell starts background jobs with SIGINT ignored, and Python keeps an ignored SIGINT:
    # restore the default so SIGINT stops the child gracefully (see stop_process).
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@asynccontextmanager
async def open_child(
    name: str,
    args: list[str],
    *,
    env: Mapping[str, str],
    cpus: frozenset[int] | None,
    log_path: Path,
    url_prefix: str,
    http_url: bool = False,
) -> AsyncIterator[Child]:
    """Start ``switchboard ARGS``; yield it once its first stdout line (its URL) came, and,
    with ``http_url``, its second (``http://...``, the HTTP door's URL).

    stderr goes to ``log_path``. Raises ChildFailed when the lines are not URLs starting
    with ``url_prefix`` (then ``http://``) within START_TIMEOUT. The process is stopped on
    exit in every case.
    """
    preexec = functools.partial(prepare_child, cpus)
    with log_path.open("wb") as log:
        process = await trio.lowlevel.open_process(
            [*switchboard_command(), *args],
            stdin=subprocess.DEVNULL,
            # Only the URL lines are printed on stdout (logs go to stderr), so the pipe's
            # buffer never fills although nobody reads it after the first line.
            stdout=subprocess.PIPE,
            stderr=log,
            env=dict(env),
            cwd=str(REPO),
            preexec_fn=preexec,
        )
    try:
        assert process.stdout is not None
        wanted = 2 if http_url else 1
        lines: list[str] = []
        with trio.move_on_after(START_TIMEOUT):
            lines = await _first_lines(process.stdout, wanted)
        lines += [""] * (wanted - len(lines))
        if not lines[0].startswith(url_prefix) or (http_url and not lines[1].startswith("http://")):
            raise ChildFailed(
                f"{name} did not start (first line(s) {lines!r}, exit status {process.poll()}); "
                f"log {log_path}:\n{log_tail(log_path)}"
            )
        yield Child(
            name=name, pid=process.pid, url=lines[0], log_path=log_path, http_url=lines[1] if http_url else None
        )
    finally:
        await stop_process(process)


async def stop_process(process: trio.Process, grace: float = STOP_GRACE) -> None:
    """SIGINT (a graceful stop for a trio program), then SIGKILL after ``grace`` s; reaps it.

    Shielded: it runs to the end even in a cancelled scope, so no child outlives the bench.
    """
    with trio.CancelScope(shield=True):
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            with trio.move_on_after(grace):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


def cpu_seconds(pid: int) -> float:
    """CPU time process ``pid`` used so far (user + system, all its threads), in seconds.

    ``/proc/PID/stat`` counts whole 10 ms ticks, too coarse for a few ms per request, so the
    scheduler's nanosecond counters of the live threads (``/proc/PID/task/*/schedstat``) are
    used too; they miss threads that already exited, so the larger of the two counts.
    """
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    fields = stat.rpartition(")")[2].split()
    # fields[0] is field 3 (state), so utime (field 14) and stime (field 15) are 11 and 12.
    ticks = (int(fields[11]) + int(fields[12])) / _TICKS_PER_SECOND
    return max(ticks, _schedstat_seconds(pid))


def _schedstat_seconds(pid: int) -> float:
    """Sum of the on-CPU nanoseconds of ``pid``'s live threads (0 where the kernel lacks them)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            # The thread exited while we looked, or no schedstat: the ticks still count it.
            continue
    return total / 1e9


def system_busy_seconds() -> float:
    """CPU time all CPUs spent on anything but idling and I/O wait since boot (/proc/stat)."""
    with open("/proc/stat") as stat:
        # cpu user nice system idle iowait irq softirq steal guest guest_nice
        fields = [int(v) for v in stat.readline().split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]
    return busy / _TICKS_PER_SECOND


def _status_bytes(pid: int, key: str) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    return None


def peak_rss_bytes(pid: int) -> int | None:
    """The process's peak resident set size (``VmHWM``), or None when /proc does not say.

    The peak is since the process started, or since the last ``reset_peak_rss``.
    """
    return _status_bytes(pid, "VmHWM:")


def memory_bytes(pid: int) -> int | None:
    """The process's resident set size now (``VmRSS``), or None when /proc does not say."""
    return _status_bytes(pid, "VmRSS:")


def reset_peak_rss(pid: int) -> bool:
    """Reset the process's ``VmHWM`` to its current RSS (``echo 5 > /proc/PID/clear_refs``,
    Linux 4.0+); False when the kernel or the permissions do not allow it."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True
