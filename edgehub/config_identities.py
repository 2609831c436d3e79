"""The config file's ``identities`` list → IdentitySpec records: ids, symmetric keys, X.509
thumbprints and CA files, each problem reported with its JSON location. Also the id rule IoT Hub
applies, shared with the connection string and the identity CLI. No I/O beyond checking a CA file
exists.
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path
from typing import Final

from edgehub.auth.authorize import EDGE_HUB_MODULE
from edgehub.auth.identities import IdentitySpec
from edgehub.config_json import (
    Report,
    child_path,
    json_object,
    json_text,
    kind_of,
    shown,
    unknown_keys,
)
from edgehub.message import Identity

_KEY_BYTES: Final = (16, 64)
"""IoT Hub accepts symmetric keys of 16 to 64 bytes."""


_ID_CHARACTERS: Final = re.compile(r"[A-Za-z0-9\-.%_*?!(),:=@$']{1,128}")


def identity_id_problem(text: str) -> str | None:
    """Why ``text`` is not a valid IoT Hub device or module id, or None if it is one.

    IoT Hub: up to 128 ASCII letters, digits and ``- . % _ * ? ! ( ) , : = @ $ '``; so never a
    ``/`` (the device/module separator) nor an MQTT wildcard.
    """
    if _ID_CHARACTERS.fullmatch(text):
        return None
    return "must be 1 to 128 letters, digits or - . % _ * ? ! ( ) , : = @ $ '"


# --- shapes -----------------------------------------------------------------------------------------


_IDENTITY_KEYS: Final = ("deviceId", "moduleId", "primaryKey", "secondaryKey", "x509Thumbprint", "x509CaFile",
                         "desiredProperties")
_CREDENTIAL_KEYS: Final = ("primaryKey", "x509Thumbprint", "x509CaFile")
_KEY_NAMES: Final = ("primaryKey", "secondaryKey")
_THUMBPRINT: Final = re.compile(r"(?:[0-9a-f]{40}|[0-9a-f]{64})")


def parse_identities(value: object, path: str, base_dir: Path | None, report: Report) -> list[IdentitySpec]:
    if value is None:
        return []
    if not isinstance(value, list):
        report.problem(path, f"must be a list of identities (got {kind_of(value)})")
        return []
    identities: list[IdentitySpec] = []
    first_seen: dict[Identity, int] = {}
    for index, entry in enumerate(value):
        location = f"{path}[{index}]"
        spec = _identity(entry, location, base_dir, report)
        if spec is None:
            continue
        if spec.identity in first_seen:
            report.problem(location, f"duplicate of {path}[{first_seen[spec.identity]}] ({spec.identity})")
            continue
        first_seen[spec.identity] = index
        identities.append(spec)
    return identities


def _identity(entry: object, path: str, base_dir: Path | None, report: Report) -> IdentitySpec | None:
    """One ``{"deviceId", ["moduleId"], credentials...}`` entry; None when it has a problem."""
    before = len(report.problems)
    obj = json_object(entry, path, report)
    if obj is None:
        return None
    unknown_keys(obj, path, _IDENTITY_KEYS, report)
    device_id = _id(obj.get("deviceId"), child_path(path, "deviceId"), report)
    module_id = _id(obj["moduleId"], child_path(path, "moduleId"), report) if "moduleId" in obj else None
    if module_id is not None and module_id.startswith("$") and module_id != EDGE_HUB_MODULE:
        # $edgeHub is a child edge hub connecting to this one (nested IoT Edge); other $ ids are reserved.
        reason = f"ids starting with $ are reserved for system modules (only {EDGE_HUB_MODULE} is allowed)"
        report.problem(child_path(path, "moduleId"), reason)
    keys = {
        name: _symmetric_key(obj[name], child_path(path, name), report) for name in _KEY_NAMES if name in obj
    }
    if "secondaryKey" in obj and "primaryKey" not in obj:
        report.problem(child_path(path, "secondaryKey"), "given without primaryKey")
    thumbprint = ca_file = None
    if "x509Thumbprint" in obj:
        thumbprint = _thumbprint(obj["x509Thumbprint"], child_path(path, "x509Thumbprint"), report)
    if "x509CaFile" in obj:
        ca_file = _ca_file(obj["x509CaFile"], child_path(path, "x509CaFile"), base_dir, report)
    if not any(name in obj for name in _CREDENTIAL_KEYS):
        report.problem(
            path, f"has no credential: give {', '.join(_CREDENTIAL_KEYS[:-1])} or {_CREDENTIAL_KEYS[-1]}"
        )
    if len(report.problems) > before or device_id is None:
        return None
    return IdentitySpec(
        device_id=device_id,
        module_id=module_id,
        primary_key=keys.get("primaryKey"),
        secondary_key=keys.get("secondaryKey"),
        x509_thumbprint=thumbprint,
        x509_ca_file=ca_file,
    )


def _id(value: object, path: str, report: Report) -> str | None:
    if value is None:
        report.problem(path, "missing")
        return None
    if not isinstance(value, str):
        report.problem(path, f"must be a string (got {kind_of(value)})")
        return None
    if (problem := identity_id_problem(value)) is not None:
        report.problem(path, f"{problem} (got {shown(value)})")
        return None
    return value


def _symmetric_key(value: object, path: str, report: Report) -> str | None:
    """A base64 key of 16-64 bytes, as IoT Hub requires; its value never appears in a problem."""
    if not isinstance(value, str):
        report.problem(path, f"must be a base64 string (got {kind_of(value)})")
        return None
    try:
        key = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        report.problem(path, "is not valid base64")
        return None
    low, high = _KEY_BYTES
    if not low <= len(key) <= high:
        report.problem(path, f"must decode to {low}-{high} bytes, as IoT Hub requires (got {len(key)})")
        return None
    return value


def _thumbprint(value: object, path: str, report: Report) -> str | None:
    """SHA-1 or SHA-256 hex digest; ``:`` and spaces are dropped and case folded to lower."""
    normalized = value.replace(":", "").replace(" ", "").lower() if isinstance(value, str) else ""
    if not _THUMBPRINT.fullmatch(normalized):
        report.problem(path, f"must be a SHA-1 (40) or SHA-256 (64) hex digest (got {kind_of(value)})")
        return None
    return normalized


def _ca_file(value: object, path: str, base_dir: Path | None, report: Report) -> str | None:
    """A PEM file; a relative path is relative to the config file's folder."""
    text = json_text(value, path, report)
    if text is None:
        return None
    ca_path = Path(text)
    if not ca_path.is_absolute() and base_dir is not None:
        ca_path = base_dir / ca_path
    if not ca_path.is_file():
        report.problem(path, f"no such file: {ca_path}")
        return None
    return str(ca_path)
