"""Config for issue 4: where the ledger and the bootstrap cache live, the traffic switch."""

from __future__ import annotations

import pytest

from actors.config.from_env import config_from_env
from actors.config.settings import (
    MEMORY_LEDGER,
    Config,
    Secret,
    bootstrap_cache_file,
    default_ledger_path,
    ledger_file,
)


@pytest.mark.parametrize(
    ("env", "path"),
    [
        ({"XDG_STATE_HOME": "/var/state", "HOME": "/home/u"}, "/var/state/switchboard/ledger.sqlite3"),
        ({"XDG_STATE_HOME": "relative/dir", "HOME": "/home/u"}, "/home/u/.local/state/switchboard/ledger.sqlite3"),
        ({"HOME": "/home/u"}, "/home/u/.local/state/switchboard/ledger.sqlite3"),
    ],
)
def test_the_default_ledger_follows_xdg_state_home(env: dict[str, str], path: str) -> None:
    assert default_ledger_path(env) == path


def test_the_ledger_file_and_the_bootstrap_cache_next_to_it() -> None:
    config = Config(ledger_path="/data/sb/costs.sqlite3", api_key=Secret("k"))
    assert ledger_file(config) == "/data/sb/costs.sqlite3"
    assert bootstrap_cache_file(config) == "/data/sb/bootstrap.json"
    memory = Config(ledger_path=MEMORY_LEDGER)
    assert ledger_file(memory) == MEMORY_LEDGER and bootstrap_cache_file(memory) is None
    # The built-in emulator's made-up usage never reaches a real ledger unless asked to.
    emulated = config_from_env({})
    assert emulated.use_emulator and ledger_file(emulated) == MEMORY_LEDGER
    assert ledger_file(config_from_env({}, ledger_path="/tmp/x.sqlite3")) == "/tmp/x.sqlite3"


@pytest.mark.parametrize(("value", "disabled"), [("1", True), ("true", True), ("", False), ("  ", False)])
def test_nonessential_traffic_switch(value: str, disabled: bool) -> None:
    config = config_from_env({"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": value, "ANTHROPIC_API_KEY": "k"})
    assert config.disable_nonessential_traffic is disabled
    assert config.provider == "firstParty"
