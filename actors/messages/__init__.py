"""The actors' contracts: each actor's messages, replies and published snapshots.

A leaf module per actor, imported by the actor and by everyone who talks to it, so that no
user of an actor imports the actor's module (and no two actor modules import each other):

- ``actors.messages.pool``: ClientPool (``Acquire`` a ``Lease``, ``Refresh``, ``ReportBroken``).
- ``actors.messages.relay``: StreamRelay (``RunAttempt`` -> ``AttemptOutcome``,
  ``RunCount`` -> ``CountResult``).
- ``actors.messages.supervisor``: RetrySupervisor (``RunQuery``, ``RunCountTokens``,
  ``GetSessionActivity`` -> ``SessionActivity``).
- ``actors.messages.ledger``: CostLedger (``OpenSession``, ``RecordUsage``,
  ``RecordDuration``, ``GetCost``, the dashboard's reads).
- ``actors.messages.bootstrap``: BootstrapFetcher (``GetBootstrap`` -> ``BootstrapState``,
  also the snapshot the fetcher publishes).

Others ask an actor by message, or read a snapshot it publishes: an immutable msgspec
struct the actor replaces as a whole, never its live state (docs/supervision.md).
These modules import no actor module (``scripts/check_layers.py`` finds import cycles).
"""
