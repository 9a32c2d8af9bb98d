"""What opening a SQLite ledger file checks first (``LedgerStore.open``, actors/store/sqlite.py):
the exclusive lock beside the file (another gateway process using the ledger is refused), that
the file and its directory are writable, and ``PRAGMA quick_check`` within a time budget (a
corrupt file is refused; a check that runs out of time is logged and skipped, never fatal).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import sqlite3
import time
from typing import Final

from protocol.errors import ConfigError

# The integrity check at start reads every page: well under a second for a ledger of a
# year's sessions, while a huge one must not hold the gateway's start for minutes. Past the
# budget the check is abandoned (logged); corruption met later still fails only what it touches.
INTEGRITY_CHECK_BUDGET: Final = 2.0
# SQLite virtual-machine steps between two looks at the integrity check's clock.
INTEGRITY_CHECK_STEPS: Final = 10_000
# Problems quoted from the check's report: the first says what is wrong.
INTEGRITY_PROBLEMS_SHOWN: Final = 3
LOCK_SUFFIX: Final = ".lock"

log = logging.getLogger("switchboard.ledger")


def _reason(exc: BaseException) -> str:
    """An OS or SQLite error in words, with a hint where the cause is usual."""
    if isinstance(exc, OSError):
        text = f"{exc.strerror or exc} ({exc.filename})" if exc.filename else str(exc)
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return f"{text}: the ledger's directory and file must be writable"
        return text
    text = str(exc)
    if "readonly" in text or "unable to open" in text:
        return f"{text}: the ledger's directory and file must be writable"
    return text


def _lock(path: str) -> int:
    """Create the ledger's directory if needed and take the exclusive lock beside the file.

    Raises:
        ConfigError: the directory or lock file cannot be created, or another process
            holds the lock.
    """
    lock_path = path + LOCK_SUFFIX
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
        fd = os.open(lock_path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot open the cost ledger {path!r} for writing: {_reason(exc)}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(
            f"the cost ledger {path!r} is in use by another switchboard process (it holds "
            f"{lock_path!r}); a SQLite ledger serves one gateway: give this one its own --ledger"
        ) from None
    except OSError as exc:
        os.close(fd)
        raise ConfigError(f"cannot lock the cost ledger {path!r}: {_reason(exc)}") from exc
    return fd


def _check_integrity(db: sqlite3.Connection, path: str, budget: float) -> None:
    """``PRAGMA quick_check`` within ``budget`` seconds (skipped, with a warning, past it).

    Raises:
        ConfigError: the file is corrupt (or not a database at all).
    """
    deadline = time.monotonic() + budget
    db.set_progress_handler(lambda: int(time.monotonic() > deadline), INTEGRITY_CHECK_STEPS)
    try:
        rows = db.execute(f"PRAGMA quick_check({INTEGRITY_PROBLEMS_SHOWN})").fetchall()
    except sqlite3.Error as exc:
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_INTERRUPT:
            log.warning(
                "the cost ledger's integrity check did not finish within %g s; starting "
                "without it (corruption met later fails only the requests it touches)", budget,
            )
            return
        rows = [(str(exc),)]
    finally:
        db.set_progress_handler(None, 0)
    # quick_check reports "ok", or lines of problems under a "*** in database main ***" heading.
    problems = [
        line for row in rows if row[0] != "ok" for line in str(row[0]).splitlines() if not line.startswith("***")
    ]
    if problems:
        raise ConfigError(
            f"the cost ledger {path!r} is corrupt ({'; '.join(problems)}); move it aside "
            "(sqlite3's .recover may save its data) and start on a new file"
        )

