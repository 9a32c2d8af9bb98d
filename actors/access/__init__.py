"""Who may do what: access tokens with budgets (and a query's reservations against them,
``query_budgets``), and the identities behind bearer tokens.
"""
