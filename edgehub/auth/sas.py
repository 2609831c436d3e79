"""IoT Hub shared access signature (SAS) tokens: parse, make, and check signature, expiry, resource.

Pure functions over strings and bytes; no registry lookups, no clock reads, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, unquote

from edgehub.errors import AuthError
from edgehub.message import Identity

SAS_PREFIX: Final = "SharedAccessSignature"

# IoT Hub token fields: sr (resource URI), sig (signature), se (expiry, Unix seconds),
# skn (policy name, only for policy-signed tokens). Field names are matched
# case-insensitively, as the IoT Hub service SDK parser does.
_FIELDS: Final = frozenset({"sr", "sig", "se", "skn"})
_REQUIRED: Final = ("sr", "sig", "se")
_SIGNATURE_BYTES: Final = hashlib.sha256().digest_size
# Expiry is Unix seconds; 12 digits reach the year 33658, far beyond any real token,
# and keep the value a finite float for AuthResult.expires_at.
_MAX_EXPIRY_DIGITS: Final = 12


@dataclass(frozen=True, slots=True)
class SasToken:
    """A parsed token. ``encoded_resource`` is ``sr`` exactly as sent: it is what was signed."""

    encoded_resource: str
    signature: bytes
    expiry: int
    policy: str | None = None

    @property
    def resource(self) -> str:
        """``sr`` URL-decoded, e.g. ``myhub.example/devices/d1``."""
        return unquote(self.encoded_resource)

    @property
    def string_to_sign(self) -> bytes:
        # IoT Hub: HMAC-SHA256 over "{url-encoded resource URI}\n{expiry}".
        return f"{self.encoded_resource}\n{self.expiry}".encode()


def sas_resource(host: str, identity: Identity) -> str:
    """The resource URI IoT Hub expects in ``sr``: ``{host}/devices/{d}[/modules/{m}]``."""
    resource = f"{host}/devices/{identity.device_id}"
    if identity.module_id:
        resource += f"/modules/{identity.module_id}"
    return resource


def compute_signature(encoded_resource: str, expiry: int, key: bytes) -> bytes:
    """Raw HMAC-SHA256 signature of a token for ``key`` (the base64-decoded symmetric key)."""
    message = f"{encoded_resource}\n{expiry}".encode()
    return hmac.new(key, message, hashlib.sha256).digest()


def make_sas_token(resource: str, key_b64: str, expiry: int, policy: str | None = None) -> str:
    """Build a token as the Azure IoT SDKs do: ``sr`` and ``sig`` URL-encoded with no safe characters.

    Raises ValueError when ``key_b64`` is not base64.
    """
    key = base64.b64decode(key_b64, validate=True)
    encoded_resource = quote(resource, safe="")
    signature = base64.b64encode(compute_signature(encoded_resource, expiry, key)).decode("ascii")
    token = f"{SAS_PREFIX} sr={encoded_resource}&sig={quote(signature, safe='')}&se={expiry}"
    if policy is not None:
        token += f"&skn={quote(policy, safe='')}"
    return token


def parse_sas_token(text: str) -> SasToken:
    """Parse ``SharedAccessSignature sr=…&sig=…&se=…[&skn=…]`` (fields in any order).

    Raises AuthError with a reason fit for a log line (never quoting the signature).
    """
    prefix, _, body = text.strip().partition(" ")
    if prefix != SAS_PREFIX:
        raise AuthError(f"not a shared access signature (must start with '{SAS_PREFIX} ')")
    fields = _split_fields(body.strip())
    missing = [name for name in _REQUIRED if name not in fields]
    if missing:
        raise AuthError(f"shared access signature lacks field(s) {', '.join(missing)}")
    encoded_resource = fields["sr"]
    if not encoded_resource:
        raise AuthError("shared access signature has an empty sr")
    return SasToken(
        encoded_resource=encoded_resource,
        signature=_decode_signature(fields["sig"]),
        expiry=_decode_expiry(fields["se"]),
        policy=unquote(fields["skn"]) if "skn" in fields else None,
    )


def signature_matches(token: SasToken, key: bytes) -> bool:
    """True when ``token`` was signed with ``key``; constant-time comparison."""
    expected = hmac.new(key, token.string_to_sign, hashlib.sha256).digest()
    return hmac.compare_digest(expected, token.signature)


def check_not_expired(token: SasToken, now: float) -> None:
    """Raise AuthError when the token's expiry (``se``) is at or before ``now`` (Unix seconds)."""
    if token.expiry <= now:
        raise AuthError(f"token expired at {token.expiry} (now {int(now)})")


def check_resource(token: SasToken, identity: Identity, host_names: Iterable[str]) -> None:
    """Raise AuthError unless ``sr`` names ``identity`` on one of ``host_names``.

    ``sr`` is compared URL-decoded and case-insensitively, with a trailing slash
    tolerated: some SDKs lowercase the resource URI before signing. A device token
    (``{host}/devices/{d}``) never authenticates a module, nor the reverse.
    """
    resource = token.resource
    parts = resource.rstrip("/").split("/")
    expected = ["devices", identity.device_id]
    if identity.module_id:
        expected += ["modules", identity.module_id]
    if len(parts) != len(expected) + 1 or [p.casefold() for p in parts[1:]] != [
        e.casefold() for e in expected
    ]:
        raise AuthError(
            f"token resource '{_printable(resource, 200)}' does not name {_printable(identity.id)}"
        )
    hosts = {h.casefold() for h in host_names}
    if parts[0].casefold() not in hosts:
        raise AuthError(f"token resource host '{_printable(parts[0])}' is not one of this hub's host names")


def _split_fields(body: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for item in body.split("&"):
        if not item.strip():
            continue  # tolerate "&&" and a trailing "&"
        name, sep, value = item.partition("=")
        key = name.strip().lower()
        if not sep:
            raise AuthError(f"shared access signature field '{_printable(name)}' has no '='")
        if key not in _FIELDS:
            raise AuthError(f"shared access signature has unknown field '{_printable(name)}'")
        if key in fields:
            raise AuthError(f"shared access signature repeats field {key}")
        fields[key] = value.strip()
    return fields


def _decode_signature(value: str) -> bytes:
    try:
        signature = base64.b64decode(unquote(value), validate=True)
    except (binascii.Error, ValueError):
        raise AuthError("shared access signature sig is not base64") from None
    if len(signature) != _SIGNATURE_BYTES:
        raise AuthError("shared access signature sig is not an HMAC-SHA256 digest")
    return signature


def _decode_expiry(value: str) -> int:
    if not value.isascii() or not value.isdigit():
        raise AuthError(f"shared access signature se '{_printable(value)}' is not Unix seconds")
    if len(value) > _MAX_EXPIRY_DIGITS:
        raise AuthError("shared access signature se is out of range")
    return int(value)


def _printable(text: str, limit: int = 40) -> str:
    """A short, log-safe rendering of untrusted input."""
    shown = text[:limit].encode("unicode_escape").decode("ascii")
    return shown if len(text) <= limit else shown + "…"
