"""``edgehub identity add|list|remove|token``: the config file's local identities, their keys,
connection strings and SAS tokens.

Edits only the ``identities`` list of the file (the rest is kept as it was, key order included),
checks the result as the hub would and replaces the file atomically, so a running hub that
watches it reloads a whole file or nothing. Never prints a key except inside what was asked for.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

from edgehub.auth.sas import make_sas_token, sas_resource
from edgehub.config_file import parse_config, read_config_bytes
from edgehub.config_identities import identity_id_problem
from edgehub.errors import ConfigError
from edgehub.message import Identity
from edgehub.settings import Settings

KEY_BYTES: Final = 32
"""Symmetric keys as IoT Hub generates them: 32 random bytes, base64."""
DEFAULT_TOKEN_TTL: Final = 3600


class IdentityFileError(Exception):
    """The file cannot be read or written, or the identity named does not fit it."""


def parse_identity(text: str) -> Identity:
    """``device`` or ``device/module`` (the MQTT client id form); IdentityFileError otherwise."""
    device, _, module = text.partition("/")
    for part in (device, module) if module else (device,):
        if (problem := identity_id_problem(part)) is not None:
            raise IdentityFileError(f"{text!r}: {problem}")
    return Identity(device, module or None)


def new_key() -> str:
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def _read(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(read_config_bytes(path).decode("utf-8-sig"))
    except OSError as exc:
        raise IdentityFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise IdentityFileError(f"{path}: not a JSON config file: {exc}") from None
    if not isinstance(document, dict):
        raise IdentityFileError(f"{path}: not a JSON object")
    return document


def _entries(document: dict[str, Any]) -> list[dict[str, Any]]:
    entries = document.setdefault("identities", [])
    if not isinstance(entries, list):
        raise IdentityFileError("identities: must be a list")
    return entries


def _identity_of(entry: object) -> Identity | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("deviceId"), str):
        return None
    module = entry.get("moduleId")
    return Identity(entry["deviceId"], module if isinstance(module, str) else None)


def _write(path: Path, document: dict[str, Any]) -> None:
    """Check ``document`` as the hub would, then replace ``path`` with it in one rename."""
    try:
        parse_config(document, str(path), path.parent)
    except ConfigError as error:
        raise IdentityFileError("; ".join(f"{loc}: {reason}" for loc, reason in error.problems)) from None
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def connection_string(settings: Settings, identity: Identity, key: str) -> str:
    """What a device or module SDK takes: this hub as its gateway (``GatewayHostName``)."""
    module = f";ModuleId={identity.module_id}" if identity.module_id else ""
    return (f"HostName={settings.iothub_hostname};DeviceId={identity.device_id}{module};"
            f"SharedAccessKey={key};GatewayHostName={settings.edgehub_hostname}")


def add(path: Path, identity: Identity, settings: Settings, *, create: bool = False) -> str:
    """Add ``identity`` with new primary and secondary keys; its connection string."""
    if path.exists() or not create:
        document = _read(path)
    else:
        document = {"schemaVersion": "1.1", "routes": {}, "identities": []}
    entries = _entries(document)
    if any(_identity_of(entry) == identity for entry in entries):
        raise IdentityFileError(f"{identity} is already in {path}")
    primary = new_key()
    entry: dict[str, Any] = {"deviceId": identity.device_id}
    if identity.module_id:
        entry["moduleId"] = identity.module_id
    entry |= {"primaryKey": primary, "secondaryKey": new_key()}
    entries.append(entry)
    _write(path, document)
    return connection_string(settings, identity, primary)


def remove(path: Path, identity: Identity) -> None:
    document = _read(path)
    entries = _entries(document)
    kept = [entry for entry in entries if _identity_of(entry) != identity]
    if len(kept) == len(entries):
        raise IdentityFileError(f"{identity} is not in {path}")
    document["identities"] = kept
    _write(path, document)


def listing(path: Path) -> list[dict[str, str]]:
    """One row per identity: id, how it authenticates (sas, x509 thumbprint, x509 CA)."""
    rows = []
    for entry in _entries(_read(path)):
        identity = _identity_of(entry)
        if identity is None:
            continue
        kinds = [kind for key, kind in (("primaryKey", "sas"), ("x509Thumbprint", "x509-thumbprint"),
                                        ("x509CaFile", "x509-ca")) if key in entry]
        rows.append({"id": identity.id, "kind": "module" if identity.module_id else "device",
                     "auth": ",".join(kinds)})
    return rows


def token(path: Path, identity: Identity, settings: Settings, *, ttl: int = DEFAULT_TOKEN_TTL,
          secondary: bool = False, now: float | None = None) -> str:
    """A SAS token for ``identity`` valid ``ttl`` seconds, signed with its key from the file."""
    if ttl < 1:
        raise IdentityFileError("--ttl must be at least 1 second")
    name = "secondaryKey" if secondary else "primaryKey"
    for entry in _entries(_read(path)):
        if _identity_of(entry) == identity:
            key = entry.get(name)
            if not isinstance(key, str):
                raise IdentityFileError(f"{identity} has no {name} (it may use a certificate)")
            expiry = int((time.time() if now is None else now) + ttl)
            return make_sas_token(sas_resource(settings.iothub_hostname, identity), key, expiry)
    raise IdentityFileError(f"{identity} is not in {path}")


def main(args: Any, settings: Settings) -> int:
    """The ``identity`` subcommand; exit 0, or 2 with the reason."""
    path: Path = args.config
    try:
        if args.action == "list":
            rows = listing(path)
            if args.json:
                print(json.dumps(rows, indent=2))
            else:
                print(f"{'id':<48} {'kind':<7} auth")
                for row in rows:
                    print(f"{row['id']:<48} {row['kind']:<7} {row['auth']}")
            return 0
        identity = parse_identity(args.id)
        if args.action == "add":
            print(add(path, identity, settings, create=args.create))
        elif args.action == "remove":
            remove(path, identity)
            print(f"removed {identity} from {path}")
        else:
            print(token(path, identity, settings, ttl=args.ttl, secondary=args.secondary))
    except IdentityFileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
