"""The py-spy breakdown: each sample charged to the package of its innermost frame."""

from __future__ import annotations

from _bench_pyspy import package_of, parse

SITE = "/work/.venv/lib/python3.11/site-packages"


def test_packages_of_frames() -> None:
    assert package_of(f"{SITE}/trio/_core/_run.py") == "trio"
    assert package_of(f"{SITE}/h11/_connection.py") == "h11"
    assert package_of(f"{SITE}/typing_extensions.py") == "typing_extensions"
    assert package_of("/work/wt/bench/actors/stream_relay.py") == "actors"
    assert package_of("/work/wt/bench/protocol/sse.py") == "protocol"
    assert package_of("/usr/lib/python3.11/socket.py") == "stdlib"
    assert package_of("httpcore/_async/http11.py") == "httpcore"


def test_samples_go_to_the_innermost_frame() -> None:
    lines = [
        f"<module> (x.py:1);run (actors/relay.py:10);send_all ({SITE}/trio/_highlevel_socket.py:5) 7",
        "<module> (x.py:1);run (actors/relay.py:12) 3",
        f"<module> (x.py:1);next_event ({SITE}/h11/_connection.py:9);_parse (/work/wt/bench/actors/a.py:2) 2",
        "garbage without a count",
    ]
    by_package, by_function, total = parse(lines)
    assert total == 12
    assert by_package == {"trio": 7, "actors": 5}
    assert by_function["send_all (trio)"] == 7


def test_waits_are_set_aside_and_generated_code_has_its_package() -> None:
    lines = [
        f"run (actors/cli/commands.py:1);get_events ({SITE}/trio/_core/_io_epoll.py:3) 50".replace(
            "get_events", "EpollIOManager.get_events"
        ),
        f"_bootstrap (threading.py:1);WorkerThread._work ({SITE}/trio/_core/_thread_cache.py:2) 20",
        "run (actors/cli/commands.py:1);__init__ (<attrs generated methods outcome._impl.Value>:1) 4",
        "run (actors/cli/commands.py:1);helper (contextlib.py:1) 1",
    ]
    by_package, _, total = parse(lines)
    assert total == 5
    assert by_package == {"waiting": 70, "outcome": 4, "stdlib": 1}
