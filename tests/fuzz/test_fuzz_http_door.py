"""Hostile clients at the HTTP door (docs/protocol.md section 2), over real loopback sockets
and the real hypercorn server.

Every request gets a complete answer the API could have given: a message, a token count or
the API's error envelope (a body the door cannot take is the client's error, 4xx), an SSE
stream that ends with ``message_stop`` or an ``error`` event; never hypercorn's own bare 500
for a handler that raised (hypercorn logs it on ``switchboard.httpdoor.server``, which fails
the example). After each case the bystander session completes, the gateway serves a new
connection, and the ledger is consistent (``fuzzkit.run_case``).
"""

from __future__ import annotations

from typing import Final

import httpx
import trio
from fuzzkit import FUZZ, Stack, check_answer, door_errors, run_case
from harness import API_VERSION
from hostile import deep, request
from hypothesis import example, given
from hypothesis import strategies as st

ANSWER_TIMEOUT: Final = 20.0
# Only these header values can be written at all (h11 refuses control characters).
# Latin-1 header text; h11 (httpx's client) refuses to send a value with leading or trailing
# space, so those are stripped: the case is about what reaches the door, not the client.
HEADER_TEXT: Final = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=300
).map(lambda value: value.strip(" \t"))
HEADERS: Final = st.dictionaries(
    st.sampled_from(
        [
            "anthropic-version", "anthropic-beta", "x-switchboard-session", "x-switchboard-fallback-model",
            "content-type", "authorization", "x-api-key", "content-encoding", "accept", "transfer-encoding-x",
        ]
    ),
    st.one_of(HEADER_TEXT, st.sampled_from(["2023-06-01", "a" * 8000, ",,,", "gzip", "../etc", "bystander"])),
    max_size=4,
)


async def post(stack: Stack, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    assert stack.server.http_url is not None
    async with httpx.AsyncClient(base_url=stack.server.http_url, timeout=None) as client:
        with trio.fail_after(ANSWER_TIMEOUT):
            # Bytes: httpx would encode text values as ASCII; a hostile client sends latin-1.
            # The API's version unless the case sends its own (the door's 400 without it
            # would stop every case before its body is read).
            raw = {name.encode(): value.encode("latin-1") for name, value in {**API_VERSION, **headers}.items()}
            return await client.post(path, content=body, headers=raw)


PATHS: Final = st.sampled_from(["/v1/messages", "/v1/messages?beta=true", "/v1/messages/count_tokens"])


class Body(bytes):
    """A request body whose repr stays short in a failing example's report."""

    def __repr__(self) -> str:
        return f"Body({bytes(self[:160])!r}... {len(self)} bytes)"


@st.composite
def bodies(draw: st.DrawFn) -> Body:
    shape = draw(st.sampled_from(["request", "request", "streamed", "bytes", "invalid_utf8"]))
    if shape == "bytes":
        return Body(draw(st.binary(max_size=2048)))
    if shape == "invalid_utf8":
        return Body(b'{"model":"claude-sonnet-4-6","max_tokens":9,"messages":[{"role":"user","content":"\xff\xfe"}]}')
    text = draw(request())
    if shape == "streamed" and text.startswith("{") and text.endswith("}") and len(text) > 2:
        text = text[:-1] + ',"stream":true}'
    return Body(text.encode())


@FUZZ
@given(path=PATHS, body=bodies(), headers=HEADERS)
@example("/v1/messages", Body(deep(100_000, "array").encode()), {})
@example("/v1/messages", Body(b'{"model":"claude-sonnet-4-6","max_tokens":9,"messages":[{"role":"user","content":"hi"}]}'),
         {"anthropic-version": "\x80"})  # not ASCII: forwarded upstream
@example("/v1/messages", Body(b'{"model":"claude-sonnet-4-6","max_tokens":9,"messages":[{"role":"user","content":"hi"}]}'),
         {"anthropic-beta": "tools-2024-04-04,\xe9"})  # not ASCII: once a crash when forwarded upstream
@example("/v1/messages/count_tokens", Body(b'{"model":"claude-sonnet-4-6","messages":[{"role":"user","content":"hi"}]}'),
         {"anthropic-beta": "\xff"})
def test_hostile_bodies_and_headers_get_an_answer_the_api_could_give(
    path: str, body: bytes, headers: dict[str, str]
) -> None:
    async def case(stack: Stack) -> None:
        with door_errors() as errors:
            response = await post(stack, path, body, headers)
        check_answer(stack, path, headers, response)
        assert not errors, errors

    run_case(case)


@FUZZ
@given(path=PATHS, body=bodies())
def test_a_hostile_body_over_a_kept_alive_connection_leaves_the_next_request_whole(path: str, body: bytes) -> None:
    """The same connection carries a hostile request, then a good one: the first one's
    failure ends with its own answer and does not break the connection for the second."""

    async def case(stack: Stack) -> None:
        assert stack.server.http_url is not None
        good = b'{"model":"claude-sonnet-4-6","max_tokens":9,"messages":[{"role":"user","content":"hi"}]}'
        with door_errors() as errors:
            async with httpx.AsyncClient(base_url=stack.server.http_url, timeout=None) as client:
                with trio.fail_after(ANSWER_TIMEOUT):
                    first = await client.post(path, content=body, headers=API_VERSION)
                    second = await client.post("/v1/messages", content=good, headers=API_VERSION)
        check_answer(stack, path, {}, first)
        check_answer(stack, "/v1/messages", {}, second)
        assert second.status_code == 200
        assert not errors, errors

    run_case(case)
