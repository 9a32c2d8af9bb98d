"""The emulator's Bedrock wire format (docs/reference/wire.md 7.5, 7.6), seen by a plain HTTP client."""

from __future__ import annotations

import httpx
import msgspec
import trio

from actors.upstream.credentials import AwsKeys
from actors.upstream.endpoints import sigv4_headers
from emulator import Emulator
from protocol.eventstream import BedrockStreamDecoder, EventStreamDecoder

KEYS = AwsKeys(access_key="AKIDEXAMPLE", secret_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
PATH = "/model/us.anthropic.claude-haiku-4-5-20251001-v1:0/invoke-with-response-stream"
BODY = msgspec.json.encode(
    {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 32, "messages": [{"role": "user", "content": "Hi"}]}
)


async def post(url: str, keys: AwsKeys, body: bytes = BODY, extra: dict[str, str] | None = None) -> httpx.Response:
    headers = sigv4_headers(
        keys, "us-east-1", "bedrock", "POST", url + PATH, {"content-type": "application/json", **(extra or {})}, body
    )
    async with httpx.AsyncClient() as client:
        return await client.post(url + PATH, content=body, headers=headers)


async def test_a_signed_stream_is_event_stream_framed(nursery: trio.Nursery) -> None:
    emulator = Emulator(aws_keys={KEYS.access_key: KEYS.secret_key})
    url = await nursery.start(emulator.run)
    response = await post(url, KEYS)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/vnd.amazon.eventstream"
    assert "request-id" not in response.headers and response.headers["x-amzn-requestid"]
    frames = EventStreamDecoder().feed(response.content)
    assert {frame.headers[":event-type"] for frame in frames} == {"chunk"}
    names = [name for name, _ in BedrockStreamDecoder().feed(response.content)]
    assert names[0] == "message_start" and names[-1] == "message_stop"


async def test_refusals_and_errors_are_rest_json(nursery: trio.Nursery) -> None:
    emulator = Emulator(aws_keys={KEYS.access_key: KEYS.secret_key})
    url = await nursery.start(emulator.run)
    wrong = await post(url, AwsKeys(access_key=KEYS.access_key, secret_key="nope"))
    assert wrong.status_code == 403
    assert wrong.headers["x-amzn-errortype"].startswith("InvalidSignatureException:")
    unknown = await post(url, AwsKeys(access_key="AKIDUNKNOWN", secret_key="x"))
    assert unknown.json() == {"message": "The security token included in the request is invalid."}
    with_model = await post(url, KEYS, body=BODY[:-1] + b',"model":"x"}')
    assert with_model.status_code == 400 and "extraneous key [model]" in with_model.json()["message"]
    emulator.script("429")
    throttled = await post(url, KEYS)
    assert throttled.status_code == 429
    assert throttled.headers["x-amzn-errortype"].startswith("ThrottlingException:")
    assert set(throttled.json()) == {"message"}
    emulator.script("overloaded_midstream:after=2")
    broken = await post(url, KEYS)
    frames = EventStreamDecoder().feed(broken.content)
    assert [frame.headers[":message-type"] for frame in frames] == ["event", "event", "exception"]
    assert frames[-1].headers[":exception-type"] == "serviceUnavailableException"
