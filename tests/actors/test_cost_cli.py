"""``switchboard cost``: text and JSON from a ledger file; clear failures."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from test_cost_ledger import FINAL, START, cost, record, running

from actors.cli.commands import main
from protocol.usage import Usage


async def test_text_json_and_failures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(tmp_path / "ledger.sqlite3")
    async with running(path) as (_, ledger):
        await record(ledger, FINAL, session="one")
        await record(ledger, START, session="two", record_id="r", final=False)
        await record(ledger, Usage(input_tokens=1), session="two", model="claude-haiku-4-5")
        summary = await cost(ledger, "one")

    main(["cost", "one", "--ledger", path])
    assert capsys.readouterr().out == (
        "Total cost:            $0.0266\n"
        "Total duration (API):  0s\n"
        "Usage by model:\n"
        "   claude-sonnet-4-6:  1.0k input, 800 output, 10.0k cache read, 2.0k cache write ($0.0266)\n"
    )
    main(["cost", "one", "--json", "--ledger", path])
    assert msgspec.json.decode(capsys.readouterr().out) == msgspec.to_builtins(summary)
    main(["cost", "--json", "--ledger", path])
    assert [s["session_id"] for s in msgspec.json.decode(capsys.readouterr().out)] == ["one", "two"]
    main(["cost", "--ledger", path])
    out = capsys.readouterr().out
    assert out.startswith("Session one\n") and "\n\nSession two\n" in out and "\n\nAll sessions (2)\n" in out

    with pytest.raises(SystemExit) as unknown:
        main(["cost", "three", "--ledger", path])
    assert unknown.value.code == 1 and "no session 'three'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as missing:
        main(["cost", "--ledger", str(tmp_path / "absent.sqlite3")])
    assert missing.value.code == 2 and "no cost ledger at" in capsys.readouterr().err
    assert not (tmp_path / "absent.sqlite3").exists()  # a read never creates the file
