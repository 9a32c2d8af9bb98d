"""``QueryContext``: what every query's run shares (the message that starts a query,
``RunQuery``, is the supervisor's contract: actors/messages/supervisor.py).

Types only: the Gateway sends ``RunQuery``, the supervisor (actors/retry_supervisor.py)
receives it and makes the ``QueryContext``, and the query's run (actors/query_run.py) and
its attempts (actors/attempt_build.py) read both, with no import between them for their
sake.
"""

from __future__ import annotations

import dataclasses
import random

from actors.config import Config
from actors.drain import Drain
from actors.messages.ledger import CostLedgerAddress
from actors.messages.pool import ClientPoolAddress
from actors.messages.relay import StreamRelayAddress
from actors.metrics import Metrics
from actors.provider_builds import ProviderBuilds
from actors.retry_shared import SharedRetryState
from actors.session_state import SessionStates


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class QueryContext:
    """What every query's run shares, made once by the RetrySupervisor: the state its
    queries share and the addresses it closes (actors/query_run.py). ``drain``: the
    graceful shutdown each run reports its end to."""

    config: Config
    shared: SharedRetryState
    sessions: SessionStates
    builds: ProviderBuilds
    metrics: Metrics
    rng: random.Random
    to_relay: StreamRelayAddress
    to_ledger: CostLedgerAddress
    to_pool: ClientPoolAddress
    drain: Drain | None = None
