"""What a query's machine (protocol/query_machine.py) starts from: its ``QuerySetup``.

The one place a query's frame, its HTTP door's options and the gateway's Config become the
retry policy and the facts the machine decides by (actors/supervisor/run.py feeds it).
"""

from __future__ import annotations

import math

from actors.messages.supervisor import RunQuery
from actors.supervisor.attempt_build import upstream_model
from actors.supervisor.context import QueryContext
from protocol.query_events import QuerySetup
from protocol.retry import RetryPolicy


def retry_policy(msg: RunQuery, ctx: QueryContext) -> RetryPolicy:
    """The query's retry policy: its frame's asks, within what the Config allows."""
    config, query = ctx.config, msg.query
    persistent = config.unattended_retry or (bool(query.persistent) and config.allow_persistent_queries)
    return RetryPolicy(
        max_retries=query.max_retries if query.max_retries is not None else config.max_retries,
        source=query.source,
        fallback_model=ctx.builds.api_model(query.fallback_model) if query.fallback_model else None,
        persistent=persistent,
        fallback_for_all_models=config.fallback_for_all_models,
        nonstreaming_fallback=config.nonstreaming_fallback,
        catalog=ctx.builds.catalog,
        client_retries=msg.options.client_retries,
    )


def query_setup(msg: RunQuery, ctx: QueryContext, started: float) -> QuerySetup:
    """The machine's start for the query of ``msg``, which began at ``started`` (trio time)."""
    query, options = msg.query, msg.options
    policy = retry_policy(msg, ctx)
    client_model = str(query.request["model"])
    return QuerySetup(
        query_id=query.id,
        request=query.request,
        # The model as sent upstream (aliases and [1m] resolved): gates, prices and the
        # frames all name it.
        model=upstream_model(ctx.builds, client_model, options),
        client_model=client_model,
        policy=policy,
        fallback_client_model=query.fallback_model if policy.fallback_model else None,
        fast_requested=bool(query.fast_mode) and not ctx.shared.fast_mode_disabled,
        recover=bool(query.recover),
        top_up=msg.top_up is not None,
        started=started,
        deadline=math.inf if options.deadline is None else options.deadline,
        api_timeout=ctx.config.api_timeout,
    )
