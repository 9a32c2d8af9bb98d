"""The device sign-in's verification page in a real browser (headless Chromium driven by
playwright-core: tests/dashboard/sign_in_page.cjs): opened from ``verification_uri_complete``
it shows the code pre-filled and does not submit it by itself (RFC 8628 5.4); the user types
their name and password into the form and presses Approve; the CLI's next poll gets its token.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
from pathlib import Path
from typing import Any, Final

import httpx
import msgspec
import trio

from actors.access.identities import hash_password
from actors.config.settings import Config
from actors.server import Server, run_server
from protocol.oauth import GRANT_DEVICE

SCRIPT: Final = Path(__file__).with_name("sign_in_page.cjs")
# A safety net for the browser run, never an assertion about speed.
BROWSER_TIMEOUT: Final = 120
PASSWORD: Final = "correct horse battery"


async def test_a_user_approves_a_sign_in_on_the_page_in_a_browser(
    browser: Any, nursery: trio.Nursery, config: Config, tmp_path: Path
) -> None:
    config = msgspec.structs.replace(config, http_port=0, oauth=True)
    server: Server = await nursery.start(functools.partial(run_server, config))
    assert server.oauth is not None and server.http_url is not None
    server.oauth.store.add_user("ada", hash_password(PASSWORD), ("eng",), datetime.datetime.now(datetime.UTC))
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        device: dict[str, Any] = (await client.post("/oauth/device_authorization")).json()
        spec = tmp_path / "page.json"
        spec.write_text(json.dumps({
            "url": device["verification_uri_complete"], "chromium": browser.chromium, "username": "ada",
            "password": PASSWORD, "screenshot": str(tmp_path / "sign-in.png"),
        }))
        with trio.fail_after(BROWSER_TIMEOUT):
            done = await trio.run_process(
                [browser.node, str(SCRIPT), str(spec)],
                capture_stdout=True, capture_stderr=True, check=False,
                env={**os.environ, "NODE_PATH": browser.node_path},
            )
        assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
        shown: dict[str, Any] = json.loads(done.stdout)
        assert shown["prefilled"] == device["user_code"] and shown["postsBeforeClick"] == 0, shown
        assert "signed in as ada" in shown["result"] and shown["problems"] == [], shown
        assert not shown["overflows"], shown
        issued = await client.post("/oauth/token", data={"grant_type": GRANT_DEVICE, "device_code": device["device_code"]})
    assert issued.status_code == 200 and issued.json()["token_type"] == "Bearer"
