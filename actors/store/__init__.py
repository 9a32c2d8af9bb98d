"""Where the CostLedger keeps what it records: the SQLite and PostgreSQL stores, their
migrations, the ledger's health, access tokens and the fleet's shared state.
"""
