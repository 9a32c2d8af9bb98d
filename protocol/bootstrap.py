"""The bootstrap API (docs/reference/reference-client.md 4): request headers, response schema, model options.

``GET {base}/api/claude_cli/bootstrap`` answers
``{client_data?: object | null, additional_model_options?: [{model, name, description}] | null}``.
Fields the schema does not name are ignored (the reference's zod object strips them); any
other shape is invalid and the whole answer is ignored. Each option becomes a model option
``{value: model, label: name, description}`` and joins the defaults when its value is new.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import msgspec

from protocol.betas import OAUTH
from protocol.bounded_json import BoundedDecoder
from protocol.errors import RemoteProtocolError
from protocol.frames import ModelOption
from protocol.wire import JsonObject

BOOTSTRAP_PATH: Final = "/api/claude_cli/bootstrap"


class AdditionalModelOption(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    name: str
    description: str


class BootstrapAnswer(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A valid bootstrap answer (also the shape of its disk cache)."""

    client_data: JsonObject | None = None
    additional_model_options: tuple[AdditionalModelOption, ...] | None = None

    def model_options(self) -> tuple[ModelOption, ...]:
        """The additional options as model options (``value``, ``label``, ``description``)."""
        return tuple(
            ModelOption(value=o.model, label=o.name, description=o.description)
            for o in self.additional_model_options or ()
        )


_DECODER: Final = BoundedDecoder(BootstrapAnswer)
_ENCODER: Final = msgspec.json.Encoder()


def decode_bootstrap(body: bytes) -> BootstrapAnswer:
    """Validate a bootstrap answer. Raises ``RemoteProtocolError`` (``api_error``) on any
    body that is not JSON or does not fit the schema; the message names the bad field."""
    try:
        return _DECODER.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise RemoteProtocolError(f"invalid bootstrap answer: {exc}", error_type="api_error") from exc


def encode_bootstrap(answer: BootstrapAnswer) -> bytes:
    return _ENCODER.encode(answer)


def bootstrap_headers(
    *, api_key: str | None, auth_token: str | None, user_agent: str
) -> tuple[tuple[str, str], ...] | None:
    """The request headers: an OAuth bearer (with its beta) preferred, else the API key;
    None when there is no credential (the fetch is skipped)."""
    headers = [("content-type", "application/json"), ("user-agent", user_agent)]
    if auth_token:
        headers += [("authorization", f"Bearer {auth_token}"), ("anthropic-beta", OAUTH)]
    elif api_key:
        headers.append(("x-api-key", api_key))
    else:
        return None
    return tuple(headers)


def merge_model_options(
    base: Iterable[ModelOption], additional: Iterable[ModelOption]
) -> tuple[ModelOption, ...]:
    """``base``, then each additional option whose ``value`` is not there yet (first wins)."""
    merged = list(base)
    seen = {option.value for option in merged}
    for option in additional:
        if option.value not in seen:
            seen.add(option.value)
            merged.append(option)
    return tuple(merged)
