"""``GET /v1/models`` of the HTTP door: the catalog's models in the API's shape, paged as the API pages."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import RemoteProtocolError
from protocol.frames import ModelOption
from protocol.models.catalog import BUILTIN
from protocol.models.listing import find_model, list_page, model_entries, models_answer
from protocol.wire import JsonObject

ENTRIES = model_entries(BUILTIN, (ModelOption(value="claude-from-bootstrap", label="Learnt"),))
IDS = [str(entry["id"]) for entry in ENTRIES]


def test_every_entry_has_the_api_fields_and_real_dates() -> None:
    opus = find_model(ENTRIES, "claude-opus-4-8")
    assert opus == {
        "type": "model",
        "id": "claude-opus-4-8",
        "display_name": "Claude Opus 4.8",
        "created_at": "2026-05-28T00:00:00Z",
        "max_input_tokens": 1_000_000,
        "max_tokens": 128_000,
        "line": "opus",
        "capabilities": {
            "effort": {
                "supported": True,
                "low": {"supported": True},
                "medium": {"supported": True},
                "high": {"supported": True},
                "max": {"supported": True},
                "xhigh": {"supported": True},
            },
            "thinking": {"types": {"adaptive": {"supported": True}, "disabled": {"supported": True}}},
        },
    }
    for entry in ENTRIES:
        assert entry["type"] == "model" and entry["display_name"]
        if entry["id"] != "claude-from-bootstrap":
            assert not str(entry["created_at"]).startswith("1970"), entry["id"]


def test_the_list_is_newest_first_with_first_party_ids_and_bootstrap_options_last() -> None:
    created = [str(e["created_at"]) for e in ENTRIES[:-1]]
    assert created == sorted(created, reverse=True)
    assert IDS[-1] == "claude-from-bootstrap"
    for model_id in ("claude-opus-4-8", "claude-sonnet-5", "claude-haiku-4-5-20251001", "claude-mythos-5"):
        assert model_id in IDS
    assert len(IDS) == len(set(IDS))
    assert find_model(ENTRIES, "claude-nonexistent") is None


def decode(raw: bytes) -> JsonObject:
    result: JsonObject = msgspec.json.decode(raw)
    return result


def test_default_page_is_twenty() -> None:
    page = decode(models_answer(ENTRIES, ""))
    assert [e["id"] for e in page["data"]] == IDS[:20]
    assert page["has_more"] is (len(IDS) > 20)
    assert (page["first_id"], page["last_id"]) == (IDS[0], IDS[19])


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=1001", "limit=x", "limit=-1", "after_id=a&before_id=b", "after_id=nope", "before_id=nope", "x=" + "a" * 5000],
)
def test_bad_queries_are_invalid_requests(query: str) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        models_answer(ENTRIES, query)
    assert caught.value.error_type == "invalid_request_error"


def test_an_empty_list_pages_to_nothing() -> None:
    assert list_page((), limit=5) == {"data": [], "has_more": False, "first_id": None, "last_id": None}


LIMITS = st.integers(min_value=1, max_value=1000)


@given(limit=LIMITS)
def test_walking_forward_with_after_id_visits_every_model_once_in_order(limit: int) -> None:
    seen: list[str] = []
    query = f"limit={limit}"
    while True:
        page = decode(models_answer(ENTRIES, query))
        ids = [str(e["id"]) for e in page["data"]]
        assert 0 < len(ids) <= limit
        assert (page["first_id"], page["last_id"]) == (ids[0], ids[-1])
        seen.extend(ids)
        if not page["has_more"]:
            break
        query = f"limit={limit}&after_id={page['last_id']}"
    assert seen == IDS


@given(limit=LIMITS)
def test_walking_backward_with_before_id_visits_every_model_once_in_order(limit: int) -> None:
    pages: list[list[str]] = []
    page = list_page(ENTRIES, limit=limit, after_id=IDS[-2])  # the last page: the last model
    pages.append([str(e["id"]) for e in page["data"]])
    while True:
        page = list_page(ENTRIES, limit=limit, before_id=pages[0][0])
        ids = [str(e["id"]) for e in page["data"]]
        if not ids:
            assert not page["has_more"]
            break
        pages.insert(0, ids)
        if not page["has_more"]:
            break
    assert [i for ids in pages for i in ids] == IDS


@given(limit=LIMITS, cursor=st.sampled_from(IDS), forward=st.booleans())
def test_any_page_is_the_slice_next_to_its_cursor(limit: int, cursor: str, forward: bool) -> None:
    at = IDS.index(cursor)
    if forward:
        page = list_page(ENTRIES, limit=limit, after_id=cursor)
        expected = IDS[at + 1 : at + 1 + limit]
        assert page["has_more"] is (at + 1 + limit < len(IDS))
    else:
        page = list_page(ENTRIES, limit=limit, before_id=cursor)
        expected = IDS[max(0, at - limit) : at]
        assert page["has_more"] is (at - limit > 0)
    assert [e["id"] for e in page["data"]] == expected
