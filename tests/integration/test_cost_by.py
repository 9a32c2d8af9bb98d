"""``switchboard cost --by session|token|model|day`` on both stores (``ledger_location``),
after queries of a ledger token and of an anonymous session through the gateway."""

from __future__ import annotations

import datetime

import msgspec
import pytest
from harness import chat

from actors.cli import cost as cost_by
from actors.cli.commands import main
from actors.config.settings import Config
from actors.server import open_gateway
from actors.store.ledger_sessions import owner_digest
from actors.store.stores import open_token_store
from actors.store.token_rows import new_token
from protocol.budget import Limits
from protocol.frames import Done
from protocol.pricing import PICO_PER_USD


async def test_spend_grouped_each_way(config: Config, ledger_location: str, capsys: pytest.CaptureFixture[str]) -> None:
    token = new_token()
    store = open_token_store(ledger_location)
    try:
        store.add("ci", token, Limits(budget_pico=PICO_PER_USD), datetime.datetime.now(datetime.UTC))
    finally:
        store.close()
    costs: dict[str, float] = {}
    async with open_gateway(msgspec.structs.replace(config, ledger_path=ledger_location)) as gateway:
        await gateway.open_session("mine", owner=owner_digest(token))
        for session, budget, model in (("mine", "ci", "claude-sonnet-4-6"), ("anon", None, "claude-haiku-4-5")):
            async with gateway.query(chat(model=model), session_id=session, budget=budget) as frames:
                async for frame in frames:
                    if isinstance(frame, Done):
                        costs[session] = frame.cost_usd
        assert gateway.budgets is not None
        await gateway.budgets.settled()
    by_token = {g.key: g for g in cost_by.read_spend(ledger_location, "token")}
    assert set(by_token) == {"ci", "(none)"}
    assert by_token["ci"].cost_pico / PICO_PER_USD == pytest.approx(costs["mine"], abs=1e-12)
    by_model = {g.key: g for g in cost_by.read_spend(ledger_location, "model")}
    assert set(by_model) == {"claude-sonnet-4-6", "claude-haiku-4-5"}
    by_session = {g.key: g.messages for g in cost_by.read_spend(ledger_location, "session")}
    assert by_session == {"mine": 1, "anon": 1}
    [day] = cost_by.read_spend(ledger_location, "day")
    assert day.key == datetime.datetime.now(datetime.UTC).date().isoformat()
    assert day.cost_pico == sum(g.cost_pico for g in by_token.values())
    main(["cost", "--by", "token", "--csv", "--ledger", ledger_location])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "token,messages,input_tokens,output_tokens,cost_usd" and len(lines) == 3
    main(["cost", "--by", "model", "--json", "--ledger", ledger_location])
    rows = msgspec.json.decode(capsys.readouterr().out)
    assert {row["model"] for row in rows} == set(by_model)
    assert sum(row["cost_usd"] for row in rows) == pytest.approx(sum(costs.values()), abs=1e-9)
    main(["cost", "--by", "day", "--ledger", ledger_location])
    assert capsys.readouterr().out.splitlines()[0].split() == ["day", "messages", "input_tokens", "output_tokens", "cost_usd"]
