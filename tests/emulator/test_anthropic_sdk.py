"""The official anthropic SDK (sync client, in a worker thread) against the emulator.

Real clock here: the SDK runs in its own thread, outside trio's control of time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import anthropic
import pytest
import trio
from emulator_testkit import CACHEABLE_TEXT, WEATHER_TOOL

from emulator import Emulator

T = TypeVar("T")
ARGS: dict[str, Any] = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 256,
    "messages": [{"role": "user", "content": "hello from the sdk"}],
}


@pytest.fixture
async def emu(nursery: trio.Nursery) -> Emulator:
    emulator = Emulator()
    await nursery.start(emulator.run)
    return emulator


@pytest.fixture
def sdk(emu: Emulator) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(api_key="test-key", base_url=emu.url, max_retries=0) as client:
        yield client


async def call(fn: Callable[[], T]) -> T:
    """Run a blocking SDK call in a worker thread while the emulator serves."""
    return await trio.to_thread.run_sync(fn)


def _comparable(message: anthropic.types.Message) -> dict[str, Any]:
    """The message without per-request ids, as plain data."""
    data = message.model_dump(exclude={"id"})
    for block in data["content"]:
        block.pop("parsed_output", None)
        if block["type"] == "tool_use":
            block["id"] = "toolu"
    return data


async def test_non_streaming_message(sdk: anthropic.Anthropic, emu: Emulator) -> None:
    message = await call(lambda: sdk.messages.create(**ARGS))
    assert message.id.startswith("msg_emu_")
    assert message.content[0].type == "text"
    assert message.content[0].text == "Echo: hello from the sdk"
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 5 + 1  # five words, one block
    assert message._request_id == emu.requests[0].request_id
    # SDK 2.x sends the key as a bearer token and the newer API version.
    assert emu.requests[0].headers["authorization"] == "Bearer test-key"
    assert emu.requests[0].headers["anthropic-version"] == "2026-10-21"


async def test_stream_matches_non_streaming(sdk: anthropic.Anthropic) -> None:
    def streamed() -> tuple[list[str], anthropic.types.Message]:
        with sdk.messages.stream(**ARGS) as stream:
            texts = list(stream.text_stream)
            return texts, stream.get_final_message()

    texts, final = await call(streamed)
    message = await call(lambda: sdk.messages.create(**ARGS))
    assert texts == ["Echo: ", "hello ", "from ", "the ", "sdk"]
    assert _comparable(final) == _comparable(message)


async def test_thinking_and_tool_use_streams(sdk: anthropic.Anthropic) -> None:
    args = {
        **ARGS,
        "messages": [{"role": "user", "content": "use get_weather"}],
        "tools": [WEATHER_TOOL],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "max_tokens": 2048,
    }

    def streamed() -> tuple[list[str], anthropic.types.Message]:
        with sdk.messages.stream(**args) as stream:
            kinds: list[str] = [event.type for event in stream]
            return kinds, stream.get_final_message()

    kinds, final = await call(streamed)
    assert "thinking" in kinds and "signature" in kinds and "input_json" in kinds
    assert [block.type for block in final.content] == ["thinking", "text", "tool_use"]
    thinking, _, tool = final.content
    assert thinking.type == "thinking" and thinking.signature and thinking.thinking
    assert tool.type == "tool_use"
    assert (tool.name, tool.input) == ("get_weather", {"location": "Paris", "days": 1})
    assert final.stop_reason == "tool_use"
    message = await call(lambda: sdk.messages.create(**args))
    assert _comparable(final) == _comparable(message)


async def test_forced_tool_choice(sdk: anthropic.Anthropic) -> None:
    args = {**ARGS, "tools": [WEATHER_TOOL], "tool_choice": {"type": "any"}}
    message = await call(lambda: sdk.messages.create(**args))
    assert [block.type for block in message.content] == ["tool_use"]


async def test_count_tokens_matches_usage(sdk: anthropic.Anthropic) -> None:
    system: Any = [
        {"type": "text", "text": CACHEABLE_TEXT, "cache_control": {"type": "ephemeral"}}
    ]
    counted = await call(
        lambda: sdk.messages.count_tokens(
            model=ARGS["model"], messages=ARGS["messages"], system=system
        )
    )
    usage = (await call(lambda: sdk.messages.create(**ARGS, system=system))).usage
    assert usage.cache_creation_input_tokens
    total = (
        usage.input_tokens
        + usage.cache_creation_input_tokens
        + (usage.cache_read_input_tokens or 0)
    )
    assert counted.input_tokens == total


async def test_models_list(sdk: anthropic.Anthropic) -> None:
    page = await call(sdk.models.list)
    assert "claude-opus-4-6" in [model.id for model in page.data]


@pytest.mark.parametrize(
    ("spec", "error_class"),
    [
        ("429", anthropic.RateLimitError),
        ("529", anthropic.OverloadedError),
        ("500", anthropic.InternalServerError),
        ("503", anthropic.ServiceUnavailableError),
        ("504", anthropic.GatewayTimeoutError),
        ("408", anthropic.RequestTimeoutError),
        ("409", anthropic.ConflictError),
        ("401", anthropic.AuthenticationError),
        ("403", anthropic.PermissionDeniedError),
        ("400", anthropic.BadRequestError),
    ],
)
async def test_errors_raise_the_sdk_classes(
    sdk: anthropic.Anthropic, emu: Emulator, spec: str, error_class: type[anthropic.APIStatusError]
) -> None:
    emu.script(spec)
    with pytest.raises(error_class) as caught:
        await call(lambda: sdk.messages.create(**ARGS))
    assert caught.value.request_id == emu.requests[0].request_id
    assert caught.value.status_code == int(spec)


async def test_overloaded_is_an_internal_server_error(
    sdk: anthropic.Anthropic, emu: Emulator
) -> None:
    emu.script("overloaded")
    with pytest.raises(anthropic.InternalServerError) as caught:
        await call(lambda: sdk.messages.create(**ARGS))
    assert caught.value.type == "overloaded_error"


async def test_context_overflow_message_is_intact(sdk: anthropic.Anthropic, emu: Emulator) -> None:
    emu.script("context_overflow:input=190000")
    with pytest.raises(anthropic.BadRequestError) as caught:
        await call(lambda: sdk.messages.create(**ARGS))
    assert caught.value.api_message == (
        "input length and `max_tokens` exceed context limit: 190000 + 256 > 200000,"
        " decrease input length or `max_tokens` and try again"
    )


async def test_midstream_error_raises_from_the_stream(
    sdk: anthropic.Anthropic, emu: Emulator
) -> None:
    emu.script("overloaded_midstream:after=4")

    def streamed() -> None:
        with sdk.messages.stream(**ARGS) as stream:
            stream.until_done()

    with pytest.raises(anthropic.APIStatusError) as caught:
        await call(streamed)
    # The SDK picks the class from the HTTP status (200), not from error.type (docs/reference/wire.md 2.4).
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }


async def test_drop_is_a_connection_error(sdk: anthropic.Anthropic, emu: Emulator) -> None:
    emu.script("drop:after=0")
    with pytest.raises(anthropic.APIConnectionError):
        await call(lambda: sdk.messages.create(**ARGS))


async def test_sdk_retries_honour_retry_after_ms(emu: Emulator) -> None:
    emu.script("429:retry_after_ms=10", "529:retry_after_ms=10")
    with anthropic.Anthropic(api_key="k", base_url=emu.url, max_retries=2) as client:
        message = await call(lambda: client.messages.create(**ARGS))
    assert message.content[0].type == "text"
    assert [record.status for record in emu.requests] == [429, 529, 200]
    assert [record.headers["x-stainless-retry-count"] for record in emu.requests] == ["0", "1", "2"]
