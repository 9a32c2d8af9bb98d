"""Microsoft Foundry request shaping (docs/reference/wire.md 9): the first party's own wire format under
``{base}/v1/messages`` (base ``https://{resource}.services.ai.azure.com/anthropic``), with
an API key sent as both ``x-api-key`` and ``api-key`` (the latter for older deployments),
or an Entra ID bearer token.
"""

from __future__ import annotations

from typing import Final

import msgspec

from protocol.providers import ProviderRequest
from protocol.wire import JsonObject

# docs/reference/reference-client.md 5.2: the Entra ID scope of the token.
ENTRA_SCOPE: Final = "https://cognitiveservices.azure.com/.default"
_ENCODER: Final = msgspec.json.Encoder()


def _headers(headers: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    out = list(headers)
    key = next((value for name, value in headers if name.lower() == "x-api-key"), None)
    if key is not None:
        out.append(("api-key", key))
    return tuple(out)


def messages_request(body: JsonObject, headers: tuple[tuple[str, str], ...]) -> ProviderRequest:
    return ProviderRequest(path="/v1/messages", headers=_headers(headers), body=_ENCODER.encode(body))


def count_tokens_request(body: JsonObject, headers: tuple[tuple[str, str], ...]) -> ProviderRequest:
    return ProviderRequest(path="/v1/messages/count_tokens", headers=_headers(headers), body=_ENCODER.encode(body))
