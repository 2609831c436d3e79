"""Test certificates: a CA, intermediates and device client certificates written as PEM files.

For X.509 authentication and TLS tests only; nothing here is used by the running hub.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgehub.certificates import key_usage


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    """A CA (root or intermediate) able to sign further certificates."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_file: Path
    key_file: Path


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    """A client certificate; ``chain_file`` holds it followed by any intermediates."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_file: Path
    key_file: Path
    chain_file: Path
    chain: tuple[x509.Certificate, ...]

    @property
    def sha256_thumbprint(self) -> str:
        return hashlib.sha256(self.certificate.public_bytes(serialization.Encoding.DER)).hexdigest().upper()

    @property
    def sha1_thumbprint(self) -> str:
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        return hashlib.sha1(der, usedforsecurity=False).hexdigest().upper()


def make_ca(
    folder: Path,
    name: str = "edgehub test CA",
    *,
    issuer: CertificateAuthority | None = None,
    now: datetime | None = None,
    days: int = 365,
) -> CertificateAuthority:
    """A self-signed root CA, or an intermediate signed by ``issuer``; PEM files named after ``name``."""
    at = now if now is not None else datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        _builder(subject, key, issuer, at, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(key_usage(cert_sign=True), critical=True)
    )
    certificate = builder.sign(issuer.key if issuer else key, hashes.SHA256())
    stem = _file_stem(name)
    cert_file, key_file = folder / f"{stem}.pem", folder / f"{stem}.key"
    _write(cert_file, key_file, certificate, key)
    return CertificateAuthority(certificate, key, cert_file, key_file)


def make_client_certificate(
    folder: Path,
    common_name: str,
    issuer: CertificateAuthority | None = None,
    *,
    intermediates: tuple[CertificateAuthority, ...] = (),
    now: datetime | None = None,
    days: int = 30,
    not_before: datetime | None = None,
) -> ClientCertificate:
    """A client certificate with subject CN ``common_name`` (e.g. a device id), signed by
    ``issuer`` or self-signed when ``issuer`` is None (for thumbprint auth).
    ``intermediates`` (nearest first) are appended to ``chain_file``."""
    at = now if now is not None else datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        _builder(subject, key, issuer, not_before or at, days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    certificate = builder.sign(issuer.key if issuer else key, hashes.SHA256())
    stem = _file_stem(common_name)
    cert_file, key_file = folder / f"{stem}.pem", folder / f"{stem}.key"
    _write(cert_file, key_file, certificate, key)
    chain = (certificate, *(ca.certificate for ca in intermediates))
    chain_file = folder / f"{stem}-chain.pem"
    chain_file.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain))
    return ClientCertificate(certificate, key, cert_file, key_file, chain_file, chain)


def _builder(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: CertificateAuthority | None,
    at: datetime,
    days: int,
) -> x509.CertificateBuilder:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(at - timedelta(minutes=5))
        .not_valid_after(at + timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False
        )
    return builder



def _write(
    cert_file: Path, key_file: Path, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> None:
    cert_file.parent.mkdir(parents=True, exist_ok=True)
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_file.chmod(0o600)


def _file_stem(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
