"""X.509 with cryptography: issuing the dev CA and server certificate, checking configured
certificate files, parsing a client's certificate chain.

Imported only when one of those must be done (cryptography costs about 8 MiB of memory):
edgehub.tls reuses existing dev certificates with the standard library alone. No sockets.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
    PublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Issued:
    """A new certificate and its private key, as PEM, and when the certificate expires."""

    certificate_pem: bytes
    key_pem: bytes
    not_after: datetime


def issue_ca(at: datetime, backdate: timedelta, validity: timedelta) -> Issued:
    """A self-signed EC P-256 CA (path length 0) valid from ``at - backdate`` for ``validity``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"edgehub dev CA {at:%Y-%m-%d}")])
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(at - backdate)
        .not_valid_after(at + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(_pem(certificate), _key_pem(key), certificate.not_valid_after_utc)


def issue_server(ca_pem: bytes, ca_key_pem: bytes, dns: Iterable[str], ips: Iterable[IpAddress],
                 common_name: str, at: datetime, backdate: timedelta, validity: timedelta) -> Issued:
    """An EC P-256 server certificate (serverAuth; SAN: ``dns`` and ``ips``) issued by the CA,
    never outliving it. ValueError when the CA key cannot sign."""
    ca_cert = x509.load_pem_x509_certificates(ca_pem)[0]
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the dev CA key is not an EC key")
    signer: CertificateIssuerPrivateKeyTypes = ca_key
    key = ec.generate_private_key(ec.SECP256R1())
    san: list[x509.GeneralName] = [x509.DNSName(n) for n in sorted(dns)]
    san += [x509.IPAddress(ip) for ip in sorted(ips, key=str)]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(at - backdate)
        # A certificate must not outlive its issuer.
        .not_valid_after(min(at + validity, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(signer, hashes.SHA256())
    )
    return Issued(_pem(certificate) + _pem(ca_cert), _key_pem(key), certificate.not_valid_after_utc)


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


def check_certificate_files(cert_file: str, cert_data: bytes | None, key_file: str, key_data: bytes | None,
                            at: datetime) -> list[str]:
    """Problems with a certificate chain and key already read (None: unreadable, reported by the
    caller); checks as edgehub.tls.check_certificate_files documents."""
    problems: list[str] = []
    certificate = _parse_certificate(cert_file, cert_data, problems) if cert_data is not None else None
    key = _parse_key(key_file, key_data, problems) if key_data is not None else None
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


def decode_certificate_file(path: str) -> dict[str, object]:
    """The first certificate of a PEM file as ``ssl.SSLSocket.getpeercert()`` shows one (``notBefore``,
    ``notAfter``, ``subjectAltName``): what edgehub.tls reads when CPython's own decoder is missing."""
    with open(path, "rb") as file:
        certificate = x509.load_pem_x509_certificates(file.read())[0]
    names: list[tuple[str, str]] = []
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = x509.SubjectAlternativeName([])
    names += [("DNS", name) for name in san.get_values_for_type(x509.DNSName)]
    names += [("IP Address", str(ip)) for ip in san.get_values_for_type(x509.IPAddress)]
    when = "%b %d %H:%M:%S %Y GMT"
    return {"notBefore": certificate.not_valid_before_utc.strftime(when),
            "notAfter": certificate.not_valid_after_utc.strftime(when), "subjectAltName": tuple(names)}


def load_der_chain(chain: Sequence[bytes]) -> list[x509.Certificate]:
    """DER certificates (a TLS peer's chain) as certificate objects, in order."""
    return [x509.load_der_x509_certificate(der) for der in chain]


def _parse_certificate(cert_file: str, data: bytes, problems: list[str]) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificates(data)[0]
    except ValueError:
        problems.append(f"{cert_file}: not a PEM certificate file")
        return None


def _parse_key(key_file: str, data: bytes, problems: list[str]) -> PrivateKeyTypes | None:
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        problems.append(f"{key_file}: private key is encrypted; the hub needs an unencrypted key")
    except (ValueError, UnsupportedAlgorithm):
        problems.append(f"{key_file}: not a PEM private key")
    return None


def _public_der(public_key: PublicKeyTypes) -> bytes:
    der = serialization.Encoding.DER
    return public_key.public_bytes(der, serialization.PublicFormat.SubjectPublicKeyInfo)


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
