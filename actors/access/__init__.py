"""Who may do what: access tokens with budgets, and the identities behind bearer tokens.
"""
