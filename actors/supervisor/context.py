"""``QueryContext``: what every query's run shares (the message that starts a query,
``RunQuery``, is the supervisor's contract: actors/messages/supervisor.py).

Types only: the Gateway sends ``RunQuery``, the supervisor (actors/retry_supervisor.py)
receives it and makes the ``QueryContext``, and the query's run (actors/supervisor/run.py) and
its attempts (actors/supervisor/attempt_build.py) read both, with no import between them for their
sake.
"""

from __future__ import annotations

import dataclasses
import random

from actors.config.settings import Config
from actors.messages.ledger import CostLedgerAddress
from actors.messages.pool import ClientPoolAddress
from actors.messages.relay import StreamRelayAddress
from actors.observe.metrics import Metrics
from actors.supervisor.builder_settings import ProviderBuilds
from actors.supervisor.drain import Drain
from actors.supervisor.session_state import SessionStates
from actors.supervisor.shared import SharedRetryState


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class QueryContext:
    """What every query's run shares, made once by the RetrySupervisor: the state its
    queries share and the addresses it closes (actors/supervisor/run.py). ``drain``: the
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
