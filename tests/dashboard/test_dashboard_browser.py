"""The dashboard in a real browser: headless Chromium driven by playwright-core (``conftest.py``
installs both), against a gateway with two access tokens and an admin token on the emulator.

A scripted set of queries per token, then ``dashboard_page.cjs`` opens the page once per
token (typing the token into the page's own form), reads the numbers the page shows from its
DOM, and saves screenshots. The test compares them with the JSON endpoints and with the
ledger file itself (``read_sessions``, the reader of ``switchboard cost``), and checks that
one token's page does not show another's sessions. Screenshots go to the test's tmp dir and,
when ``SWITCHBOARD_SCREENSHOT_DIR`` is set, there too.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import msgspec
import trio
from harness import API_VERSION

from actors.config.settings import Config, Secret
from actors.server import Server, run_server
from actors.store.ledger_sessions import owner_digest
from actors.store.stores import read_sessions
from protocol.dashboard import token_label

SCRIPT = Path(__file__).with_name("dashboard_page.cjs")
ALICE, BOB, ADMIN = "tok-alice", "tok-bob", "tok-admin"
SONNET, HAIKU = "claude-sonnet-4-6", "claude-haiku-4-5"
SYSTEM = "You are a careful assistant. " * 300  # over the cache minimum (1024)
# The page and its browser get this long in all (a cold Chromium starts in a few seconds).
BROWSER_TIMEOUT = 180


def body(text: str, *, model: str = SONNET, cached: bool = False) -> dict[str, Any]:
    request: dict[str, Any] = {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": text}]}
    if cached:
        request["system"] = [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}]
    return request


PLAN = [
    (ALICE, "alice-review", body("review this", cached=True)),
    (ALICE, "alice-review", body("and this", cached=True)),
    (ALICE, "alice-review", body("and that", cached=True)),
    (ALICE, "alice-chat", body("hello")),
    (BOB, "bob-batch", body("summarise", model=HAIKU)),
    (BOB, "bob-batch", body("summarise more", model=HAIKU)),
]


async def test_the_page_shows_what_the_ledger_holds_per_token(
    browser: Any, nursery: trio.Nursery, config: Config, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    config = msgspec.structs.replace(
        config,
        http_port=0,
        ledger_path=str(ledger),
        access_tokens=(Secret(ALICE), Secret(BOB)),
        admin_tokens=(Secret(ADMIN),),
    )
    server: Server = await nursery.start(functools.partial(run_server, config))
    base = server.http_url or ""
    async with httpx.AsyncClient(base_url=base, timeout=30, headers=API_VERSION) as http:
        for token, session, request in PLAN:
            answer = await http.post(
                "/v1/messages", json=request, headers={"x-api-key": token, "x-switchboard-session": session}
            )
            assert answer.status_code == 200, answer.text
        api = {
            who: (
                (await http.get("/v1/switchboard/spend?by=model&bucket=hour", headers={"x-api-key": token})).json(),
                (await http.get("/v1/switchboard/sessions?top=10", headers={"x-api-key": token})).json(),
            )
            for who, token in (("alice", ALICE), ("bob", BOB), ("admin", ADMIN))
        }

    shots = tmp_path / "screenshots"
    shots.mkdir()
    views = [
        {"name": "alice", "token": ALICE, "screenshot": str(shots / "dashboard-alice.png")},
        {"name": "bob", "token": BOB, "screenshot": str(shots / "dashboard-bob.png")},
        {"name": "admin", "token": ADMIN, "screenshot": str(shots / "dashboard-admin.png")},
        {"name": "admin_by_token", "token": ADMIN, "click": ["[data-by=token]"]},
        {"name": "phone", "token": ADMIN, "width": 390, "height": 844,
         "screenshot": str(shots / "dashboard-phone.png")},
    ]
    spec = tmp_path / "views.json"
    spec.write_text(json.dumps({"url": base + "/dashboard", "chromium": browser.chromium, "views": views}))
    with trio.fail_after(BROWSER_TIMEOUT):
        done = await trio.run_process(
            [browser.node, str(SCRIPT), str(spec)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env={**os.environ, "NODE_PATH": browser.node_path},
        )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    pages: dict[str, Any] = json.loads(done.stdout)

    stored = dict(read_sessions(str(ledger)))
    owners = {"alice": {"alice-review", "alice-chat"}, "bob": {"bob-batch"}}
    owners["admin"] = owners["alice"] | owners["bob"]
    for who in ("alice", "bob", "admin"):
        page = pages[who]
        shown, (spend, top) = page["shown"], api[who]
        assert page["asked_for_token"] and page["problems"] == [], page
        # The tiles: the ledger's sum, the JSON's, the page's, to the picodollar.
        ledger_pico = sum(stored[s].total_pico for s in owners[who])
        assert shown["spend_pico"] == spend["totals"]["cost_pico"] == ledger_pico
        assert shown["messages"] == spend["totals"]["messages"]
        assert shown["savings_pico"] == spend["totals"]["cache_savings_pico"]
        # The top sessions: only this token's, each at what the ledger holds.
        assert {s["session_id"] for s in shown["sessions"]} == owners[who]
        assert {s["session_id"]: s["cost_pico"] for s in shown["sessions"]} == {
            sid: stored[sid].total_pico for sid in owners[who]
        }
        assert shown["sessions"] == [
            {"session_id": s["session_id"], "cost_pico": s["cost_pico"], "messages": s["messages"]}
            for s in top["sessions"]
        ]
        assert [t["cost_pico"] for t in shown["tokens"]] == [t["cost_pico"] for t in top["tokens"]]
        # The cache panel per model, and the chart's series.
        assert shown["models"] == [
            {"model": m["model"], "cost_pico": m["cost_pico"], "savings_pico": m["cache_savings_pico"],
             "cache_read": m["cache_read_input_tokens"]}
            for m in spend["models"]
        ]
        assert [s["key"] for s in shown["series"]] == [s["key"] for s in spend["series"]]
        assert sorted(shown["chart_series"]) == sorted(s["key"] for s in spend["series"])
        assert shown["chart_canvas"] and shown["budgets_hidden"] and shown["status"] == "ok"

    alice = pages["alice"]["shown"]
    assert alice["savings_pico"] > 0  # alice-review read its system prompt from the cache
    assert [m["model"] for m in alice["models"]] == [SONNET]
    assert [m["model"] for m in pages["bob"]["shown"]["models"]] == [HAIKU]
    assert [t["token"] for t in pages["bob"]["shown"]["tokens"]] == [token_label(owner_digest(BOB))]
    by_token = pages["admin_by_token"]["shown"]
    assert {s["key"]: round(s["total_usd"] * 1e12) for s in by_token["series"]} == {
        token_label(owner_digest(ALICE)): sum(stored[s].total_pico for s in owners["alice"]),
        token_label(owner_digest(BOB)): stored["bob-batch"].total_pico,
    }
    assert pages["phone"]["shown"]["overflows"] is False  # readable on a phone: no sideways scroll

    keep_screenshots(shots)


def keep_screenshots(shots: Path) -> None:
    """Check the screenshots are pictures, and copy them to ``SWITCHBOARD_SCREENSHOT_DIR``."""
    taken = sorted(shots.iterdir())
    assert len(taken) == 4
    for shot in taken:
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000, shot
    target = os.environ.get("SWITCHBOARD_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        for shot in taken:
            shutil.copy(shot, Path(target) / shot.name)
