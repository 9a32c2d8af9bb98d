"""``scripts/bench.py --other-gateway CMD``: another gateway run against the same upstream and
loaded through its HTTP API, here a trivial TCP pass-through (``passthrough_proxy.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

import bench
import msgspec
import pytest
import trio
from _bench_other import open_other, other_command
from _bench_procs import ChildFailed, child_env

PROXY = Path(__file__).with_name("passthrough_proxy.py")


def test_placeholders_are_replaced_and_the_rest_kept() -> None:
    argv = other_command("gw --to {upstream} --listen {host}:{port} --json '{\"a\": 1}'", "http://u:1", 42)
    assert argv == ["gw", "--to", "http://u:1", "--listen", "127.0.0.1:42", "--json", '{"a": 1}']
    with pytest.raises(ValueError, match="port"):
        other_command("gw --to {upstream}", "http://u:1", 42)


def test_a_command_that_needs_port_is_refused_without_it() -> None:
    with pytest.raises(SystemExit):
        bench.parse_args(["--other-gateway", "gw {upstream}"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--paths", "direct,other"])
    args = bench.parse_args(["--other-gateway", "gw {upstream} {port}"])
    assert args.paths == ["direct", "gateway", "http", "other"]
    assert bench.parse_args([]).paths == ["direct", "gateway", "http"]


async def test_a_command_that_exits_fails_clearly(tmp_path: Path) -> None:
    command = f"{sys.executable} -c 'raise SystemExit(3)' {{port}}"
    with pytest.raises(ChildFailed, match="exit status 3"):
        async with open_other(
            command,
            upstream="http://127.0.0.1:9",
            env=child_env({}),
            cpus=None,
            log_path=tmp_path / "other.log",
            start_timeout=30.0,
        ):
            pass


async def test_the_other_gateway_is_stopped_on_exit(tmp_path: Path) -> None:
    async with open_other(
        f"{sys.executable} {PROXY} {{upstream}} {{port}}",
        upstream="http://127.0.0.1:9",
        env=child_env({}),
        cpus=None,
        log_path=tmp_path / "other.log",
        start_timeout=30.0,
    ) as other:
        pid = other.pid
        assert await trio.Path(f"/proc/{pid}").exists()
    # Reaped: no such process any more (not even a zombie).
    assert not await trio.Path(f"/proc/{pid}").exists()
    # Nothing listens on its port any more.
    host, _, port = other.url.removeprefix("http://").rpartition(":")
    with pytest.raises(OSError, match="connect"):
        await trio.open_tcp_stream(host, int(port))


def test_bench_loads_the_other_gateway_like_the_http_door(capsys: pytest.CaptureFixture[str]) -> None:
    status = bench.main(
        [
            "--paths", "direct,other",
            "--other-gateway", f"{sys.executable} {PROXY} {{upstream}} {{port}}",
            "--levels", "2",
            "--requests", "2",
            "--warmup", "0",
            "--repeat", "1",
            "--deltas", "4",
            "--no-pin",
            "--json",
        ]
    )  # fmt: skip
    assert status == 0
    document = msgspec.json.decode(capsys.readouterr().out)
    assert document["config"]["upstream_writes"].startswith("one event per write")
    direct, other = document["summaries"]
    assert (direct["path"], other["path"]) == ("direct", "other")
    # Two streams of two requests, 10 events each, every one through the other gateway.
    assert other["requests"] == 4 and other["errors"] == 0 and other["dropped"] == 0
    assert other["runs"][0]["events"] == 40
    assert other["gateway_cpu_ms_per_req"] is not None and other["gateway_cpu_us_per_event"] is not None


def test_upstream_writes_and_ledger_are_chosen_and_labelled(tmp_path: Path) -> None:
    default = bench.parse_args([])
    assert "--write-per-event" in bench._emulator_args(default.bursty)
    assert bench._writes(default) == "one event per write, back to back (unpaced)"
    assert bench._ledger(default, tmp_path, "x1") == str(tmp_path / "ledger-x1.sqlite3")
    bursty = bench.parse_args(["--bursty", "--ledger", "memory"])
    assert "--write-per-event" not in bench._emulator_args(bursty.bursty)
    assert bench._writes(bursty).startswith("BURSTY")
    assert bench._ledger(bursty, tmp_path, "x1") == ":memory:"
    with pytest.raises(SystemExit):
        bench.parse_args(["--bursty", "--pace-ms", "20"])
