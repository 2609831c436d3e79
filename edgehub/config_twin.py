"""The hub's routes and store-and-forward settings from its own module twin (``configSource=twin``).

IoT Edge deploys edgeHub's config as the desired properties of its module twin (``$edgeHub``:
``schemaVersion``, ``routes``, ``storeAndForwardConfiguration``), so a hub with an upstream takes
them from there once they arrive, over the config file's, and keeps the cached copy (the twin
store) for restarts while offline, as edgeHub's twin config source does. The config file still
gives the local registry (``identities``) and the modules' manifest desired properties. A twin
config that does not validate is refused and the previous config stays (``lastDesiredStatus``
400 in the hub's reported properties). Owns the choice and the composition only; the hub applies.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from edgehub.config_file import HubConfig, has_hub_config, with_desired_properties
from edgehub.errors import EdgeHubError
from edgehub.message import Identity
from edgehub.twins.port import JsonObject
from edgehub.twins.service import TwinService

log = logging.getLogger(__name__)

Validate = Callable[[HubConfig], None]


class TwinConfig:
    """Composes the config in force from the file's and the hub's own twin's desired properties."""

    def __init__(self, identity: Identity, twins: TwinService, validate: Validate, *, enabled: bool) -> None:
        self.identity = identity
        self._twins = twins
        self._validate = validate
        self._enabled = enabled
        self.version: int | None = None
        """The twin's desired ``$version`` of the config in force; None while the file's is."""

    def compose(self, file_config: HubConfig) -> tuple[HubConfig, int] | None:
        """The file's config with the twin's routes and store settings, validated, and the twin's
        version; None when the twin holds no config (or ``configSource=local``). Raises
        ConfigError or another EdgeHubError when the twin's config is invalid."""
        if not self._enabled:
            return None
        held = self._twins.upstream_desired(self.identity)
        if held is None or not has_hub_config(held[0]):
            return None
        desired, version = held
        config = with_desired_properties(file_config, desired, f"twin of {self.identity}")
        self._validate(config)
        return config, version

    def effective(self, file_config: HubConfig) -> HubConfig:
        """The config to run with: the twin's when it holds a valid one, else the file's."""
        try:
            composed = self.compose(file_config)
        except EdgeHubError as exc:
            log.warning("config in the twin of %s refused, using %s: %s",
                        self.identity, file_config.source, exc)
            composed = None
        if composed is None:
            self.version = None
            return file_config
        config, self.version = composed
        log.info("routes and store settings from the twin of %s ($version %d), over %s's",
                 self.identity, self.version, file_config.source)
        return config

    def subscribe(self, changed: Callable[[], None]) -> Callable[[], None]:
        """Call ``changed`` after each desired change of the hub's own twin (none when disabled)."""
        if not self._enabled:
            return lambda: None

        def listener(_patch: JsonObject) -> None:
            changed()

        return self._twins.subscribe_desired(self.identity, listener)

