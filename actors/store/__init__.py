"""Where the CostLedger keeps what it records: the SQLite and PostgreSQL stores, their
migrations, the ledger's health, its sessions in memory (``ledger_sessions``) and the
dashboard's reads (``ledger_reads``), access tokens and the fleet's shared state.
"""
