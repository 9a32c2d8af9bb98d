"""``GET /api/claude_cli/bootstrap``: the default answer, auth, and its own fault queue."""

from __future__ import annotations

import httpx
import pytest
import trio
from emulator_testkit import body

from emulator import Emulator

PATH = "/api/claude_cli/bootstrap"


async def test_the_default_answer_has_one_additional_model_option(client: httpx.AsyncClient) -> None:
    # Like the reference client: a credential, no anthropic-version.
    response = await client.get(PATH, headers={"anthropic-version": ""})
    assert response.status_code == 200 and response.headers["request-id"].startswith("req_emu_")
    assert response.json() == {
        "client_data": {"coral_reef_sonnet": "true"},
        "additional_model_options": [
            {
                "model": "claude-opus-4-5-20251101",
                "name": "Opus 4.5",
                "description": "Previous Opus, for work that was tuned on it",
            }
        ],
    }


async def test_the_credential_is_checked(emu: Emulator) -> None:
    assert emu.url is not None
    async with httpx.AsyncClient(base_url=emu.url) as anonymous:
        denied = await anonymous.get(PATH)
        bearer = await anonymous.get(PATH, headers={"authorization": "Bearer oauth-token"})
    assert denied.status_code == 401 and denied.json()["error"]["type"] == "authentication_error"
    assert bearer.status_code == 200
    emu.api_keys = frozenset({"only-this"})
    assert emu.url is not None
    async with httpx.AsyncClient(base_url=emu.url) as other:
        assert (await other.get(PATH, headers={"x-api-key": "not-this"})).status_code == 401


async def test_faults_come_from_their_own_queue(client: httpx.AsyncClient, emu: Emulator) -> None:
    emu.script("529")
    emu.script_bootstrap("invalid_bootstrap", "500", "bad_stream")
    invalid = await client.get(PATH)
    assert invalid.status_code == 200 and invalid.json()["additional_model_options"][0]["name"] == 42
    assert (await client.get(PATH)).status_code == 500
    assert (await client.get(PATH)).text.startswith("<html>")
    assert (await client.get(PATH)).status_code == 200
    # The Messages request still gets the fault queued for it.
    assert (await client.post("/v1/messages", json=body())).status_code == 529
    assert [r.fault.spec if r.fault else None for r in emu.requests] == [
        "invalid_bootstrap", "500", "bad_stream", None, "529",
    ]  # fmt: skip


async def test_a_header_fault_and_a_slow_first_byte(
    client: httpx.AsyncClient, emu: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    assert (await client.get(PATH, headers={"x-emulator-fault": "403"})).status_code == 403
    emu.script_bootstrap("slow_first_byte:seconds=7")
    started = trio.current_time()
    response = await client.get(PATH)
    assert response.status_code == 200 and trio.current_time() - started == 7.0


async def test_the_answer_can_be_replaced_and_reset_forgets_queued_faults(
    client: httpx.AsyncClient, emu: Emulator
) -> None:
    emu.bootstrap_body = {"client_data": None}
    emu.script_bootstrap("500")
    emu.reset()
    assert (await client.get(PATH)).json() == {"client_data": None}


@pytest.mark.parametrize("method", ["POST", "PUT"])
async def test_only_get_is_allowed(client: httpx.AsyncClient, method: str) -> None:
    response = await client.request(method, PATH)
    assert response.status_code == 405 and response.headers["allow"] == "GET"
