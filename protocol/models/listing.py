"""``GET /v1/models`` and ``GET /v1/models/{id}`` of the HTTP door, in the API's shape (pure).

The list is the catalog's models a client can name (newest first, as the API orders it), then
the bootstrap's model options the catalog does not know. Each entry is a model object:
``type: "model"``, ``id``, ``display_name``, ``created_at`` (RFC 3339, the release date; the
epoch when unknown, as the API does), ``max_input_tokens``, ``max_tokens`` (null when
unknown), ``line`` (the family), and ``capabilities`` in the API's shape, with the parts the
catalog knows (effort levels, thinking types).

Paging is the API's (anthropic-sdk-python ``ModelListParams``): ``limit`` (1 to 1000, default
20), ``after_id`` (the page right after that model), ``before_id`` (the page right before it),
answered as ``{"data", "has_more", "first_id", "last_id"}``; ``has_more`` says whether more
models lie in the direction of travel. A malformed parameter, both cursors, or a cursor that
names no listed model is a 400 ``invalid_request_error``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final
from urllib.parse import parse_qs

from protocol.errors import RemoteProtocolError
from protocol.frames import ModelOption
from protocol.models.catalog import (
    ADAPTIVE_THINKING,
    EFFORT,
    EPOCH,
    THINKING_OFF,
    XHIGH,
    Catalog,
    ModelSpec,
)
from protocol.wire import JSON, JsonObject

# The API's paging bounds (ModelListParams.limit: "Defaults to 20. Ranges from 1 to 1000").
DEFAULT_LIMIT: Final = 20
MAX_LIMIT: Final = 1000
# A query string longer than this is not a paging request (ids are at most a few dozen bytes).
MAX_QUERY: Final = 4096


def _support(value: bool) -> JsonObject:
    return {"supported": value}


def _capabilities(spec: ModelSpec) -> JsonObject:
    effort = spec.has(EFFORT)
    return {
        "effort": {
            "supported": effort,
            "low": _support(effort),
            "medium": _support(effort),
            "high": _support(effort),
            "max": _support(effort),
            "xhigh": _support(spec.has(XHIGH)),
        },
        "thinking": {
            "types": {
                "adaptive": _support(spec.has(ADAPTIVE_THINKING)),
                "disabled": _support(spec.has(THINKING_OFF)),
            },
        },
    }


def model_object(spec: ModelSpec) -> JsonObject:
    """One model as ``GET /v1/models/{id}`` answers it (the first-party id)."""
    return {
        "type": "model",
        "id": spec.first_party or spec.key,
        "display_name": spec.display_name,
        "created_at": spec.created_at(),
        "max_input_tokens": spec.context_window,
        "max_tokens": spec.max_output,
        "line": spec.family,
        "capabilities": _capabilities(spec),
    }


def option_object(option: ModelOption) -> JsonObject:
    """A bootstrap model option the catalog does not know: only what the option says."""
    return {
        "type": "model",
        "id": option.value,
        "display_name": option.label,
        "created_at": EPOCH,
        "max_input_tokens": None,
        "max_tokens": None,
        "line": None,
    }


def model_entries(catalog: Catalog, options: Sequence[ModelOption] = ()) -> tuple[JsonObject, ...]:
    """Every listed model, in the list's order (see the module docstring)."""
    entries = [model_object(spec) for spec in catalog.listing()]
    seen = {str(entry["id"]) for entry in entries}
    for option in options:
        if option.value not in seen and catalog.first_party_model(option.value) is None:
            seen.add(option.value)
            entries.append(option_object(option))
    return tuple(entries)


def find_model(entries: Sequence[JsonObject], model_id: str) -> JsonObject | None:
    """The entry with this id, or None (``GET /v1/models/{id}``'s 404)."""
    return next((entry for entry in entries if entry["id"] == model_id), None)


def _bad(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(message, error_type="invalid_request_error")


def parse_list_query(query: str) -> tuple[int, str | None, str | None]:
    """``(limit, after_id, before_id)`` of a ``GET /v1/models`` query string.

    Raises:
        RemoteProtocolError: a malformed limit, both cursors, or an over-long query.
    """
    if len(query) > MAX_QUERY:
        raise _bad("query string too long")
    params = parse_qs(query, keep_blank_values=True)
    raw_limit = params.get("limit", [str(DEFAULT_LIMIT)])[-1]
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise _bad(f"limit: Input should be an integer from 1 to {MAX_LIMIT}")
    after = params.get("after_id", [None])[-1] or None
    before = params.get("before_id", [None])[-1] or None
    if after is not None and before is not None:
        raise _bad("after_id and before_id cannot both be given")
    return int(raw_limit), after, before


def list_page(
    entries: Sequence[JsonObject], *, limit: int = DEFAULT_LIMIT, after_id: str | None = None, before_id: str | None = None
) -> JsonObject:
    """One page of ``entries`` (see the module docstring).

    Raises:
        RemoteProtocolError: a cursor that names no listed model.
    """
    ids = [str(entry["id"]) for entry in entries]
    if before_id is not None:
        if before_id not in ids:
            raise _bad(f"before_id: no model {before_id}")
        end = ids.index(before_id)
        start = max(0, end - limit)
        has_more = start > 0
    else:
        if after_id is not None and after_id not in ids:
            raise _bad(f"after_id: no model {after_id}")
        start = ids.index(after_id) + 1 if after_id is not None else 0
        end = min(len(ids), start + limit)
        has_more = end < len(ids)
    data = list(entries[start:end])
    return {
        "data": data,
        "has_more": has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


def models_answer(entries: Sequence[JsonObject], query: str) -> bytes:
    """The ``GET /v1/models`` body for a query string.

    Raises:
        RemoteProtocolError: a malformed query (``invalid_request_error``, a 400).
    """
    limit, after_id, before_id = parse_list_query(query)
    return JSON.encode(list_page(entries, limit=limit, after_id=after_id, before_id=before_id))
