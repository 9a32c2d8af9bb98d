"""Where the gateway's CPU goes, by package: a py-spy profile summed by the innermost frame.

Record a profile of the gateway during a benchmark run (its pid is on the bench's stderr,
``gateway at ... (pid N)``), then summarise it::

    .venv/bin/py-spy record -r 250 -f raw -d 60 --pid N -o gateway.raw
    .venv/bin/python scripts/_bench_pyspy.py gateway.raw

py-spy's ``raw`` format is one line per distinct stack: frames outermost first, ``;``
between them, each ``function (file:line)``, then a space and the number of samples. Idle
samples (a thread waiting in ``epoll``) are left out unless py-spy ran with ``--idle``, so
the shares are of the CPU the gateway used. Each sample is charged to the package of its
innermost Python frame (its *self* time; time spent in C, a ``send`` system call or msgspec's
encoder, lands on the Python frame that called it): ``trio``, ``h11``, ``httpcore``,
``httpx``, ``hypercorn``, ``wsproto``, ``trio_websocket``, our ``actors`` and ``protocol``,
the standard library (``stdlib``), anything else by its top-level module name.

py-spy's idle detection misses two waits of a trio program, so their samples are set aside
as ``waiting`` and left out of the shares: trio's run loop blocked in ``epoll_wait``
(``EpollIOManager.get_events``) and a trio worker thread waiting for a job
(``WorkerThread._work`` as the innermost frame). Their own CPU (one system call per wake-up)
is small next to the time they spend blocked.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path
from typing import Final

# "function (path/to/file.py:123)"; py-spy may leave the line number out.
_FRAME: Final = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
# Our packages, by the top directory of the repository they live in.
_OURS: Final = ("actors", "protocol", "emulator")
# Innermost frames that are a blocked wait, not CPU (see the module docstring).
WAITS: Final = frozenset({"EpollIOManager.get_events", "WorkerThread._work"})
WAITING: Final = "waiting"
# attrs' generated methods: "<attrs generated methods outcome._impl.Value>" (that class's package).
_ATTRS: Final = re.compile(r"^<attrs generated \w+ (?P<module>[\w.]+)>$")


def package_of(path: str) -> str:
    """The package a frame's file belongs to (see the module docstring)."""
    attrs = _ATTRS.match(path)
    if attrs:
        return attrs.group("module").split(".")[0]
    if path.startswith("<frozen "):
        return "stdlib"
    parts = Path(path).parts
    if "site-packages" in parts:
        rest = parts[parts.index("site-packages") + 1 :]
        return rest[0].removesuffix(".py") if rest else "other"
    for ours in _OURS:
        if ours in parts:
            return ours
    if any(re.fullmatch(r"python3\.\d+", part) for part in parts):
        return "stdlib"
    # py-spy shortens some paths to the module's own (``trio/_core/_run.py``, ``socket.py``).
    top = parts[0].removesuffix(".py") if parts else "other"
    return "stdlib" if top in sys.stdlib_module_names else top


def parse(lines: list[str]) -> tuple[Counter[str], Counter[str], int]:
    """Samples by package and by innermost function (``function (package)``), and the total
    on CPU; the ``waiting`` samples are counted under that name but not in the total."""
    by_package: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count_text = line.rstrip("\n").rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        leaf = stack.split(";")[-1]
        match = _FRAME.match(leaf)
        package = package_of(match.group("file")) if match else "other"
        function = match.group("function") if match else leaf
        if function in WAITS:
            by_package[WAITING] += count
            continue
        by_package[package] += count
        by_function[f"{function} ({package})"] += count
        total += count
    return by_package, by_function, total


def render(by_package: Counter[str], by_function: Counter[str], total: int, top: int = 12) -> str:
    waiting = by_package.get(WAITING, 0)
    lines = [f"{total} samples on CPU ({waiting} more waiting in epoll or an idle worker thread, left out)"]
    lines += ["", "by package (self time):"]
    lines += [
        f"  {name:16} {count:6}  {count / total:6.1%}"
        for name, count in by_package.most_common()
        if name != WAITING
    ]
    lines += ["", f"top {top} functions (self time):"]
    lines += [f"  {count:6}  {count / total:6.1%}  {name}" for name, count in by_function.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: _bench_pyspy.py PROFILE.raw", file=sys.stderr)
        return 2
    by_package, by_function, total = parse(Path(argv[0]).read_text().splitlines())
    if not total:
        print("no samples", file=sys.stderr)
        return 1
    print(render(by_package, by_function, total))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
