"""Every fault kind over real loopback HTTP; waits run on the autojump clock."""

from __future__ import annotations

import email.utils
import time
from typing import Any

import httpx
import pytest
import trio
from emulator_testkit import CACHEABLE_TEXT, body, parse_sse, prompt

from emulator import Emulator, Fault, RecordedRequest, parse_fault


def _envelope(response: httpx.Response) -> dict[str, Any]:
    envelope: dict[str, Any] = response.json()
    assert envelope["type"] == "error"
    assert envelope["request_id"] == response.headers["request-id"]
    error: dict[str, Any] = envelope["error"]
    assert error.keys() == {"type", "message"}
    return error


@pytest.mark.parametrize(
    ("spec", "status", "error_type", "message"),
    [
        (
            "429",
            429,
            "rate_limit_error",
            "This request would exceed your account's rate limit. Please try again later.",
        ),
        ("rate_limit", 429, "rate_limit_error", None),
        ("529", 529, "overloaded_error", "Overloaded"),
        ("overloaded", 529, "overloaded_error", "Overloaded"),
        ("500", 500, "api_error", "Internal server error"),
        ("502", 502, "api_error", None),
        ("503", 503, "api_error", None),
        ("504", 504, "timeout_error", None),
        ("408", 408, "timeout_error", None),
        ("409", 409, "conflict_error", None),
        ("401", 401, "authentication_error", "invalid x-api-key"),
        ("403", 403, "permission_error", None),
        ("403:message=no%2C never", 403, "permission_error", "no, never"),
        ("400:message=bad thing", 400, "invalid_request_error", "bad thing"),
        (
            "status:status=418,type=teapot_error,message=short and stout",
            418,
            "teapot_error",
            "short and stout",
        ),
        ("status:status=507", 507, "api_error", None),
    ],
)
async def test_status_faults(
    client: httpx.AsyncClient,
    emu: Emulator,
    spec: str,
    status: int,
    error_type: str,
    message: str | None,
) -> None:
    emu.script(spec, spec)
    for stream in (True, False):
        response = await client.post("/v1/messages", json=body(stream=stream))
        assert response.status_code == status
        error = _envelope(response)
        assert error["type"] == error_type
        if message is not None:
            assert error["message"] == message
        assert "anthropic-ratelimit-requests-limit" in response.headers
    assert emu.requests[0].fault == parse_fault(spec)


async def test_status_fault_headers(client: httpx.AsyncClient, emu: Emulator) -> None:
    emu.script(
        "429:retry_after=7,retry_after_ms=1500,should_retry=false,reset=1900000000,overage_disabled_reason=out_of_credits",
        "529:retry_after_date=30,should_retry=true",
    )
    first = await client.post("/v1/messages", json=body())
    assert first.headers["retry-after"] == "7"
    assert first.headers["retry-after-ms"] == "1500"
    assert first.headers["x-should-retry"] == "false"
    assert first.headers["anthropic-ratelimit-unified-reset"] == "1900000000"
    assert first.headers["anthropic-ratelimit-unified-overage-disabled-reason"] == "out_of_credits"
    second = await client.post("/v1/messages", json=body())
    assert second.status_code == 529
    when = email.utils.parsedate_to_datetime(second.headers["retry-after"]).timestamp()
    assert 0 < when - time.time() <= 31
    assert second.headers["x-should-retry"] == "true"
    assert "retry-after" not in (await client.post("/v1/messages", json=body())).headers


async def test_context_overflow_text(client: httpx.AsyncClient, emu: Emulator) -> None:
    counted = (await client.post("/v1/messages/count_tokens", json=prompt())).json()["input_tokens"]
    emu.script("context_overflow:input=188059,limit=200000", "context_overflow")
    response = await client.post("/v1/messages", json=body(max_tokens=20000))
    assert _envelope(response) == {
        "type": "invalid_request_error",
        "message": "input length and `max_tokens` exceed context limit: 188059 + 20000 > 200000,"
        " decrease input length or `max_tokens` and try again",
    }
    defaults = await client.post("/v1/messages", json=body(max_tokens=64000))
    assert f"context limit: {counted} + 64000 > 200000," in _envelope(defaults)["message"]


async def test_prompt_too_long(client: httpx.AsyncClient, emu: Emulator) -> None:
    emu.script("prompt_too_long:tokens=213021,limit=200000")
    response = await client.post("/v1/messages", json=body())
    assert response.status_code == 400
    assert _envelope(response)["message"] == "prompt is too long: 213021 tokens > 200000 maximum"


async def test_overloaded_midstream(client: httpx.AsyncClient, emu: Emulator) -> None:
    emu.script("overloaded_midstream:after=4")
    response = await client.post("/v1/messages", json=body(stream=True))
    assert response.status_code == 200
    raw_events = response.text.split("\n\n")
    assert raw_events[4] == (
        'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}'
    )
    assert [name for name, _ in parse_sse(response.text)][-2:] == ["content_block_delta", "error"]
    record = emu.requests[0]
    await record.finished.wait()
    assert (record.status, record.events_sent, record.completed) == (200, 5, True)
    # The body ended cleanly, so the connection is reused.
    assert (await client.post("/v1/messages", json=body())).status_code == 200


async def test_error_midstream_options(client: httpx.AsyncClient, emu: Emulator) -> None:
    emu.script("error_midstream", "error_midstream:after=0,type=rate_limit_error,message=slow down")
    first = parse_sse((await client.post("/v1/messages", json=body(stream=True))).text)
    assert len(first) == 4
    assert first[-1][1] == {
        "type": "error",
        "error": {"type": "api_error", "message": "Internal server error"},
    }
    second = parse_sse((await client.post("/v1/messages", json=body(stream=True))).text)
    assert second == [
        ("error", {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}})
    ]


async def test_midstream_faults_on_non_streaming_requests_become_statuses(
    client: httpx.AsyncClient, emu: Emulator
) -> None:
    emu.script("overloaded_midstream", "error_midstream:type=rate_limit_error")
    assert (await client.post("/v1/messages", json=body())).status_code == 529
    response = await client.post("/v1/messages", json=body())
    assert (response.status_code, _envelope(response)["type"]) == (429, "rate_limit_error")


async def test_drop_mid_stream(client: httpx.AsyncClient, emu: Emulator) -> None:
    emu.script("drop")
    received: list[str] = []

    async def read() -> None:
        async with client.stream("POST", "/v1/messages", json=body(stream=True)) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                received.append(line)

    with pytest.raises(httpx.RemoteProtocolError):
        await read()
    assert [line for line in received if line.startswith("event:")] == [
        "event: message_start",
        "event: content_block_start",
        "event: ping",
    ]
    record = emu.requests[0]
    await record.finished.wait()
    assert (record.status, record.events_sent, record.completed, record.disconnected) == (
        200,
        3,
        False,
        False,
    )
    assert (await client.post("/v1/messages", json=body())).status_code == 200


async def test_drop_before_the_status_line(client: httpx.AsyncClient, emu: Emulator) -> None:
    emu.script("drop:after=0", "drop:after=0")
    with pytest.raises(httpx.RemoteProtocolError):
        await client.post("/v1/messages", json=body(stream=True))
    with pytest.raises(httpx.RemoteProtocolError):
        await client.post("/v1/messages", json=body())
    assert [record.status for record in emu.requests] == [None, None]


async def test_drop_a_non_streaming_body_half_way(client: httpx.AsyncClient, emu: Emulator) -> None:
    emu.script("drop:after=1")
    with pytest.raises(httpx.RemoteProtocolError):
        await client.post("/v1/messages", json=body())
    assert emu.requests[0].status == 200


async def test_stall_then_continue(
    client: httpx.AsyncClient, emu: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    emu.script("stall:after=2,seconds=30")
    start = trio.current_time()
    async with client.stream("POST", "/v1/messages", json=body(stream=True)) as response:
        events_at = []
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                events_at.append(trio.current_time() - start)
    assert events_at[:2] == [0, 0]
    assert set(events_at[2:]) == {30}
    record = emu.requests[0]
    await record.finished.wait()
    assert record.completed


async def test_stall_non_streaming(
    client: httpx.AsyncClient, emu: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    emu.script("stall:seconds=12", "stall:after=0,seconds=3")
    start = trio.current_time()
    assert (await client.post("/v1/messages", json=body())).json()["type"] == "message"
    assert trio.current_time() - start == 12
    assert (await client.post("/v1/messages", json=body())).status_code == 200
    assert trio.current_time() - start == 15


async def _abandon(
    client: httpx.AsyncClient, emu: Emulator, request: dict[str, Any]
) -> RecordedRequest:
    """Send ``request``, wait until the emulator holds it, then make the client leave."""
    index = len(emu.requests)

    async def read() -> None:
        async with client.stream("POST", "/v1/messages", json=request) as response:
            await response.aread()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        record = await emu.wait_for_request(index)
        await trio.testing.wait_all_tasks_blocked()
        # Cancelling the request makes httpx close the connection.
        nursery.cancel_scope.cancel()
    await record.finished.wait()
    return record


async def test_client_leaving_during_a_stall_is_recorded(
    client: httpx.AsyncClient, emu: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    emu.script("stall:after=3")  # forever
    record = await _abandon(client, emu, body(stream=True))
    assert (record.status, record.events_sent, record.completed, record.disconnected) == (
        200,
        3,
        False,
        True,
    )
    assert (await client.post("/v1/messages", json=body())).status_code == 200


async def test_slow_first_byte(
    client: httpx.AsyncClient, emu: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    emu.script("slow_first_byte", "slow_first_byte:seconds=0.5")
    start = trio.current_time()
    response = await client.post("/v1/messages", json=body(stream=True))
    assert trio.current_time() - start == 5
    assert parse_sse(response.text)[-1][0] == "message_stop"
    await client.post("/v1/messages", json=body())
    assert trio.current_time() - start == 5.5


async def test_client_leaving_during_a_slow_first_byte(
    client: httpx.AsyncClient, emu: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    emu.script("slow_first_byte:seconds=100")
    record = await _abandon(client, emu, body())
    assert (record.status, record.disconnected, record.completed) == (None, True, False)
    assert trio.current_time() < 100


async def test_bad_stream(client: httpx.AsyncClient, emu: Emulator) -> None:
    emu.script("bad_stream")
    response = await client.post("/v1/messages", json=body(stream=True))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert "event:" not in response.text
    assert parse_fault("bad_stream") == emu.requests[0].fault


async def test_pace_on_the_trio_clock(
    client: httpx.AsyncClient, emu: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    start = trio.current_time()
    headers = {"x-emulator-deltas": "4", "x-emulator-pace-ms": "250"}
    response = await client.post("/v1/messages", json=body(stream=True), headers=headers)
    events = parse_sse(response.text)
    assert len(events) == 10
    assert trio.current_time() - start == 9 * 0.25


async def test_queue_is_fifo_and_beats_header_and_directive(
    client: httpx.AsyncClient, emu: Emulator
) -> None:
    emu.script(Fault("429"), "ok", "503")
    headers = {"x-emulator-fault": "500"}
    request = body("hi <<emulator:529:times=all>>")
    statuses = [
        (await client.post("/v1/messages", json=request, headers=headers)).status_code
        for _ in range(5)
    ]
    assert statuses == [429, 200, 503, 500, 500]
    assert (await client.post("/v1/messages", json=request)).status_code == 529
    assert emu.pending_faults == ()


async def test_directive_times(client: httpx.AsyncClient, emu: Emulator) -> None:
    retried = body("tell me <<emulator:529:times=2>>")
    statuses = [(await client.post("/v1/messages", json=retried)).status_code for _ in range(3)]
    assert statuses == [529, 529, 200]
    # Counted per directive text: a different directive starts its own count.
    other = body("again <<emulator:529:times=1>>")
    assert [(await client.post("/v1/messages", json=other)).status_code for _ in range(2)] == [
        529,
        200,
    ]
    # The echo leaves the directive out.
    assert (await client.post("/v1/messages", json=other)).json()["content"][0][
        "text"
    ] == "Echo: again"


async def test_directive_applies_to_every_request_carrying_it(
    client: httpx.AsyncClient, emu: Emulator
) -> None:
    # Without times= a directive is like the header: every request carrying it, however
    # many, from however many conversations, gets the fault; one without it does not.
    request = body("<<emulator:529>> hi")
    statuses = [(await client.post("/v1/messages", json=request)).status_code for _ in range(4)]
    assert statuses == [529, 529, 529, 529]
    other_conversation = body("<<emulator:529>> something else")
    assert (await client.post("/v1/messages", json=other_conversation)).status_code == 529
    assert (await client.post("/v1/messages", json=body("hi"))).status_code == 200
    assert [record.fault for record in emu.requests] == [Fault("529")] * 5 + [None]


async def test_directive_options_outlive_the_fault(
    client: httpx.AsyncClient, emu: Emulator
) -> None:
    request = body("<<emulator:overloaded_midstream:after=1,deltas=3,times=1>>", stream=True)
    first = parse_sse((await client.post("/v1/messages", json=request)).text)
    assert [name for name, _ in first] == ["message_start", "error"]
    second = parse_sse((await client.post("/v1/messages", json=request)).text)
    texts = [data["delta"]["text"] for name, data in second if name == "content_block_delta"]
    assert texts == ["word0 ", "word1 ", "word2"]


async def test_ok_directive_sets_deltas(client: httpx.AsyncClient, emu: Emulator) -> None:
    request = body("go <<emulator:ok:deltas=56>>", max_tokens=100)
    message = (await client.post("/v1/messages", json=request)).json()
    assert message["content"][0]["text"].split() == [f"word{i}" for i in range(56)]
    assert message["usage"]["output_tokens"] == 57
    assert emu.requests[0].fault == Fault("ok", deltas=56)


async def test_bad_fault_specs_are_400s(client: httpx.AsyncClient, emu: Emulator) -> None:
    emu.script("500")
    bad_header = await client.post(
        "/v1/messages", json=body(), headers={"x-emulator-fault": "teapot"}
    )
    assert bad_header.status_code == 400
    assert "unknown fault kind" in _envelope(bad_header)["message"]
    bad_directive = await client.post("/v1/messages", json=body("<<emulator:drop:after=x>>"))
    assert bad_directive.status_code == 400
    bad_option = await client.post(
        "/v1/messages", json=body(), headers={"x-emulator-deltas": "many"}
    )
    assert bad_option.status_code == 400
    # Nothing was consumed by the rejected requests.
    assert emu.pending_faults == (Fault("500"),)


async def test_requests_failing_checks_do_not_consume_faults(
    client: httpx.AsyncClient, emu: Emulator
) -> None:
    emu.script("529")
    assert (await client.post("/v1/messages", json={"model": "m"})).status_code == 400
    assert (await client.post("/v1/messages", json=body())).status_code == 529


async def test_count_tokens_takes_queued_faults(client: httpx.AsyncClient, emu: Emulator) -> None:
    emu.script("429", "drop:after=0")
    assert (await client.post("/v1/messages/count_tokens", json=prompt())).status_code == 429
    with pytest.raises(httpx.RemoteProtocolError):
        await client.post("/v1/messages/count_tokens", json=prompt())
    # Directives are for Messages requests only.
    assert (
        await client.post("/v1/messages/count_tokens", json=prompt("<<emulator:529>>"))
    ).status_code == 200


async def test_admin_endpoints(client: httpx.AsyncClient, emu: Emulator) -> None:
    queued = await client.post(
        "/_emulator/faults", json=["rate_limit:retry_after=1", "drop:after=0"]
    )
    assert queued.json() == {"queued": ["429:retry_after=1", "drop:after=0"], "pending": 2}
    assert (await client.post("/v1/messages", json=body())).status_code == 429
    with pytest.raises(httpx.RemoteProtocolError):
        await client.post("/v1/messages", json=body())
    log = (await client.get("/_emulator/requests")).json()
    assert [(entry["path"], entry["status"], entry["fault"]) for entry in log] == [
        ("/_emulator/faults", 200, None),
        ("/v1/messages", 429, "429:retry_after=1"),
        ("/v1/messages", None, "drop:after=0"),
        ("/_emulator/requests", None, None),
    ]
    assert log[1].keys() >= {"index", "events_sent", "completed", "disconnected"}
    bad = await client.post("/_emulator/faults", json=["nonsense"])
    assert bad.status_code == 400
    assert (await client.post("/_emulator/faults", json={"not": "a list"})).status_code == 400
    await client.post("/_emulator/faults", json=["529"])
    assert (await client.post("/_emulator/reset")).json() == {"reset": True}
    assert emu.requests == [] and emu.pending_faults == ()
    assert (await client.post("/v1/messages", json=body())).status_code == 200


async def test_reset_clears_everything(client: httpx.AsyncClient, emu: Emulator) -> None:
    system = [{"type": "text", "text": CACHEABLE_TEXT, "cache_control": {"type": "ephemeral"}}]
    first = (await client.post("/v1/messages", json=body(system=system))).json()["usage"]
    assert first["cache_creation_input_tokens"] > 0
    emu.script("500")
    emu.reset()
    usage = (await client.post("/v1/messages", json=body(system=system))).json()["usage"]
    assert usage["cache_read_input_tokens"] == 0
    assert [record.index for record in emu.requests] == [0]
