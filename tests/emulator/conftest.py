"""Fixtures for the emulator tests: a running Emulator and an httpx client bound to it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import trio
from emulator_testkit import API_HEADERS

from emulator import Emulator


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def emulator_log() -> Iterator[list[logging.LogRecord]]:
    """Every record of the ``emulator`` logger; the test fails if one is an ERROR.

    The server swallows unexpected exceptions per connection (it must not die of one),
    so a bug would otherwise only show up as a log line.
    """
    logger = logging.getLogger("emulator")
    handler = _Collect()
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    errors = [r.getMessage() for r in handler.records if r.levelno >= logging.ERROR]
    assert not errors, errors


@pytest.fixture
async def emu(nursery: trio.Nursery) -> Emulator:
    """An Emulator serving on 127.0.0.1 for the duration of the test."""
    emulator = Emulator()
    await nursery.start(emulator.run)
    return emulator


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client for ``emu`` with API headers and no timeouts.

    No timeouts because tests run on the autojump clock, where a timeout would fire in
    virtual time while the emulator deliberately waits.
    """
    assert emu.url is not None
    async with httpx.AsyncClient(base_url=emu.url, headers=API_HEADERS, timeout=None) as http:
        yield http
