"""A gateway process's instance id (README.md "Deployment"): hostname, pid and a random part,
new at each start (a pid is reused). Every usage row a process writes to a shared ledger
carries it; ``/healthz`` and the startup log show it; the fleet's notifications
(``actors.store.pg_fleet``) name their sender by it.
"""

from __future__ import annotations

import os
import secrets
import socket


def new_instance_id() -> str:
    """A process's id: ``hostname:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
