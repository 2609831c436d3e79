"""TLS for every server port: the server context, certificate file checks, and the dev CA.

Synchronous and loop-free (the hub calls it at start-up); it never decides who a client is
(edgehub.auth does, from ``client_certificate_chain``).
"""

from __future__ import annotations

import _ssl
import ipaddress
import logging
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgehub.errors import ConfigError

log = logging.getLogger(__name__)

DEV_CA_FILE: Final = "dev-ca.pem"
DEV_CA_KEY_FILE: Final = "dev-ca.key"
DEV_SERVER_CERT_FILE: Final = "dev-server.pem"
DEV_SERVER_KEY_FILE: Final = "dev-server.key"
DEV_VALIDITY: Final = timedelta(days=90)
# The CA outlives several server certificates, so clients that trust dev-ca.pem keep
# working across server renewals (a renewed server certificate reuses a valid CA).
DEV_CA_VALIDITY: Final = timedelta(days=365)
DEV_RENEW_BEFORE: Final = timedelta(days=14)
# Backdate notBefore a little so a client whose clock runs slightly behind accepts the cert.
_BACKDATE: Final = timedelta(minutes=5)
_LOOPBACK_NAME: Final = "localhost"
_LOOPBACK_IP: Final = ipaddress.ip_address("127.0.0.1")
_KEY_MODE: Final = 0o600
_CERT_MODE: Final = 0o644

_IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_Pair = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


@dataclass(frozen=True, slots=True)
class DevCertificates:
    """Paths of the dev CA and server certificate, and when they expire.

    ``cert_file`` holds the chain (server, then CA), ready for ``server_ssl_context``;
    clients trust ``ca_file``.
    """

    ca_file: Path
    ca_key_file: Path
    cert_file: Path
    key_file: Path
    expires_at: datetime
    ca_expires_at: datetime


@dataclass(frozen=True, slots=True)
class _SubjectNames:
    dns: frozenset[str]
    ips: frozenset[_IpAddress]

    @classmethod
    def requested(cls, hostnames: Sequence[str]) -> _SubjectNames:
        dns = {_LOOPBACK_NAME}
        ips: set[_IpAddress] = {_LOOPBACK_IP}
        for name in hostnames:
            try:
                ips.add(ipaddress.ip_address(name))
            except ValueError:
                if name:
                    dns.add(name.lower())
        return cls(frozenset(dns), frozenset(ips))

    @classmethod
    def of(cls, certificate: x509.Certificate) -> _SubjectNames:
        try:
            san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return cls(frozenset(), frozenset())
        dns = frozenset(n.lower() for n in san.get_values_for_type(x509.DNSName))
        ips = frozenset(
            ip
            for ip in san.get_values_for_type(x509.IPAddress)
            if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address)
        )
        return cls(dns, ips)


def ensure_dev_certificates(
    folder: Path, hostnames: Sequence[str], now: datetime | None = None
) -> DevCertificates:
    """Create or reuse the dev CA and server certificate in ``folder`` (used when no
    ``ServerCertificateFile`` is configured, docs/architecture.md §4).

    The CA (EC P-256, ``DEV_CA_VALIDITY``) is kept while valid for more than
    ``DEV_RENEW_BEFORE``. The server certificate (EC P-256, ``DEV_VALIDITY``; SAN: every
    hostname, ``localhost``, 127.0.0.1) is regenerated when missing, not issued by the
    current CA, within ``DEV_RENEW_BEFORE`` of expiry, or when the requested names
    changed. Keys are written with mode 0600. Every call logs a warning: dev
    certificates are not for production.
    """
    at = now if now is not None else datetime.now(UTC)
    folder.mkdir(parents=True, exist_ok=True)
    ca_file, ca_key_file = folder / DEV_CA_FILE, folder / DEV_CA_KEY_FILE
    cert_file, key_file = folder / DEV_SERVER_CERT_FILE, folder / DEV_SERVER_KEY_FILE
    names = _SubjectNames.requested(hostnames)
    ca = _reusable_ca(ca_file, ca_key_file, at)
    server = _reusable_server(cert_file, key_file, ca, names, at) if ca is not None else None
    if ca is None:
        ca = _create_ca(at)
        _write_key(ca_key_file, ca[1])
        _write_file(ca_file, _pem(ca[0]), _CERT_MODE)
        log.info("dev CA created: %s, expires %s", ca_file, ca[0].not_valid_after_utc.isoformat())
    if server is None:
        server = _create_server(ca, names, at)
        _write_key(key_file, server[1])
        _write_file(cert_file, _pem(server[0]) + _pem(ca[0]), _CERT_MODE)
        log.info(
            "dev server certificate created: %s for %s",
            cert_file,
            ", ".join(sorted(names.dns) + sorted(str(ip) for ip in names.ips)),
        )
    expires_at = server[0].not_valid_after_utc
    log.warning(
        "dev certificate, not for production, expires %s (%s, clients trust %s); "
        "set ServerCertificateFile and ServerPrivateKeyFile for production",
        expires_at.isoformat(),
        cert_file,
        ca_file,
    )
    return DevCertificates(
        ca_file, ca_key_file, cert_file, key_file, expires_at, ca_expires_at=ca[0].not_valid_after_utc
    )


def server_ssl_context(
    cert_file: Path,
    key_file: Path,
    trust_bundle_file: Path | None,
    require_client_cert: bool = False,
    *,
    extra_client_ca_files: Sequence[Path] = (),
) -> ssl.SSLContext:
    """A TLS 1.2+ server context presenting ``cert_file`` (chain) and ``key_file``.

    When a trust bundle (or ``extra_client_ca_files``, e.g. the identities' x509CaFile)
    is given, client certificates are requested and verified against it: optional
    unless ``require_client_cert``. OpenSSL verifies any certificate a client sends, so
    a client certificate that does not chain to these CAs fails the handshake even
    when optional (Python's ssl has no verify callback): a self-signed (thumbprint)
    device certificate passes only when that certificate itself is listed, since every
    listed certificate is a trust anchor. Raises ConfigError when client certificates
    are required but no CA is given.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=cert_file, keyfile=key_file)
    ca_files = ([trust_bundle_file] if trust_bundle_file is not None else []) + list(extra_client_ca_files)
    if not ca_files:
        if require_client_cert:
            raise ConfigError(
                [("TrustBundleFile", "client certificates are required but no trust bundle is configured")]
            )
        context.verify_mode = ssl.CERT_NONE
        return context
    for ca_file in ca_files:
        context.load_verify_locations(cafile=ca_file)
    # Any listed certificate is a trust anchor, also an intermediate CA (IoT Hub accepts
    # an intermediate as the verified CA of a device; OpenSSL wants a root otherwise).
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return context


def check_certificate_files(cert_file: Path, key_file: Path, now: datetime | None = None) -> list[str]:
    """Problems with a configured certificate chain and key, one line each (empty: usable).

    Checks: both readable, the chain is PEM, the key is an unencrypted PEM private key,
    the key matches the first (server) certificate, that certificate is valid now.
    """
    at = now if now is not None else datetime.now(UTC)
    problems: list[str] = []
    certificate = _check_cert_file(cert_file, problems)
    key = _check_key_file(key_file, problems)
    if certificate is None:
        return problems
    if key is not None and _public_der(key.public_key()) != _public_der(certificate.public_key()):
        problems.append(f"{key_file}: private key does not match the certificate in {cert_file}")
    if at > certificate.not_valid_after_utc:
        problems.append(f"{cert_file}: certificate expired on {certificate.not_valid_after_utc.isoformat()}")
    elif at < certificate.not_valid_before_utc:
        problems.append(
            f"{cert_file}: certificate is not valid before {certificate.not_valid_before_utc.isoformat()}"
        )
    return problems


def client_certificate_chain(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> list[x509.Certificate]:
    """The certificates the client sent, leaf first; empty when it sent none.

    Python 3.13 has ``get_unverified_chain()``; on 3.10-3.12 the same method exists on
    the private ``_sslobj``. Without either, only the leaf is available.
    """
    chain = _unverified_chain(ssl_object)
    if not chain:
        leaf = ssl_object.getpeercert(binary_form=True)
        chain = [leaf] if leaf else []
    return [x509.load_der_x509_certificate(der) for der in chain]


def _unverified_chain(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> list[bytes]:
    getter: Any = getattr(ssl_object, "get_unverified_chain", None)
    if getter is None:
        getter = getattr(getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None)
    if getter is None:
        return []
    chain: list[Any] = getter() or []
    # 3.13 returns DER bytes; the private 3.10-3.12 method returns _ssl.Certificate
    # objects, and on the server side a None in place of an absent client certificate.
    return [
        item if isinstance(item, bytes) else item.public_bytes(_ssl.ENCODING_DER)
        for item in chain
        if item is not None
    ]


def _reusable_ca(ca_file: Path, ca_key_file: Path, at: datetime) -> _Pair | None:
    pair = _load_pair(ca_file, ca_key_file)
    if pair is None:
        return None
    certificate, _ = pair
    if not _fresh(certificate, at):
        log.info("dev CA %s expires %s: renewing", ca_file, certificate.not_valid_after_utc.isoformat())
        return None
    return pair


def _reusable_server(
    cert_file: Path, key_file: Path, ca: _Pair, names: _SubjectNames, at: datetime
) -> _Pair | None:
    pair = _load_pair(cert_file, key_file)
    if pair is None:
        return None
    certificate, _ = pair
    reason = None
    if certificate.issuer != ca[0].subject or not _issued_by(certificate, ca[0]):
        reason = "not issued by the current dev CA"
    elif not _fresh(certificate, at):
        reason = f"expires {certificate.not_valid_after_utc.isoformat()}"
    elif _SubjectNames.of(certificate) != names:
        reason = "host names changed"
    if reason is not None:
        log.info("dev server certificate %s %s: renewing", cert_file, reason)
        return None
    return pair


def _fresh(certificate: x509.Certificate, at: datetime) -> bool:
    """Valid now and for longer than DEV_RENEW_BEFORE."""
    return certificate.not_valid_before_utc <= at and certificate.not_valid_after_utc - at > DEV_RENEW_BEFORE


def _load_pair(cert_file: Path, key_file: Path) -> _Pair | None:
    """The certificate (first in file) and its EC key, or None when either is missing,
    unreadable or they do not match."""
    try:
        certificate = x509.load_pem_x509_certificates(cert_file.read_bytes())[0]
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    if _public_der(key.public_key()) != _public_der(certificate.public_key()):
        return None
    _tighten_key_mode(key_file)
    return certificate, key


def _issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _create_ca(at: datetime) -> _Pair:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"edgehub dev CA {at:%Y-%m-%d}")])
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(at - _BACKDATE)
        .not_valid_after(at + DEV_CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return certificate, key


def _create_server(ca: _Pair, names: _SubjectNames, at: datetime) -> _Pair:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    common_name = min(names.dns - {_LOOPBACK_NAME}, default=_LOOPBACK_NAME)
    san: list[x509.GeneralName] = [x509.DNSName(n) for n in sorted(names.dns)]
    san += [x509.IPAddress(ip) for ip in sorted(names.ips, key=str)]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(at - _BACKDATE)
        # A certificate must not outlive its issuer.
        .not_valid_after(min(at + DEV_VALIDITY, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return certificate, key


def key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    """Key usage of a CA (``cert_sign``) or an end-entity certificate (signatures only)."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _check_cert_file(cert_file: Path, problems: list[str]) -> x509.Certificate | None:
    try:
        data = cert_file.read_bytes()
    except OSError as exc:
        problems.append(f"{cert_file}: cannot read certificate file ({exc.strerror})")
        return None
    try:
        return x509.load_pem_x509_certificates(data)[0]
    except ValueError:
        problems.append(f"{cert_file}: not a PEM certificate file")
        return None


def _check_key_file(key_file: Path, problems: list[str]) -> PrivateKeyTypes | None:
    try:
        data = key_file.read_bytes()
    except OSError as exc:
        problems.append(f"{key_file}: cannot read private key file ({exc.strerror})")
        return None
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        problems.append(f"{key_file}: private key is encrypted; the hub needs an unencrypted key")
    except (ValueError, UnsupportedAlgorithm):
        problems.append(f"{key_file}: not a PEM private key")
    return None


def _public_der(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_file(path, pem, _KEY_MODE)


def _write_file(path: Path, data: bytes, mode: int) -> None:
    """Write atomically (temp file, then rename) so a crash never leaves half a PEM."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.unlink(missing_ok=True)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _tighten_key_mode(key_file: Path) -> None:
    mode = key_file.stat().st_mode & 0o777
    if mode & ~_KEY_MODE:
        log.warning("private key %s had mode %o; setting %o", key_file, mode, _KEY_MODE)
        os.chmod(key_file, _KEY_MODE)
