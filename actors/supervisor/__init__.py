"""The RetrySupervisor's parts: one query's run, its channel to the client, its options,
what each attempt sends, per-session state, the gates shared across queries, admission,
a query's handover to the supervisor, and the drain.
"""
