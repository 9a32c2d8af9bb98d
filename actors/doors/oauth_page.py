"""The verification page of the device sign-in (RFC 8628 3.3; README.md "Claude Code for a
whole organisation"): a plain HTML form, no script. A code in the URL
(``verification_uri_complete``) only pre-fills the field: the user still reads it against
their terminal and presses a button (RFC 8628 5.4: never auto-submitted). Every value shown
is HTML-escaped; the page may not be framed, cached or sent as a referrer, and its form
posts only to itself (the ``content-security-policy``).
"""

from __future__ import annotations

import html
from typing import Final

from actors.doors.asgi import Exchange

_HEADERS: Final = (
    (b"content-security-policy", b"default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
)
_STYLE: Final = (
    "body{font-family:system-ui,sans-serif;max-width:26rem;margin:4rem auto;padding:0 1rem;color:#222}"
    "label{display:block;margin:.8rem 0 .2rem}input{width:100%;padding:.5rem;font-size:1rem;box-sizing:border-box}"
    "#user_code{font-family:monospace;letter-spacing:.15em;text-transform:uppercase}"
    ".buttons{margin-top:1.2rem;display:flex;gap:.6rem}button{padding:.5rem 1rem;font-size:1rem}"
    ".error{color:#a00}"
)


def _document(title: str, body: str) -> bytes:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width,initial-scale=1'>"
        f"<title>{html.escape(title)} - Switchboard</title><style>{_STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    ).encode()


def sign_in_page(code: str, *, error: str = "") -> bytes:
    """The form: the code (pre-filled with ``code``), the user's name and password, and
    Approve / Deny."""
    shown = f"<p class=error role=alert>{html.escape(error)}</p>" if error else ""
    return _document(
        "Sign in to Claude Code",
        f"{shown}<p>Check that the code below is the one your terminal shows, then sign in to approve.</p>"
        "<form method=post action=/device autocomplete=off>"
        f"<label for=user_code>Code</label><input id=user_code name=user_code required value=\"{html.escape(code)}\">"
        "<label for=username>User name</label><input id=username name=username required autocomplete=username>"
        "<label for=password>Password</label>"
        "<input id=password name=password type=password required autocomplete=current-password>"
        "<div class=buttons><button name=action value=approve type=submit>Approve</button>"
        "<button name=action value=deny type=submit>Deny</button></div></form>",
    )


def result_page(title: str, text: str) -> bytes:
    return _document(title, f"<p id=result>{html.escape(text)}</p>")


async def page_answer(exchange: Exchange, status: int, page: bytes, *, retry_after: int | None = None) -> None:
    """Send a page with the headers every page of the sign-in carries."""
    headers = list(_HEADERS)
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await exchange.respond(status, page, b"text/html; charset=utf-8", headers)
