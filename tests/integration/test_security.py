"""Security: ownerless sessions, redacted upstream errors, passwords in URLs, connection
limits of the HTTP door, and what the WebSocket door does with bytes that are not text."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Final

import httpx
import msgspec
import pytest
import trio
from harness import chat, connect
from test_door import rejected_status

from actors.cli import main
from actors.config import Config, Secret
from actors.server import Server, run_server
from protocol.frames import Done

ORPHAN: Final = "orphan"


async def test_a_session_without_an_owner_is_refused_once_tokens_are_configured(
    config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = str(tmp_path / "ledger.sqlite3")
    open_config = msgspec.structs.replace(config, ledger_path=ledger, http_port=0)
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(functools.partial(run_server, open_config))
        async with connect(server, ORPHAN) as client:
            await client.receive()
            await client.send(type="query", id="q", request=chat())
            done = (await client.until_terminal("q"))[-1]
        nursery.cancel_scope.cancel()
    assert isinstance(done, Done) and done.cost_usd > 0
    # The same ledger, now with access tokens: no token may open, resume, charge or take
    # over the session created while there were none.
    guarded = msgspec.structs.replace(open_config, access_tokens=(Secret("tok-alice"),))
    async with trio.open_nursery() as nursery:
        server = await nursery.start(functools.partial(run_server, guarded))
        assert await rejected_status(f"{server.ws_url}/v1/sessions/{ORPHAN}", token="tok-alice") == 403
        async with httpx.AsyncClient(base_url=str(server.http_url), timeout=None) as http:
            refused = await http.post(
                "/v1/messages",
                json=chat(),
                headers={"x-api-key": "tok-alice", "x-switchboard-session": ORPHAN},
            )
        assert refused.status_code == 403
        assert msgspec.json.decode(refused.content)["error"]["type"] == "permission_error"
        assert (await server.gateway.cost(ORPHAN)).total_cost_usd == pytest.approx(done.cost_usd)
        nursery.cancel_scope.cancel()
    # Nothing was charged, and `switchboard cost` still reports the session.
    main(["cost", ORPHAN, "--json", "--ledger", ledger])
    reported = msgspec.json.decode(capsys.readouterr().out)
    assert reported["session_id"] == ORPHAN
    assert reported["total_cost_usd"] == pytest.approx(done.cost_usd)
