"""A hostile upstream behind the gateway: whatever the API (or something in its place) answers,
the query ends with exactly one terminal frame (or one complete HTTP answer), the bystander
session completes, the gateway stays up and the ledger stays consistent (``fuzzkit.run_case``).

The upstream is ``fuzzkit.FakeUpstream``, a loopback HTTP/1.1 server that writes raw bytes,
so an answer may break SSE, JSON or HTTP itself: garbage instead of a response, deep nesting
in every SSE event kind and in error bodies (also a tool input whose ``partial_json`` pieces
add up to deep JSON), huge events, usage counts that are huge (past 2**63), negative,
fractional or of the wrong type, HTML with 200 and with 5xx, redirects, endless pings,
streams cut anywhere, and broken HTTP framing. The gateway has no retries here
(``max_retries=0``); a broken stream's non-streaming fallback gets the same hostility.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import httpx
import trio
from fuzzkit import (
    EXAMPLES,
    FUZZ,
    HOSTILE_MODEL,
    Answer,
    Seen,
    Stack,
    check_answer,
    connect,
    door_errors,
    finish_query,
    head,
    healthy_events,
    message_json,
    normal_answer,
    raw,
    receive,
    run_case,
    sse_event,
    terminal_cost,
)
from harness import API_VERSION, chat
from hostile import DEPTHS, deep
from hypothesis import example, given, settings
from hypothesis import strategies as st

from protocol.frames import ErrorFrame, Ready, TokenCount

# A 33 MiB event (long hunts only) takes the gateway many seconds of CPU.
ANSWER_TIMEOUT: Final = 90.0
# The WebSocket client aborts an answer that is still going after this many event frames
# (the endless pings: the upstream never ends them, and their chunks keep the idle
# watchdog content).
ABORT_AFTER_EVENTS: Final = 40
# Pings the upstream writes before it gives up and hangs up (a bound for the HTTP door,
# which holds pings back and so never sees content to abort on).
MAX_PINGS: Final = 20_000
EVENT_KINDS: Final = ("message_start", "content_block_start", "content_block_delta", "input_json_delta",
                      "message_delta", "error_event", "error_body", "json_message")
# Event sizes: past the API's 32 MiB request limit only in a long hunt (a 33 MiB event takes
# the gateway 6 to 15 s of CPU on the development machine: too slow for every run).
HUGE_SIZES: Final = [64 * 1024, 1024 * 1024, 4 * 1024 * 1024] + ([33 * 1024 * 1024] if EXAMPLES > 25 else [])
USAGE_VALUES: Final = st.sampled_from(
    ["9223372036854775807", "9223372036854775808", "18446744073709551617", "1" + "0" * 30, "1" + "0" * 400,
     "-5", "-9223372036854775809", "1.5", "1e308", "1e400", '"12"', "null", "true", '{"a":1}', "[]", "0"]
)
USAGE_FIELDS: Final = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def with_event(index: int, replacement: bytes) -> list[bytes]:
    events = healthy_events(HOSTILE_MODEL)
    events[index] = replacement
    return events


def sse(events: list[bytes], status: int = 200) -> Answer:
    return raw(head(status, "text/event-stream"), *events)


@dataclass(frozen=True)
class Hostile:
    """One hostile behaviour of the upstream: a short name for reports, and its answer to
    a request (streaming, non-streaming or count_tokens)."""

    name: str
    params: tuple[object, ...]

    def __repr__(self) -> str:
        shown = ", ".join(repr(p)[:80] for p in self.params)
        return f"Hostile({self.name}: {shown})"

    def answer(self, seen: Seen) -> Answer:
        answer: Answer = getattr(self, "_" + self.name)(seen, *self.params)
        return answer

    # -- garbage and framing ------------------------------------------------------------

    def _garbage(self, seen: Seen, data: bytes) -> Answer:
        return raw(data)

    def _garbage_body(self, seen: Seen, status: int, data: bytes) -> Answer:
        return raw(head(status, "text/event-stream" if seen.streaming else "application/json"), data)

    def _framing(self, seen: Seen, kind: str) -> Answer:
        match kind:
            case "bad_chunked":
                return raw(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nxx\r\n")
            case "short_content_length":
                return raw(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 5000\r\n\r\n{\"id\":")
            case "bad_content_length":
                return raw(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: -1\r\n\r\n{}")
            case "status_999":
                return raw(b"HTTP/1.1 999 Whatever\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{}")
            case "header_without_colon":
                return raw(b"HTTP/1.1 200 OK\r\nthis is not a header\r\n\r\n")
            case "huge_header":
                return raw(b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * 200_000 + b"\r\n\r\n")
            case "no_body":
                return raw(head(200, "text/event-stream" if seen.streaming else "application/json"))
            case _:
                return raw(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n" + b"data: x\r\n" * 10 + b"\n\n\n\r\r")

    # -- deep nesting in every event kind --------------------------------------------------

    def _deep(self, seen: Seen, kind: str, depth: int, shape: str) -> Answer:
        nested = deep(depth, shape)
        if seen.counting:
            return raw(head(200), ('{"input_tokens":' + nested + "}").encode())
        if not seen.streaming or kind == "json_message":
            return raw(head(200), message_json(HOSTILE_MODEL, usage='{"input_tokens":1,"output_tokens":' + nested + "}").encode())
        match kind:
            case "message_start":
                start = ('{"type":"message_start","message":{"id":"m","type":"message","role":"assistant",'
                         f'"model":"{HOSTILE_MODEL}","content":{nested},"stop_reason":null,"usage":{nested}}}}}')
                return sse(with_event(0, sse_event("message_start", start)))
            case "content_block_start":
                block = ('{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"t",'
                         f'"name":"n","input":{nested}}}}}')
                return sse(with_event(1, sse_event("content_block_start", block)))
            case "content_block_delta":
                delta = f'{{"type":"content_block_delta","index":0,"delta":{nested}}}'
                return sse(with_event(2, sse_event("content_block_delta", delta)))
            case "input_json_delta":
                return sse(self._deep_tool_input(nested))
            case "message_delta":
                delta = f'{{"type":"message_delta","delta":{nested},"usage":{{"output_tokens":{nested}}}}}'
                return sse(with_event(4, sse_event("message_delta", delta)))
            case "error_event":
                events = healthy_events(HOSTILE_MODEL)[:3]
                events.append(sse_event("error", f'{{"type":"error","error":{nested}}}'))
                return sse(events)
            case _:
                return raw(head(529), f'{{"type":"error","error":{{"type":"overloaded_error","message":{nested}}}}}'.encode())

    @staticmethod
    def _deep_tool_input(nested: str) -> list[bytes]:
        """A tool_use block whose input_json_delta pieces add up to ``nested``."""
        escaped = nested.replace('"', '\\"')
        pieces = [escaped[i : i + 4096] for i in range(0, len(escaped), 4096)]
        # A piece must not end inside an escape (a backslash split from its quote).
        merged: list[str] = []
        for piece in pieces:
            if merged and merged[-1].endswith("\\"):
                merged[-1] += piece
            else:
                merged.append(piece)
        events = healthy_events(HOSTILE_MODEL)
        block = ('{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_1",'
                 '"name":"t","input":{}}}')
        deltas = [
            sse_event("content_block_delta", '{"type":"content_block_delta","index":0,"delta":'
                      '{"type":"input_json_delta","partial_json":"' + piece + '"}}')
            for piece in merged
        ]
        return [events[0], sse_event("content_block_start", block), *deltas, *events[3:]]

    # -- size -------------------------------------------------------------------------------

    def _huge(self, seen: Seen, kind: str, size: int) -> Answer:
        if not seen.streaming:
            return raw(head(200), message_json(HOSTILE_MODEL, text="y" * size).encode())
        match kind:
            case "text_delta":
                delta = '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"' + "y" * size + '"}}'
                return sse(with_event(2, sse_event("content_block_delta", delta)))
            case "unknown_event":
                events = healthy_events(HOSTILE_MODEL)
                events.insert(1, sse_event("surprise", '{"type":"surprise","x":"' + "z" * size + '"}'))
                return sse(events)
            case _:
                # One data line that never ends.
                return sse([healthy_events(HOSTILE_MODEL)[0], b"data: " + b"w" * size])

    # -- usage ------------------------------------------------------------------------------

    def _usage(self, seen: Seen, values: tuple[tuple[str, str], ...]) -> Answer:
        usage = "{" + ",".join(f'"{name}":{value}' for name, value in values) + "}"
        if seen.counting:
            return raw(head(200), ('{"input_tokens":' + values[0][1] + "}").encode())
        if not seen.streaming:
            return raw(head(200), message_json(HOSTILE_MODEL, usage=usage).encode())
        start = ('{"type":"message_start","message":{"id":"m","type":"message","role":"assistant",'
                 f'"model":"{HOSTILE_MODEL}","content":[],"stop_reason":null,"usage":{usage}}}}}')
        delta = ('{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},'
                 f'"usage":{usage}}}')
        events = with_event(0, sse_event("message_start", start))
        events[4] = sse_event("message_delta", delta)
        return sse(events)

    # -- not the API at all -------------------------------------------------------------------

    def _html(self, seen: Seen, status: int) -> Answer:
        page = b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body><h1>oops</h1></body></html>"
        return raw(head(status, "text/html"), page)

    def _redirect(self, seen: Seen, status: int, location: str) -> Answer:
        return raw(head(status, "text/plain", (f"location: {location}",)), b"moved")

    def _pings(self, seen: Seen) -> Answer:
        if not seen.streaming:
            return normal_answer(seen)

        async def write(stream: trio.abc.Stream) -> None:
            await stream.send_all(head(200, "text/event-stream") + healthy_events(HOSTILE_MODEL)[0])
            ping = sse_event("ping", '{"type":"ping"}')
            for _ in range(MAX_PINGS // 100):
                await stream.send_all(ping * 100)

        return write

    def _truncated(self, seen: Seen, fraction: float) -> Answer:
        if seen.counting:
            whole = b'{"input_tokens":12}'
            return raw(head(200), whole[: int(len(whole) * fraction)])
        if not seen.streaming:
            whole = message_json(HOSTILE_MODEL).encode()
            return raw(head(200), whole[: int(len(whole) * fraction)])
        whole = b"".join(healthy_events(HOSTILE_MODEL))
        return raw(head(200, "text/event-stream"), whole[: int(len(whole) * fraction)])


def make(name: str, *params: st.SearchStrategy[object]) -> st.SearchStrategy[Hostile]:
    return st.builds(Hostile, st.just(name), st.tuples(*params))


STATUSES: Final = st.sampled_from([200, 400, 429, 500, 502, 503, 529])
BROKEN: Final = st.one_of(
    make("garbage", st.binary(min_size=1, max_size=2048)),
    make("garbage_body", STATUSES, st.binary(max_size=4096)),
    make("framing", st.sampled_from(["bad_chunked", "short_content_length", "bad_content_length", "status_999",
                                     "header_without_colon", "huge_header", "no_body"])),
    make("truncated", st.floats(0.0, 0.999)),
)
NOT_THE_API: Final = st.one_of(
    make("html", st.sampled_from([200, 500, 502, 503])),
    make("redirect", st.sampled_from([301, 302, 303, 307, 308]),
         st.sampled_from(["/v1/messages", "http://127.0.0.1:1/v1/messages", "javascript:alert(1)", "", "//x"])),
    make("framing", st.just("odd_lines")),
)
DEEP_EVENTS: Final = make("deep", st.sampled_from(EVENT_KINDS), DEPTHS, st.sampled_from(["array", "object", "mixed"]))
HUGE_EVENTS: Final = make(
    "huge",
    st.sampled_from(["text_delta", "unknown_event", "endless_line"]),
    st.sampled_from(HUGE_SIZES),
)
ODD_USAGE: Final = make(
    "usage",
    st.lists(st.tuples(st.sampled_from(USAGE_FIELDS), USAGE_VALUES), min_size=1, max_size=4,
             unique_by=lambda pair: pair[0]).map(tuple),
)


DOORS: Final = st.sampled_from(["ws", "ws", "ws_count", "http_json", "http_sse"])


async def through_websocket(stack: Stack, count: bool) -> None:
    async with connect(stack.server, "hostile") as client:
        assert isinstance(await client.receive(), Ready)
        with trio.fail_after(ANSWER_TIMEOUT):
            if count:
                await client.send(type="count_tokens", id="bad", request=chat("count me"))
                while getattr(frame := await receive(client), "id", None) != "bad":
                    pass
                assert isinstance(frame, (TokenCount, ErrorFrame)), frame
                return
            await client.send(type="query", id="bad", request=chat("hostile upstream"))
            end = await finish_query(client, "bad", [], abort_after_events=ABORT_AFTER_EVENTS)
        stack.report("hostile", terminal_cost(end))


async def through_http(stack: Stack, stream: bool) -> None:
    assert stack.server.http_url is not None
    request = {**chat("hostile upstream"), "stream": stream}
    headers = {**API_VERSION, "x-switchboard-session": "hostile"}
    with door_errors() as errors:
        async with httpx.AsyncClient(base_url=stack.server.http_url, timeout=None) as client:
            with trio.fail_after(ANSWER_TIMEOUT):
                response = await client.post("/v1/messages", json=request, headers=headers)
    check_answer(stack, "/v1/messages", headers, response)
    assert not errors, errors


def hostile_case(hostile: Hostile, door: str) -> None:
    async def case(stack: Stack) -> None:
        stack.upstream.hostile = hostile.answer
        if door.startswith("ws"):
            await through_websocket(stack, count=door == "ws_count")
        else:
            await through_http(stack, stream=door == "http_sse")
        stack.upstream.hostile = normal_answer

    run_case(case)


@FUZZ
@given(hostile=BROKEN, door=DOORS)
@example(Hostile("truncated", (0.94,)), "http_sse")  # message_delta whole, message_stop lost
@example(Hostile("truncated", (0.98,)), "ws")  # cut inside message_stop
@example(Hostile("garbage", (b"\x00" * 64,)), "ws")
def test_garbage_broken_http_and_cut_streams_end_the_query_once(hostile: Hostile, door: str) -> None:
    hostile_case(hostile, door)


@FUZZ
@given(hostile=NOT_THE_API, door=DOORS)
@example(Hostile("framing", ("odd_lines",)), "ws")  # data lines that are not JSON
@example(Hostile("html", (502,)), "http_json")
# An upstream redirect was answered with its status and location (an SDK follows it).
@example(Hostile("redirect", (308, "javascript:alert(1)")), "http_sse")
@example(Hostile("redirect", (307, "http://127.0.0.1:1/v1/messages")), "http_json")
def test_html_redirects_and_non_json_events_end_the_query_once(hostile: Hostile, door: str) -> None:
    hostile_case(hostile, door)


@FUZZ
@given(hostile=DEEP_EVENTS, door=DOORS)
@example(Hostile("deep", ("input_json_delta", 5_000, "array")), "ws")
@example(Hostile("deep", ("error_body", 100_000, "object")), "http_json")
# Within the upstream's bound, yet two levels deeper once inside the frame that relays it.
@example(Hostile("deep", ("message_start", 126, "object")), "ws")
def test_deep_nesting_in_any_event_or_error_body_ends_the_query_once(hostile: Hostile, door: str) -> None:
    hostile_case(hostile, door)


@settings(FUZZ, max_examples=max(1, EXAMPLES // 2))
@given(hostile=HUGE_EVENTS, door=DOORS)
# Past the 16 MiB bound of one SSE event (protocol/sse.py): refused as it arrives.
@example(Hostile("huge", ("endless_line", 17 * 1024 * 1024)), "ws")
@example(Hostile("huge", ("text_delta", 17 * 1024 * 1024)), "http_sse")
def test_huge_events_end_the_query_once(hostile: Hostile, door: str) -> None:
    hostile_case(hostile, door)


@FUZZ
@given(hostile=ODD_USAGE, door=DOORS)
@example(Hostile("usage", ((("input_tokens", "9223372036854775808"),),)), "ws")  # 2**63
@example(Hostile("usage", ((("output_tokens", "-5"), ("cache_read_input_tokens", '"12"')),)), "http_sse")
# 10**9 web searches: $10**7, past an SQLite integer (once lost with an OverflowError).
@example(Hostile("usage", ((("server_tool_use", '{"web_search_requests":1000000000}'),),)), "ws")
def test_huge_negative_fractional_or_mistyped_usage_ends_the_query_once(hostile: Hostile, door: str) -> None:
    hostile_case(hostile, door)


@FUZZ
@given(door=DOORS)
def test_endless_pings_end_with_the_client_or_the_upstream(door: str) -> None:
    hostile_case(Hostile("pings", ()), door)
