"""The identities in the edge device's scope, read from upstream as edgeHub reads them.

Under IoT Edge the devices and modules that connect to the hub are registered in the cloud IoT hub,
not in a local file: edgeHub asks IoT Hub for the identities in its device's scope, with their
keys or certificate thumbprints, and authenticates clients against that list, also while offline.
This module speaks IoT Hub's nested device-scope API (``POST /devices/{edge}/modules/$edgeHub/
devicesAndModulesInTargetDeviceScope?api-version=2020-06-30-preview`` with ``{"pageSize",
"continuationLink", "authChain"}``, answered with ``{"devices", "modules", "continuationLink"}``
pages), keeps the last complete answer in a file beside the store (mode 0600: it holds keys), and
refreshes it every ``DeviceScopeCacheRefreshRateSecs`` and soon after a client's credentials were
refused (a new identity, a rotated key). The config file's identities are always added and win
over a scope entry.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from edgehub.auth.identities import IdentitySpec
from edgehub.clock import Clock
from edgehub.errors import EdgeHubError
from edgehub.upstream.config import UpstreamConfig
from edgehub.upstream.https_post import https_post
from edgehub.upstream.transport import tls_context

log = logging.getLogger(__name__)

SCOPE_API_VERSION: Final = "2020-06-30-preview"
PAGE_SIZE: Final = 1000
"""Identities per page (IoT Hub's maximum)."""
MAX_PAGES: Final = 1000
"""A scope larger than a million identities is refused rather than paged forever."""
UNKNOWN_REFRESH_SECS: Final = 30.0
"""Refused credentials refresh the scope at most this often."""
RETRY_SECS: Final = 60.0
"""After a failed refresh, try again this much later (the cache keeps serving)."""
CACHE_FILE: Final = "device-scope.json"
"""In StorageFolder, beside the store."""
HTTPS_PORT: Final = 443


class ScopeError(Exception):
    """The upstream answered the scope request with something that is not a scope page."""


Post = Callable[[str, bytes], Awaitable[tuple[int, bytes]]]
"""``post(path_and_query, json_body) -> (status, body)`` to the upstream's HTTPS API."""


def scope_path(edge_device_id: str, module_id: str = "$edgeHub") -> str:
    return (f"/devices/{quote(edge_device_id, safe='')}/modules/{quote(module_id, safe='')}"
            f"/devicesAndModulesInTargetDeviceScope?api-version={SCOPE_API_VERSION}")


def scope_request(auth_chain: str, continuation: str | None, page_size: int = PAGE_SIZE) -> bytes:
    body: dict[str, object] = {"pageSize": page_size, "authChain": auth_chain}
    if continuation:
        body["continuationLink"] = continuation
    return json.dumps(body).encode()


def parse_scope_page(data: bytes) -> tuple[list[IdentitySpec], str | None]:
    """The enabled identities of one page and the next page's continuation link (None at the end).
    Identities with an authentication type the hub cannot check locally are left out."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ScopeError(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ScopeError("the answer is not a JSON object")
    specs: list[IdentitySpec] = []
    for key, module in (("devices", False), ("modules", True)):
        entries = document.get(key)
        if entries is None:
            continue
        if not isinstance(entries, list):
            raise ScopeError(f"{key} is not a list")
        for entry in entries:
            spec = _identity(entry, module=module)
            if spec is not None:
                specs.append(spec)
    continuation = document.get("continuationLink")
    if continuation is not None and not isinstance(continuation, str):
        raise ScopeError("continuationLink is not a string")
    return specs, continuation or None


def _identity(entry: object, *, module: bool) -> IdentitySpec | None:
    if not isinstance(entry, dict):
        raise ScopeError("an identity is not a JSON object")
    device_id = entry.get("deviceId")
    module_id = entry.get("moduleId") if module else None
    if not isinstance(device_id, str) or (module and not isinstance(module_id, str)):
        raise ScopeError("an identity has no deviceId (or a module no moduleId)")
    if not module and str(entry.get("status", "enabled")).lower() != "enabled":
        return None  # a disabled device may not connect (IoT Hub refuses it too)
    auth = entry.get("authentication")
    auth = auth if isinstance(auth, dict) else {}
    kind = str(auth.get("type", "")).lower()
    if kind == "sas":
        keys = _object(auth, "symmetricKey")
        primary, secondary = _text(keys, "primaryKey"), _text(keys, "secondaryKey")
        if primary or secondary:
            return IdentitySpec(device_id, module_id, primary_key=primary or secondary,
                                secondary_key=secondary if primary else None)
    elif kind == "selfsigned":
        prints = _object(auth, "x509Thumbprint")
        thumbprint = _text(prints, "primaryThumbprint") or _text(prints, "secondaryThumbprint")
        if thumbprint:
            return IdentitySpec(device_id, module_id, x509_thumbprint=thumbprint.lower())
    # certificateAuthority needs the device's CA, which the scope does not carry (the config
    # file's x509CaFile does); "none" cannot be checked at all.
    return None


def _object(mapping: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = mapping.get(key)
    return value if isinstance(value, dict) else {}


def _text(mapping: Mapping[str, Any], key: str) -> str | None:
    value = mapping.get(key)
    return value if isinstance(value, str) and value else None


async def fetch_scope(post: Post, edge_device_id: str) -> list[IdentitySpec]:
    """Every page of the edge device's scope (its own auth chain: a root edge device)."""
    path = scope_path(edge_device_id)
    specs: list[IdentitySpec] = []
    continuation: str | None = None
    for _ in range(MAX_PAGES):
        status, body = await post(path, scope_request(edge_device_id, continuation))
        if status != 200:
            raise ScopeError(f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}")
        page, continuation = parse_scope_page(body)
        specs.extend(page)
        if continuation is None:
            return specs
    raise ScopeError(f"more than {MAX_PAGES} pages")


def load_cache(path: Path) -> tuple[IdentitySpec, ...]:
    """The identities of the last complete scope answer; none when there is no (readable) cache."""
    try:
        entries = json.loads(path.read_text())
        return tuple(IdentitySpec(**entry) for entry in entries)
    except FileNotFoundError:
        return ()
    except (OSError, ValueError, TypeError) as exc:
        log.warning("device scope cache %s unreadable (%s); waiting for upstream", path, exc)
        return ()


def save_cache(path: Path, specs: Sequence[IdentitySpec]) -> None:
    """Atomically (write, fsync, rename), readable by the hub's user only."""
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        json.dump([asdict(spec) for spec in specs], file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


class DeviceScope:
    """Keeps the scope identities current: ``identities`` now, ``run()`` refreshes, calling
    ``on_change`` with the new list after each answer that differs."""

    def __init__(
        self, fetch: Callable[[], Awaitable[list[IdentitySpec]]], cache: Path, clock: Clock,
        on_change: Callable[[tuple[IdentitySpec, ...]], None], *, refresh_secs: float,
    ) -> None:
        self._fetch = fetch
        self._cache = cache
        self._clock = clock
        self._on_change = on_change
        self._refresh_secs = refresh_secs
        self._wake = asyncio.Event()
        self._last_refresh = -UNKNOWN_REFRESH_SECS
        self.identities = load_cache(cache)
        self.refreshed = asyncio.Event()
        """Set after each refresh attempt (for tests and ``edgehub stats``)."""

    def credentials_refused(self) -> None:
        """A client's credentials were refused (an identity or key the hub does not hold yet):
        refresh soon, at most once per UNKNOWN_REFRESH_SECS."""
        if self._clock.monotonic() - self._last_refresh >= UNKNOWN_REFRESH_SECS:
            self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            self._last_refresh = self._clock.monotonic()
            delay = self._refresh_secs if await self._refresh() else min(RETRY_SECS, self._refresh_secs)
            self.refreshed.set()
            timer = asyncio.ensure_future(self._clock.sleep(delay))
            woken = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({timer, woken}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                timer.cancel()
                woken.cancel()

    async def _refresh(self) -> bool:
        try:
            fresh = tuple(await self._fetch())
        except (ScopeError, OSError, TimeoutError, EdgeHubError) as exc:
            log.warning("device scope not refreshed (%s); %d cached identities serve",
                        exc, len(self.identities))
            return False
        if fresh != self.identities:
            try:
                save_cache(self._cache, fresh)
            except OSError as exc:
                log.warning("device scope cache %s not written: %s", self._cache, exc)
            log.info("device scope: %d identities from upstream", len(fresh))
            self.identities = fresh
            self._on_change(fresh)
        return True


def device_scope_for(
    config: UpstreamConfig, storage_folder: Path, clock: Clock, refresh_secs: float,
    on_change: Callable[[tuple[IdentitySpec, ...]], None],
) -> DeviceScope | None:
    """Toward an Azure IoT Hub (a root edge device) the scope comes from there, on its HTTPS API
    with the hub's own token; toward a parent edge hub or a broker there is none (the config
    file's identities serve)."""
    if not config.is_iot_hub:
        return None
    loop_of = asyncio.get_running_loop

    async def post(path: str, body: bytes) -> tuple[int, bytes]:
        loop = loop_of()
        # Reading CA files and asking the workload API to sign are blocking: off the loop.
        context = await loop.run_in_executor(None, tls_context, config.ca_file, config.ca_pem)
        token = await loop.run_in_executor(None, config.credentials.token, clock.time())
        return await https_post(config.host, HTTPS_PORT, path, body, authorization=token.text,
                                context=context)

    async def fetch() -> list[IdentitySpec]:
        return await fetch_scope(post, config.identity.device_id)

    return DeviceScope(fetch, storage_folder / CACHE_FILE, clock, on_change, refresh_secs=refresh_secs)
