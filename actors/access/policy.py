"""The organisation policy in force, and the HTTP door's ``GET /managed/settings``
(README.md "Claude Code for a whole organisation"; the rules: protocol/policy.py).

``PolicySource`` holds the policy parsed from ``Config.policy_path`` (``--policy``,
``SWITCHBOARD_POLICY``), and keeps the groups' and users' limits in the ledger's store in
step with it (``Budgets.sync_subjects``: the counters are the store's, shared by instances). ``run`` reads the file at start (a file that cannot be read or
parsed there stops the gateway with a ``ConfigError``: a policy that is not enforced must not
look enforced), then checks it every ``RELOAD_INTERVAL`` seconds on a worker thread and
swaps in a changed one; a changed file that does not parse is logged and the policy in force
stays. Requests read ``policy`` in place: no I/O on the request path.

``managed_settings`` answers ``GET /managed/settings`` for the signed-in user: 200 with the
merged settings and an ``ETag``, 304 when ``If-None-Match`` names it, 404 when no policy
applies (a token that names no user included).
"""

from __future__ import annotations

import logging
import os
from typing import Final, final

import trio

from actors.access.budgets import Access, Budgets
from actors.doors.asgi import Exchange, RequestHead
from actors.doors.http_answer import send_error
from actors.store.rows import STORE_ERRORS
from protocol.errors import ConfigError
from protocol.http_api import JSON_CONTENT_TYPE
from protocol.policy import (
    EMPTY,
    MAX_POLICY_BYTES,
    Policy,
    allowed_patterns,
    limit_subjects,
    not_modified,
    parse_policy,
    settings_body,
    settings_for,
    subject_limits,
)

log = logging.getLogger("switchboard.policy")

# How often the policy file is checked for a change (seconds): an edit is in force within it.
RELOAD_INTERVAL: Final = 5.0
# What a client is told when no managed settings apply to it.
NO_POLICY_MESSAGE: Final = "no managed settings for this user"


def _read(path: str) -> tuple[tuple[int, int], bytes]:
    """The file's (mtime_ns, size) and bytes, at most one byte over the limit."""
    with open(path, "rb") as file:
        stat = os.fstat(file.fileno())
        return (stat.st_mtime_ns, stat.st_size), file.read(MAX_POLICY_BYTES + 1)


@final
class PolicySource:
    """The policy in force (see the module docstring). Without a path: the empty policy."""

    def __init__(self, path: str | None = None, policy: Policy = EMPTY) -> None:
        self._path = path
        self._stamp: tuple[int, int] | None = None
        self._budgets: Budgets | None = None
        self.policy = policy

    async def attach(self, budgets: Budgets) -> None:
        """Keep the groups' and users' limits in ``budgets``' store from now on, starting with
        the policy in force. A store failure is logged and the limits are stored at the next
        check (meanwhile a user or group missing from the store is refused, fail closed)."""
        self._budgets = budgets
        if self._path is None:
            return
        try:
            await budgets.sync_subjects(subject_limits(self.policy))
        except STORE_ERRORS as exc:
            log.error("the policy's limits cannot be stored now (tried again in %g s): %s", RELOAD_INTERVAL, exc)
            self._stamp = None

    def subjects(self, access: Access) -> tuple[str, ...]:
        """The user and group subject keys whose limits ``access``'s queries count against."""
        return limit_subjects(self.policy, access.principal)

    def patterns(self, access: Access) -> tuple[str, ...] | None:
        """The model patterns ``access`` may use; None: every model."""
        return allowed_patterns(self.policy, access.principal)

    async def reload(self) -> bool:
        """Read the file again when it changed; returns whether the policy was replaced.

        Raises:
            ConfigError: the file cannot be read or parsed.
        """
        if self._path is None:
            return False
        path = self._path
        try:
            stamp, raw = await trio.to_thread.run_sync(lambda: _read(path))
        except OSError as exc:
            raise ConfigError(f"the policy file {path} cannot be read: {exc.strerror}") from exc
        if stamp == self._stamp:
            return False
        policy = parse_policy(raw)
        if self._budgets is not None:
            try:
                await self._budgets.sync_subjects(subject_limits(policy))
            except STORE_ERRORS as exc:
                # Not in force until the store takes its limits: tried again at the next check.
                raise ConfigError(f"the policy's limits cannot be stored now: {exc}") from exc
        self.policy = policy
        self._stamp = stamp
        return True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load the policy, then keep it current until cancelled. Startable.

        Raises:
            ConfigError: the file cannot be read or parsed at start.
        """
        await self.reload()
        task_status.started()
        if self._path is None:
            return
        while True:
            await trio.sleep(RELOAD_INTERVAL)
            try:
                if await self.reload():
                    log.info("policy file %s reloaded", self._path)
            except ConfigError as exc:
                log.error("the policy file changed but is not used (the previous one stays): %s", exc)


async def managed_settings(
    source: PolicySource, access: Access, head: RequestHead, exchange: Exchange, request_id: str
) -> None:
    """``GET /managed/settings`` (see the module docstring)."""
    settings = settings_for(source.policy, access.principal)
    if settings is None:
        await send_error(exchange, 404, "not_found_error", NO_POLICY_MESSAGE, request_id, retry=False)
        return
    body, etag = settings_body(settings)
    headers = [(b"etag", etag.encode()), (b"cache-control", b"private, no-cache")]
    if not_modified(head.headers.get("if-none-match"), etag):
        await exchange.start(304, headers)
        await exchange.end()
        return
    await exchange.respond(200, body, JSON_CONTENT_TYPE, headers)
