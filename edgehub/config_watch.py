"""Re-reads the config file when it changes and hands the hub each new, valid HubConfig.

Owns change detection and the rule "a bad new file is refused, the old config stays"
(docs/architecture.md §4); must not apply a config itself (``on_change`` does) nor wait except
through the Clock.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

from edgehub.clock import Clock
from edgehub.config_file import HubConfig, load_config_bytes, read_config_bytes
from edgehub.errors import ConfigError, EdgeHubError

log = logging.getLogger(__name__)


class ConfigWatcher:
    """Polls ``path`` every ``interval_secs`` of ``clock`` time; calls ``on_change`` with each new config.

    A change is a change of content (SHA-256 of the bytes, read on every poll): mtime and size
    miss an edit within one timestamp tick (FAT on an SD card: 2 s), and the file is small. A
    file that does not parse, or that ``validate`` refuses (the hub passes route compilation),
    is logged as ONE warning line and the current config stays; so does a missing or unreadable
    file. A new file equal to the current config (only reformatted) is not passed on.

    ``current`` is the config the hub runs with, if it loaded the file itself: then a change
    made between that load and the first poll is still noticed. Without it, the file as it is
    at construction counts as current.
    """

    def __init__(
        self,
        path: Path,
        on_change: Callable[[HubConfig], None],
        clock: Clock,
        interval_secs: float = 2.0,
        validate: Callable[[HubConfig], object] | None = None,
        current: HubConfig | None = None,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        if interval_secs <= 0:
            raise ValueError(f"interval_secs must be positive (got {interval_secs})")
        self._path = path
        self._on_change = on_change
        self._clock = clock
        self._interval_secs = interval_secs
        self._validate = validate
        self._current = current
        self._on_refused = on_refused
        self._digest: bytes | None = None if current is not None else self._digest_now()
        self._read_problem: str | None = None

    @property
    def current(self) -> HubConfig | None:
        """The last config passed to ``on_change`` (or given as ``current``)."""
        return self._current

    async def run(self) -> None:
        """Poll until cancelled; an error in ``on_change`` is logged and polling goes on."""
        log.debug("watching config file %s every %ss", self._path, self._interval_secs)
        while True:
            await self._clock.sleep(self._interval_secs)
            try:
                self.check_once()
            except Exception:
                log.exception("applying config file %s failed; the watcher goes on", self._path)

    def check_once(self) -> bool:
        """Look at the file once; True if ``on_change`` was called with a new config."""
        try:
            data = read_config_bytes(self._path)
        except OSError as exc:
            self._note_read_problem(exc)
            return False
        self._read_problem = None
        digest = hashlib.sha256(data).digest()
        if digest == self._digest:
            return False
        self._digest = digest
        config = self._parse(data)
        if config is None or config == self._current:
            return False
        if config.warnings:
            log.warning(
                "config file %s: parts ignored: %s",
                self._path,
                "; ".join(f"{loc}: {why}" for loc, why in config.warnings),
            )
        log.debug(
            "config file %s changed: %d routes, %d identities",
            self._path,
            len(config.routes),
            len(config.identities),
        )
        self._on_change(config)
        self._current = config
        return True

    def _parse(self, data: bytes) -> HubConfig | None:
        """The new config, or None after logging why it is refused."""
        try:
            config = load_config_bytes(data, str(self._path), self._path.parent)
            if self._validate is not None:
                self._validate(config)
        except ConfigError as exc:
            problems = "; ".join(f"{location}: {reason}" for location, reason in exc.problems)
            self._refused(problems)
            return None
        except EdgeHubError as exc:  # e.g. RouteSyntaxError from the validate hook
            self._refused(str(exc))
            return None
        return config

    def _refused(self, reason: str) -> None:
        log.warning("config file %s refused, keeping the current config: %s", self._path, reason)
        if self._on_refused is not None:
            self._on_refused(reason)

    def _note_read_problem(self, exc: OSError) -> None:
        """Warn once per distinct problem, not on every poll."""
        reason = (
            "it is missing"
            if isinstance(exc, FileNotFoundError)
            else f"it cannot be read: {exc.strerror or exc}"
        )
        if reason != self._read_problem:
            log.warning("config file %s: %s; keeping the current config", self._path, reason)
            self._read_problem = reason

    def _digest_now(self) -> bytes | None:
        try:
            return hashlib.sha256(read_config_bytes(self._path)).digest()
        except OSError:
            return None
