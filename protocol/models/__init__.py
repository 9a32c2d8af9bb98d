"""The model catalog (``catalog.toml``) and its views: aliases and ids per provider, the
options clients see, the HTTP door's ``GET /v1/models``, an upstream's list.
"""
