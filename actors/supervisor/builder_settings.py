"""The request builder's settings per provider, kept by the RetrySupervisor.

The builder shapes model ids and betas per provider: the default one (``Config.provider``),
or the one SWITCHBOARD_PROVIDER_ROUTES gives a model. ``ProviderBuilds`` makes one
``BuildSettings`` per provider on first use and keeps it, with the model catalog in force
(``catalog()``: the built-in one, or it merged with the upstream's ``/v1/models`` once the
ModelsFetcher has it); a new catalog replaces every kept settings. Owned by the RetrySupervisor's task
tree alone (its query runs and count_tokens tasks share it), so no lock is needed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import final

import msgspec

from actors.config.settings import Config
from protocol.models.aliases import resolve_model
from protocol.models.catalog import BUILTIN, Catalog
from protocol.providers import route_provider
from protocol.request_builder import BuildSettings


@final
class ProviderBuilds:
    """``BuildSettings`` by provider, and the upstream id of a model a client names."""

    def __init__(self, config: Config, catalog: Callable[[], Catalog] = lambda: BUILTIN) -> None:
        self._config = config
        self._catalog = catalog
        self._build = msgspec.structs.replace(config.build, provider=config.provider)
        self._build_for: dict[str, BuildSettings] = {config.provider: self._build}

    @property
    def catalog(self) -> Catalog:
        """The model catalog in force. Not a checkpoint."""
        return self._catalog()

    def settings(self, requested: str) -> BuildSettings:
        """The build settings for the provider that serves the model ``requested``."""
        catalog = self._catalog()
        if self._build.models.catalog is not catalog:
            self._build = msgspec.structs.replace(
                self._build, models=msgspec.structs.replace(self._build.models, catalog=catalog)
            )
            self._build_for = {self._config.provider: self._build}
        provider = route_provider(requested, self._config.provider_routes) or self._config.provider
        settings = self._build_for.get(provider)
        if settings is None:
            settings = self._build_for[provider] = msgspec.structs.replace(self._build, provider=provider)
        return settings

    def api_model(self, requested: str) -> str:
        """The id ``requested`` is sent upstream as (aliases and ``[1m]`` resolved)."""
        build = self.settings(requested)
        return resolve_model(requested, build.models, build.provider).api_id
