"""TLS for every server port: the server context, certificate file checks, and the dev CA.

Synchronous and loop-free (the hub calls it at start-up); it never decides who a client is
(edgehub.auth does, from ``client_certificate_chain``). Standard library only: existing dev
certificates are reused without cryptography, which edgehub.certificates imports only when a
certificate must be issued or parsed.
"""

from __future__ import annotations

import _ssl
import ipaddress
import logging
import os
import re
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from edgehub.errors import ConfigError

if TYPE_CHECKING:
    from cryptography import x509

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
ISSUE_TIMEOUT_SECS: Final = 120.0
"""How long the child interpreter that issues dev certificates may take (key generation is fast)."""
_LOOPBACK_NAME: Final = "localhost"
_LOOPBACK_IP: Final = ipaddress.ip_address("127.0.0.1")
_KEY_MODE: Final = 0o600
_CERT_MODE: Final = 0o644

_IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_cpython_decoder: Callable[[str], dict[str, Any]] | None = getattr(_ssl, "_test_decode_cert", None)
"""CPython's own PEM-file decoder (what getpeercert() returns): private, so cryptography serves
where it is missing (other interpreters, a future CPython)."""


def _decode_certificate_file(path: str) -> dict[str, Any]:
    if _cpython_decoder is not None:
        return _cpython_decoder(path)
    from edgehub.certificates import decode_certificate_file

    return decode_certificate_file(path)
_PEM_CERTIFICATE: Final = re.compile(rb"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.DOTALL)


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
    def of(cls, decoded: dict[str, Any]) -> _SubjectNames:
        """The names of a certificate as ``_ssl._test_decode_cert`` shows them."""
        dns: set[str] = set()
        ips: set[_IpAddress] = set()
        for kind, value in decoded.get("subjectAltName", ()):
            if kind == "DNS":
                dns.add(value.lower())
            elif kind == "IP Address":
                ips.add(ipaddress.ip_address(value.strip()))
        return cls(frozenset(dns), frozenset(ips))

    @property
    def common_name(self) -> str:
        return min(self.dns - {_LOOPBACK_NAME}, default=_LOOPBACK_NAME)


@dataclass(frozen=True, slots=True)
class _Existing:
    """A dev certificate file found usable: its first certificate (PEM) and validity."""

    pem: bytes
    not_before: datetime
    not_after: datetime


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
    if server is None:
        from edgehub import certificates  # cryptography only when issuing

        issued = None
        if ca is not None:
            try:
                issued = certificates.issue_server(
                    ca.pem, ca_key_file.read_bytes(), names.dns, names.ips, names.common_name, at,
                    _BACKDATE, DEV_VALIDITY,
                )
            except (OSError, ValueError, TypeError):
                log.info("dev CA %s cannot sign: renewing", ca_file)
                ca = None
        if ca is None:
            new_ca = certificates.issue_ca(at, _BACKDATE, DEV_CA_VALIDITY)
            _write_file(ca_key_file, new_ca.key_pem, _KEY_MODE)
            _write_file(ca_file, new_ca.certificate_pem, _CERT_MODE)
            log.info("dev CA created: %s, expires %s", ca_file, new_ca.not_after.isoformat())
            ca = _Existing(new_ca.certificate_pem, at - _BACKDATE, new_ca.not_after)
            issued = certificates.issue_server(
                ca.pem, new_ca.key_pem, names.dns, names.ips, names.common_name, at, _BACKDATE, DEV_VALIDITY
            )
        assert issued is not None
        _write_file(key_file, issued.key_pem, _KEY_MODE)
        _write_file(cert_file, issued.certificate_pem, _CERT_MODE)
        log.info(
            "dev server certificate created: %s for %s",
            cert_file,
            ", ".join(sorted(names.dns) + sorted(str(ip) for ip in names.ips)),
        )
        expires_at = issued.not_after
    else:
        expires_at = server.not_after
    log.warning(
        "dev certificate, not for production, expires %s (%s, clients trust %s); "
        "set ServerCertificateFile and ServerPrivateKeyFile for production",
        expires_at.isoformat(),
        cert_file,
        ca_file,
    )
    assert ca is not None
    return DevCertificates(ca_file, ca_key_file, cert_file, key_file, expires_at, ca_expires_at=ca.not_after)


def dev_certificates(folder: Path, hostnames: Sequence[str]) -> DevCertificates:
    """As ``ensure_dev_certificates``, but what must be issued is issued by a child interpreter
    (``python -m edgehub.tls``), so the hub never loads cryptography (about 10 MiB it would keep
    for its whole life); in-process when the child cannot run."""
    at = datetime.now(UTC)
    names = _SubjectNames.requested(hostnames)
    ca = _reusable_ca(folder / DEV_CA_FILE, folder / DEV_CA_KEY_FILE, at)
    if ca is None or _reusable_server(folder / DEV_SERVER_CERT_FILE, folder / DEV_SERVER_KEY_FILE, ca,
                                      names, at) is None:
        import subprocess
        import sys

        try:
            subprocess.run([sys.executable, "-m", "edgehub.tls", str(folder), *hostnames], check=True,
                           timeout=ISSUE_TIMEOUT_SECS)
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("dev certificates not issued by a child process (%s); issuing them here", exc)
    return ensure_dev_certificates(folder, hostnames)


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
    from edgehub import certificates  # cryptography only when checking

    at = now if now is not None else datetime.now(UTC)
    problems: list[str] = []
    data: list[bytes | None] = []
    for path, what in ((cert_file, "certificate"), (key_file, "private key")):
        try:
            data.append(path.read_bytes())
        except OSError as exc:
            problems.append(f"{path}: cannot read {what} file ({exc.strerror})")
            data.append(None)
    cert_data, key_data = data
    found = certificates.check_certificate_files(str(cert_file), cert_data, str(key_file), key_data, at)
    return problems + found


def client_certificate_chain(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> list[x509.Certificate]:
    """The certificates the client sent, leaf first; empty when it sent none.

    Python 3.13 has ``get_unverified_chain()``; on 3.10-3.12 the same method exists on
    the private ``_sslobj``. Without either, only the leaf is available.
    """
    from edgehub import certificates  # cryptography only for client certificates

    chain = _unverified_chain(ssl_object)
    if not chain:
        leaf = ssl_object.getpeercert(binary_form=True)
        chain = [leaf] if leaf else []
    return certificates.load_der_chain(chain)


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


def _reusable_ca(ca_file: Path, ca_key_file: Path, at: datetime) -> _Existing | None:
    ca = _existing(ca_file, ca_key_file)
    if ca is None:
        return None
    if not _fresh(ca, at):
        log.info("dev CA %s expires %s: renewing", ca_file, ca.not_after.isoformat())
        return None
    return ca


def _reusable_server(
    cert_file: Path, key_file: Path, ca: _Existing, names: _SubjectNames, at: datetime
) -> _Existing | None:
    server = _existing(cert_file, key_file)
    if server is None:
        return None
    reason = None
    chain = [_normal(pem) for pem in _pem_certificates(cert_file.read_bytes())]
    if chain[1:2] != [_normal(ca.pem)]:
        # The chain file holds the server certificate and the CA that issued it, written together.
        reason = "not issued by the current dev CA"
    elif not _fresh(server, at):
        reason = f"expires {server.not_after.isoformat()}"
    elif _SubjectNames.of(_decode_certificate_file(str(cert_file))) != names:
        reason = "host names changed"
    if reason is not None:
        log.info("dev server certificate %s %s: renewing", cert_file, reason)
        return None
    return server


def _fresh(certificate: _Existing, at: datetime) -> bool:
    """Valid now and for longer than DEV_RENEW_BEFORE."""
    return certificate.not_before <= at and certificate.not_after - at > DEV_RENEW_BEFORE


def _existing(cert_file: Path, key_file: Path) -> _Existing | None:
    """The certificate (first in file) with its validity, or None when it or its key is missing,
    unreadable or they do not match (OpenSSL checks the pair as it loads it)."""
    try:
        pems = _pem_certificates(cert_file.read_bytes())
        decoded = _decode_certificate_file(str(cert_file))  # the first certificate, as getpeercert()
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_file, key_file)
    except (OSError, ValueError):  # ssl.SSLError is an OSError
        return None
    if not pems:
        return None
    _tighten_key_mode(key_file)
    return _Existing(pems[0], _utc(decoded["notBefore"]), _utc(decoded["notAfter"]))


def _pem_certificates(data: bytes) -> list[bytes]:
    """The PEM certificates in ``data``, in order."""
    return [match.group(0) for match in _PEM_CERTIFICATE.finditer(data)]


def _normal(pem: bytes) -> bytes:
    return b"".join(pem.split())


_MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _utc(openssl_time: str) -> datetime:
    """``notBefore``/``notAfter`` as ``getpeercert()`` gives them ("May  9 00:00:00 2007 GMT", English
    month names whatever the locale), parsed here: ssl.cert_time_to_seconds loads _strptime and
    calendar (0.15 MiB) for it. ValueError when malformed, as that does."""
    try:
        month, day, clock, year, zone = openssl_time.split()
        hour, minute, second = clock.split(":")
        if zone != "GMT":
            raise ValueError(zone)
        return datetime(int(year), _MONTHS.index(month) + 1, int(day), int(hour), int(minute), int(second),
                        tzinfo=UTC)
    except ValueError as exc:
        raise ValueError(f"time data {openssl_time!r} is not an OpenSSL certificate time") from exc


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


if __name__ == "__main__":  # python -m edgehub.tls FOLDER HOSTNAME...: issue what dev_certificates needs
    import sys

    from edgehub.logs import configure_logging

    configure_logging("info")
    ensure_dev_certificates(Path(sys.argv[1]), sys.argv[2:])
