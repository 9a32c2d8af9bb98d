"""Who a request is beyond its token: a user the gateway knows and the groups they belong to
(the Claude Code gateway protocol, issue 19). Pure data; the identity store that issues and
resolves such tokens lives in the shell.
"""

from __future__ import annotations

import msgspec


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """A signed-in user: their name and their groups (the order is the store's)."""

    user: str
    groups: tuple[str, ...] = ()
