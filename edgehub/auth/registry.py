"""The identity registry: who may connect, checked by SAS token or X.509 client certificate.

Immutable once built (a config reload builds a new one); reads only the configured CA files.

Which credentials an identity accepts follows its ``identities`` entry (docs/architecture.md §4):

- ``primaryKey`` / ``secondaryKey``: SAS tokens signed with either key;
- ``x509Thumbprint``: a client certificate whose SHA-256 or SHA-1 fingerprint
  (hex, case-insensitive, ``:`` separators ignored) is this one, as IoT Hub;
- ``x509CaFile``: a client certificate chaining to a CA in that file or in
  ``TrustBundleFile``, within its validity, whose subject CN is the device id;
- no credential at all: like an IoT Hub "X.509 CA signed" device, a certificate
  chaining to ``TrustBundleFile`` (which must then be configured).

CN rule for modules: edgeHub refuses X.509 for modules altogether; IoT Hub checks
the CN against the device id. We accept CA-signed module certificates only with
CN ``{deviceId}/{moduleId}``, so that a device's certificate (CN ``{deviceId}``)
never authenticates any module of that device. Thumbprint auth works for modules.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

from edgehub.auth import sas
from edgehub.auth.identities import IdentitySpec
from edgehub.errors import AuthError, ConfigError
from edgehub.message import Identity

if TYPE_CHECKING:  # cryptography is imported where certificates are read (about 8 MiB)
    from cryptography import x509

    _Certificates = tuple[x509.Certificate, ...]

log = logging.getLogger(__name__)

_THUMBPRINT_SHA1_HEX: Final = 40
_THUMBPRINT_SHA256_HEX: Final = 64
_HEX_DIGITS: Final = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class AuthResult:
    """A successful authentication. ``expires_at`` (Unix seconds) is when the credential
    stops being valid (token ``se``, certificate notAfter): a head closes or re-checks a
    long session then."""

    identity: Identity
    expires_at: float | None
    method: Literal["sas", "x509"]


@dataclass(frozen=True, slots=True)
class _Entry:
    """An identity with its credentials decoded once, at registry build time."""

    identity: Identity
    keys: tuple[bytes, ...]
    thumbprint: str | None
    ca_anchors: _Certificates


class IdentityRegistry:
    """The identities the hub accepts, from the ``identities`` config list.

    Raises ConfigError (one problem per bad entry) when built from invalid specs, so a
    config reload can refuse a bad file and keep the old registry.
    """

    def __init__(
        self,
        specs: Sequence[IdentitySpec],
        host_names: Sequence[str],
        trust_bundle: Path | None = None,
    ) -> None:
        problems: list[tuple[str, str]] = []
        pems: dict[Path, _Certificates] = {}
        bundle: _Certificates = ()
        if trust_bundle is not None:
            try:
                bundle = _load_ca_file(trust_bundle, pems)
            except ValueError as exc:
                problems.append(("TrustBundleFile", str(exc)))
        self._host_names: tuple[str, ...] = tuple(host_names)
        self._entries: dict[Identity, _Entry] = {}
        for index, spec in enumerate(specs):
            where = f"identities[{index}] ({spec.identity})"
            try:
                entry = _decode_spec(spec, bundle, trust_bundle is not None, pems)
            except ValueError as exc:
                problems.append((where, str(exc)))
                continue
            if entry.identity in self._entries:
                problems.append((where, "duplicate identity"))
                continue
            self._entries[entry.identity] = entry
        if problems:
            raise ConfigError(problems)
        log.info("identity registry built: %d identities, hosts %s", len(self._entries), self._host_names)

    def __contains__(self, identity: object) -> bool:
        return identity in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def identities(self) -> frozenset[Identity]:
        return frozenset(self._entries)

    @property
    def host_names(self) -> tuple[str, ...]:
        return self._host_names

    def signing_key(self, identity: Identity) -> str | None:
        """The primary symmetric key of ``identity`` (base64), to sign its tokens upstream; None
        for an unknown identity or one without keys (certificate auth only)."""
        entry = self._entries.get(identity)
        if entry is None or not entry.keys:
            return None
        return base64.b64encode(entry.keys[0]).decode("ascii")

    def authenticate_sas(self, identity: Identity, token: str, now: float) -> AuthResult:
        """Check a SAS token presented as ``identity`` at ``now`` (Unix seconds).

        Order: token syntax, resource (``sr`` names this identity on one of our host
        names), signature (primary key, then secondary), expiry, so an "expired"
        reason is only ever given for a genuinely signed token.
        """
        entry = self._entry(identity)
        if not entry.keys:
            raise AuthError(f"{identity} has no symmetric key: SAS authentication is not enabled for it")
        parsed = sas.parse_sas_token(token)
        sas.check_resource(parsed, identity, self._host_names)
        if not any(sas.signature_matches(parsed, key) for key in entry.keys):
            raise AuthError(f"token signature for {identity} matches neither its primary nor secondary key")
        sas.check_not_expired(parsed, now)
        return AuthResult(identity, float(parsed.expiry), "sas")

    def authenticate_x509(
        self, identity: Identity, chain: Sequence[x509.Certificate] | Sequence[bytes], now: float
    ) -> AuthResult:
        """Check a client certificate chain (leaf first; objects or DER) presented as ``identity``.

        ``expires_at`` is the leaf's notAfter. Thumbprint is tried first, then CA chaining.
        """
        entry = self._entry(identity)
        if entry.thumbprint is None and not entry.ca_anchors:
            raise AuthError(f"X.509 authentication is not enabled for {identity}")
        certificates = _as_certificates(chain)
        leaf = certificates[0]
        at = datetime.fromtimestamp(now, UTC)
        if not leaf.not_valid_before_utc <= at <= leaf.not_valid_after_utc:
            raise AuthError(
                f"client certificate for {identity} is not valid now "
                f"(valid {leaf.not_valid_before_utc.isoformat()} to {leaf.not_valid_after_utc.isoformat()})"
            )
        expires_at = leaf.not_valid_after_utc.timestamp()
        if entry.thumbprint is not None and _thumbprint_matches(leaf, entry.thumbprint):
            return AuthResult(identity, expires_at, "x509")
        if not entry.ca_anchors:
            raise AuthError(f"client certificate thumbprint does not match {identity}")
        _check_common_name(leaf, identity)
        _check_chain(leaf, certificates[1:], entry.ca_anchors, at, identity)
        return AuthResult(identity, expires_at, "x509")

    def _entry(self, identity: Identity) -> _Entry:
        entry = self._entries.get(identity)
        if entry is None:
            raise AuthError(f"unknown identity {_shown(identity)}")
        return entry


def _shown(value: Identity | str) -> str:
    """Client-supplied text (an id, a certificate name) for a log line, control characters escaped."""
    return str(value).encode("unicode_escape").decode("ascii")


def _decode_spec(
    spec: IdentitySpec,
    bundle: _Certificates,
    has_bundle: bool,
    pems: dict[Path, _Certificates],
) -> _Entry:
    if not spec.device_id or spec.module_id == "":
        raise ValueError("deviceId and moduleId must not be empty")
    keys = tuple(
        _decode_key(name, value)
        for name, value in (("primaryKey", spec.primary_key), ("secondaryKey", spec.secondary_key))
        if value is not None
    )
    thumbprint = _normalize_thumbprint(spec.x509_thumbprint) if spec.x509_thumbprint is not None else None
    anchors: _Certificates = ()
    if spec.x509_ca_file is not None:
        anchors = _load_ca_file(Path(spec.x509_ca_file), pems) + bundle
    elif not keys and thumbprint is None:
        # No credential of its own: an IoT Hub "X.509 CA signed" identity, trusted via the bundle.
        if not has_bundle:
            raise ValueError(
                "no primaryKey, x509Thumbprint or x509CaFile, and no TrustBundleFile for CA authentication"
            )
        anchors = bundle
    return _Entry(spec.identity, keys, thumbprint, anchors)


def _decode_key(name: str, value: str) -> bytes:
    try:
        key = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{name} is not base64") from None
    if not key:
        raise ValueError(f"{name} is empty")
    return key


def _normalize_thumbprint(value: str) -> str:
    text = "".join(value.split()).replace(":", "").lower()
    if len(text) not in (_THUMBPRINT_SHA1_HEX, _THUMBPRINT_SHA256_HEX) or not set(text) <= _HEX_DIGITS:
        raise ValueError("x509Thumbprint must be a SHA-1 (40) or SHA-256 (64) hex fingerprint")
    return text


def _load_ca_file(path: Path, cache: dict[Path, _Certificates]) -> _Certificates:
    if path in cache:
        return cache[path]
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read CA file {path}: {exc.strerror}") from None
    from cryptography import x509

    try:
        certificates = tuple(x509.load_pem_x509_certificates(data))
    except ValueError:
        raise ValueError(f"CA file {path} holds no PEM certificate") from None
    cache[path] = certificates
    return certificates


def _as_certificates(chain: Sequence[x509.Certificate] | Sequence[bytes]) -> list[x509.Certificate]:
    from cryptography import x509

    if not chain:
        raise AuthError("no client certificate presented")
    certificates: list[x509.Certificate] = []
    for item in chain:
        if isinstance(item, x509.Certificate):
            certificates.append(item)
            continue
        try:
            certificates.append(x509.load_der_x509_certificate(item))
        except ValueError:
            raise AuthError("client certificate chain holds a certificate that is not valid DER") from None
    return certificates


def _thumbprint_matches(leaf: x509.Certificate, expected: str) -> bool:
    from cryptography.hazmat.primitives.serialization import Encoding

    algorithm = hashlib.sha1 if len(expected) == _THUMBPRINT_SHA1_HEX else hashlib.sha256
    return hmac.compare_digest(algorithm(leaf.public_bytes(Encoding.DER)).hexdigest(), expected)


def _check_common_name(leaf: x509.Certificate, identity: Identity) -> None:
    from cryptography.x509.oid import NameOID

    names = [a.value for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if names != [identity.id]:
        shown = ", ".join(_shown(str(n)) for n in names) or "none"
        raise AuthError(f"client certificate CN ({shown}) is not {identity.id}")


def _check_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    at: datetime,
    identity: Identity,
) -> None:
    from cryptography import x509
    from cryptography.x509 import verification

    if _is_ca(leaf):
        raise AuthError(f"client certificate for {identity} is a CA certificate")
    # Device certificates rarely carry SANs or web-PKI extensions, so extensions are
    # not policed beyond basicConstraints on every issuer (the verifier then insists
    # on cA, RFC 5280 §4.2.1.9); signatures, validity and path building are checked in full.
    ca_policy = verification.ExtensionPolicy.permit_all().require_present(
        x509.BasicConstraints, verification.Criticality.AGNOSTIC, None
    )
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store(list(anchors)))
        .time(at)
        .extension_policies(ca_policy=ca_policy, ee_policy=verification.ExtensionPolicy.permit_all())
        .build_client_verifier()
    )
    try:
        verifier.verify(leaf, list(intermediates))
    except verification.VerificationError as exc:
        raise AuthError(
            f"client certificate for {identity} does not chain to a trusted CA: {_shown(str(exc))}"
        ) from None


def _is_ca(certificate: x509.Certificate) -> bool:
    from cryptography import x509

    try:
        return certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False
