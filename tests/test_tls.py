"""Tests for edgehub.tls: dev certificates, certificate file checks and real TLS handshakes."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edgehub.auth.identities import IdentitySpec
from edgehub.auth.registry import IdentityRegistry
from edgehub.errors import AuthError, ConfigError
from edgehub.message import Identity
from edgehub.testing.certs import make_ca, make_client_certificate
from edgehub.tls import (
    DEV_CA_VALIDITY,
    DEV_VALIDITY,
    DevCertificates,
    check_certificate_files,
    client_certificate_chain,
    ensure_dev_certificates,
    server_ssl_context,
)

NOW = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
HOSTS = ["edgehub.local", "gateway.example.com"]
TIMEOUT = 10.0

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def load_chain(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def san_of(certificate: x509.Certificate) -> x509.SubjectAlternativeName:
    return certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def test_dev_certificates_are_created_with_a_ca_chain_and_private_keys(tmp_path: Path) -> None:
    dev = ensure_dev_certificates(tmp_path / "certs", HOSTS, now=NOW)

    folder = tmp_path / "certs"
    assert dev == DevCertificates(
        folder / "dev-ca.pem",
        folder / "dev-ca.key",
        folder / "dev-server.pem",
        folder / "dev-server.key",
        expires_at=NOW + DEV_VALIDITY,
        ca_expires_at=NOW + DEV_CA_VALIDITY,
    )
    (ca,) = load_chain(dev.ca_file)
    server, chained_ca = load_chain(dev.cert_file)
    assert chained_ca == ca
    server.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    server_key = serialization.load_pem_private_key(dev.key_file.read_bytes(), password=None)
    assert isinstance(server_key, ec.EllipticCurvePrivateKey)
    assert server_key.curve.name == "secp256r1"
    assert server_key.public_key() == server.public_key()
    ca_key = serialization.load_pem_private_key(dev.ca_key_file.read_bytes(), password=None)
    assert ca_key.public_key() == ca.public_key()


def test_private_keys_are_mode_0600(tmp_path: Path) -> None:
    dev = ensure_dev_certificates(tmp_path, HOSTS, now=NOW)

    assert mode(dev.key_file) == 0o600
    assert mode(dev.ca_key_file) == 0o600


def test_server_certificate_names_every_host_plus_loopback(tmp_path: Path) -> None:
    dev = ensure_dev_certificates(tmp_path, [*HOSTS, "192.168.7.2"], now=NOW)

    san = san_of(load_chain(dev.cert_file)[0])
    assert sorted(san.get_values_for_type(x509.DNSName)) == [
        "edgehub.local",
        "gateway.example.com",
        "localhost",
    ]
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("192.168.7.2"),
    }


def test_existing_valid_certificates_are_reused(tmp_path: Path) -> None:
    first = ensure_dev_certificates(tmp_path, HOSTS, now=NOW)
    files = {p: p.read_bytes() for p in (first.ca_file, first.cert_file, first.key_file, first.ca_key_file)}

    second = ensure_dev_certificates(tmp_path, list(reversed(HOSTS)), now=NOW + timedelta(days=75))

    assert second == first
    assert {p: p.read_bytes() for p in files} == files


def test_server_certificate_is_renewed_within_14_days_of_expiry_and_the_ca_kept(tmp_path: Path) -> None:
    first = ensure_dev_certificates(tmp_path, HOSTS, now=NOW)
    ca_pem = first.ca_file.read_bytes()
    later = NOW + DEV_VALIDITY - timedelta(days=13)

    renewed = ensure_dev_certificates(tmp_path, HOSTS, now=later)

    assert renewed.expires_at == later + DEV_VALIDITY
    assert first.ca_file.read_bytes() == ca_pem
    server, chained_ca = load_chain(renewed.cert_file)
    server.verify_directly_issued_by(chained_ca)
    assert chained_ca == load_chain(first.ca_file)[0]


def test_server_certificate_is_renewed_when_names_change(tmp_path: Path) -> None:
    first = ensure_dev_certificates(tmp_path, HOSTS, now=NOW)
    ca_pem = first.ca_file.read_bytes()
    old_server = first.cert_file.read_bytes()

    renewed = ensure_dev_certificates(tmp_path, ["new.example"], now=NOW + timedelta(days=1))

    assert renewed.cert_file.read_bytes() != old_server
    assert renewed.ca_file.read_bytes() == ca_pem
    assert sorted(san_of(load_chain(renewed.cert_file)[0]).get_values_for_type(x509.DNSName)) == [
        "localhost",
        "new.example",
    ]


def test_ca_near_expiry_is_renewed_with_the_server_certificate(tmp_path: Path) -> None:
    first = ensure_dev_certificates(tmp_path, HOSTS, now=NOW)
    old_ca = load_chain(first.ca_file)[0]
    later = NOW + DEV_CA_VALIDITY - timedelta(days=10)

    renewed = ensure_dev_certificates(tmp_path, HOSTS, now=later)

    new_ca = load_chain(renewed.ca_file)[0]
    assert renewed.ca_expires_at == later + DEV_CA_VALIDITY
    assert new_ca.public_key() != old_ca.public_key()
    server, chained_ca = load_chain(renewed.cert_file)
    assert chained_ca == new_ca
    server.verify_directly_issued_by(new_ca)


def test_server_certificate_never_outlives_its_ca(tmp_path: Path) -> None:
    ensure_dev_certificates(tmp_path, HOSTS, now=NOW)
    later = NOW + DEV_CA_VALIDITY - timedelta(days=20)  # CA has 20 days left: kept

    dev = ensure_dev_certificates(tmp_path, ["renamed.example"], now=later)

    assert dev.ca_expires_at == NOW + DEV_CA_VALIDITY
    assert dev.expires_at == dev.ca_expires_at


def test_damaged_server_key_is_regenerated(tmp_path: Path) -> None:
    first = ensure_dev_certificates(tmp_path, HOSTS, now=NOW)
    first.key_file.write_text("garbage")

    dev = ensure_dev_certificates(tmp_path, HOSTS, now=NOW)

    key = serialization.load_pem_private_key(dev.key_file.read_bytes(), password=None)
    assert key.public_key() == load_chain(dev.cert_file)[0].public_key()


def test_server_certificate_from_a_replaced_ca_is_regenerated(tmp_path: Path) -> None:
    first = ensure_dev_certificates(tmp_path, HOSTS, now=NOW)
    first.ca_key_file.unlink()

    dev = ensure_dev_certificates(tmp_path, HOSTS, now=NOW)

    load_chain(dev.cert_file)[0].verify_directly_issued_by(load_chain(dev.ca_file)[0])


def test_reused_key_with_loose_mode_is_tightened(tmp_path: Path) -> None:
    first = ensure_dev_certificates(tmp_path, HOSTS, now=NOW)
    first.key_file.chmod(0o644)

    ensure_dev_certificates(tmp_path, HOSTS, now=NOW)

    assert mode(first.key_file) == 0o600


def test_every_use_of_dev_certificates_logs_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="edgehub.tls"):
        ensure_dev_certificates(tmp_path, HOSTS, now=NOW)
        ensure_dev_certificates(tmp_path, HOSTS, now=NOW)

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert all("dev certificate, not for production, expires 2026-05-30" in w for w in warnings)


def test_dev_certificate_files_pass_the_settings_check(tmp_path: Path) -> None:
    dev = ensure_dev_certificates(tmp_path, HOSTS, now=NOW)

    assert check_certificate_files(dev.cert_file, dev.key_file, now=NOW) == []


def test_certificate_check_reports_unreadable_files(tmp_path: Path) -> None:
    problems = check_certificate_files(tmp_path / "none.pem", tmp_path / "none.key")

    assert problems == [
        f"{tmp_path / 'none.pem'}: cannot read certificate file (No such file or directory)",
        f"{tmp_path / 'none.key'}: cannot read private key file (No such file or directory)",
    ]


def test_certificate_check_reports_files_that_are_not_pem(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("not a certificate")
    (tmp_path / "k.pem").write_text("not a key")

    assert check_certificate_files(tmp_path / "c.pem", tmp_path / "k.pem") == [
        f"{tmp_path / 'c.pem'}: not a PEM certificate file",
        f"{tmp_path / 'k.pem'}: not a PEM private key",
    ]


def test_certificate_check_reports_a_key_that_does_not_match(tmp_path: Path) -> None:
    dev = ensure_dev_certificates(tmp_path, HOSTS, now=NOW)

    problems = check_certificate_files(dev.cert_file, dev.ca_key_file, now=NOW)

    assert problems == [f"{dev.ca_key_file}: private key does not match the certificate in {dev.cert_file}"]


def test_certificate_check_reports_an_encrypted_key(tmp_path: Path) -> None:
    dev = ensure_dev_certificates(tmp_path, HOSTS, now=NOW)
    key = serialization.load_pem_private_key(dev.key_file.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )

    problems = check_certificate_files(dev.cert_file, encrypted, now=NOW)

    assert problems == [f"{encrypted}: private key is encrypted; the hub needs an unencrypted key"]


def test_certificate_check_reports_expired_and_not_yet_valid(tmp_path: Path) -> None:
    dev = ensure_dev_certificates(tmp_path, HOSTS, now=NOW)

    expired = check_certificate_files(dev.cert_file, dev.key_file, now=NOW + timedelta(days=91))
    early = check_certificate_files(dev.cert_file, dev.key_file, now=NOW - timedelta(days=1))

    assert expired == [f"{dev.cert_file}: certificate expired on {(NOW + DEV_VALIDITY).isoformat()}"]
    assert early == [
        f"{dev.cert_file}: certificate is not valid before {(NOW - timedelta(minutes=5)).isoformat()}"
    ]


def test_server_context_is_tls_1_2_or_newer_without_client_certificates(tmp_path: Path) -> None:
    dev = ensure_dev_certificates(tmp_path, HOSTS)

    context = server_ssl_context(dev.cert_file, dev.key_file, None)

    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_NONE


def test_server_context_requests_optional_client_certificates_with_a_trust_bundle(tmp_path: Path) -> None:
    dev = ensure_dev_certificates(tmp_path, HOSTS)
    ca = make_ca(tmp_path / "clients")

    assert server_ssl_context(dev.cert_file, dev.key_file, ca.cert_file).verify_mode == ssl.CERT_OPTIONAL
    assert (
        server_ssl_context(
            dev.cert_file, dev.key_file, None, extra_client_ca_files=[ca.cert_file]
        ).verify_mode
        == ssl.CERT_OPTIONAL
    )
    assert (
        server_ssl_context(dev.cert_file, dev.key_file, ca.cert_file, True).verify_mode == ssl.CERT_REQUIRED
    )


def test_required_client_certificates_need_a_trust_bundle(tmp_path: Path) -> None:
    dev = ensure_dev_certificates(tmp_path, HOSTS)

    with pytest.raises(ConfigError, match="no trust bundle"):
        server_ssl_context(dev.cert_file, dev.key_file, None, require_client_cert=True)


def test_client_chain_falls_back_to_the_leaf_without_chain_access(tmp_path: Path) -> None:
    device = make_client_certificate(tmp_path, "cam-1")

    class LeafOnly:
        def getpeercert(self, binary_form: bool = False) -> bytes:
            return device.certificate.public_bytes(serialization.Encoding.DER)

    class NoCertificate:
        def getpeercert(self, binary_form: bool = False) -> None:
            return None

    assert client_certificate_chain(cast(ssl.SSLObject, LeafOnly())) == [device.certificate]
    assert client_certificate_chain(cast(ssl.SSLObject, NoCertificate())) == []


@asynccontextmanager
async def tls_server(context: ssl.SSLContext, handler: Handler) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def exchange(port: int, context: ssl.SSLContext, server_hostname: str = "localhost") -> bytes:
    """Connect, read the server's whole answer, close."""
    async with asyncio.timeout(TIMEOUT):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname=server_hostname
        )
        try:
            return await reader.read()
        finally:
            writer.close()
            await writer.wait_closed()


def client_context(ca_file: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


async def greet(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"hello")
    await writer.drain()
    writer.close()


@pytest.mark.parametrize("server_hostname", ["localhost", "edgehub.local", "gateway.example.com"])
async def test_client_trusting_the_dev_ca_completes_a_handshake(tmp_path: Path, server_hostname: str) -> None:
    dev = ensure_dev_certificates(tmp_path, HOSTS)

    async with tls_server(server_ssl_context(dev.cert_file, dev.key_file, None), greet) as port:
        assert await exchange(port, client_context(dev.ca_file), server_hostname) == b"hello"


async def test_client_rejects_a_name_missing_from_the_dev_certificate(tmp_path: Path) -> None:
    dev = ensure_dev_certificates(tmp_path, HOSTS)

    async with tls_server(server_ssl_context(dev.cert_file, dev.key_file, None), greet) as port:
        with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
            await exchange(port, client_context(dev.ca_file), "other.example")


async def test_tls_1_2_client_completes_a_handshake(tmp_path: Path) -> None:
    dev = ensure_dev_certificates(tmp_path, HOSTS)
    tls12 = client_context(dev.ca_file)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2

    async with tls_server(server_ssl_context(dev.cert_file, dev.key_file, None), greet) as port:
        assert await exchange(port, tls12) == b"hello"


async def test_client_certificate_chain_reaches_x509_authentication(tmp_path: Path) -> None:
    dev = ensure_dev_certificates(tmp_path / "server", HOSTS)
    root = make_ca(tmp_path / "pki", "device root")
    intermediate = make_ca(tmp_path / "pki", "device intermediate", issuer=root)
    device = make_client_certificate(tmp_path / "pki", "cam-1", intermediate, intermediates=(intermediate,))
    registry = IdentityRegistry([IdentitySpec("cam-1")], ["localhost"], trust_bundle=root.cert_file)
    seen: list[list[x509.Certificate]] = []

    async def authenticate(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        chain = client_certificate_chain(writer.get_extra_info("ssl_object"))
        seen.append(chain)
        try:
            result = registry.authenticate_x509(Identity("cam-1"), chain, datetime.now(UTC).timestamp())
            writer.write(f"ok {result.identity}".encode())
        except AuthError as exc:
            writer.write(f"refused {exc}".encode())
        await writer.drain()
        writer.close()

    client = client_context(dev.ca_file)
    client.load_cert_chain(device.chain_file, device.key_file)
    server = server_ssl_context(dev.cert_file, dev.key_file, root.cert_file)
    async with tls_server(server, authenticate) as port:
        answer = await exchange(port, client)

    assert answer == b"ok cam-1"
    assert seen == [[device.certificate, intermediate.certificate]]


async def test_intermediate_ca_alone_anchors_client_certificates(tmp_path: Path) -> None:
    dev = ensure_dev_certificates(tmp_path / "server", HOSTS)
    root = make_ca(tmp_path / "pki", "device root")
    intermediate = make_ca(tmp_path / "pki", "device intermediate", issuer=root)
    device = make_client_certificate(tmp_path / "pki", "cam-1", intermediate)
    client = client_context(dev.ca_file)
    client.load_cert_chain(device.cert_file, device.key_file)
    server = server_ssl_context(
        dev.cert_file,
        dev.key_file,
        None,
        require_client_cert=True,
        extra_client_ca_files=[intermediate.cert_file],
    )

    async with tls_server(server, greet) as port:
        assert await exchange(port, client) == b"hello"


async def test_unverifiable_client_certificate_fails_the_handshake_even_when_optional(tmp_path: Path) -> None:
    # Python's ssl has no verify callback: a self-signed (thumbprint) device certificate
    # is refused by OpenSSL before the registry sees it, unless its issuer is listed.
    dev = ensure_dev_certificates(tmp_path / "server", HOSTS)
    root = make_ca(tmp_path / "pki", "device root")
    self_signed = make_client_certificate(tmp_path / "pki", "cam-1")
    client = client_context(dev.ca_file)
    client.load_cert_chain(self_signed.cert_file, self_signed.key_file)

    async with tls_server(server_ssl_context(dev.cert_file, dev.key_file, root.cert_file), greet) as port:
        try:
            answer = await exchange(port, client)
        except (ssl.SSLError, ConnectionError):
            answer = b""

    assert answer == b""


async def test_self_signed_client_certificate_listed_as_anchor_reaches_thumbprint_auth(
    tmp_path: Path,
) -> None:
    dev = ensure_dev_certificates(tmp_path / "server", HOSTS)
    device = make_client_certificate(tmp_path / "pki", "cam-1")
    registry = IdentityRegistry(
        [IdentitySpec("cam-1", x509_thumbprint=device.sha256_thumbprint)], ["localhost"]
    )
    client = client_context(dev.ca_file)
    client.load_cert_chain(device.cert_file, device.key_file)
    server = server_ssl_context(dev.cert_file, dev.key_file, None, extra_client_ca_files=[device.cert_file])

    async def authenticate(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        chain = client_certificate_chain(writer.get_extra_info("ssl_object"))
        result = registry.authenticate_x509(Identity("cam-1"), chain, datetime.now(UTC).timestamp())
        writer.write(f"ok {result.identity}".encode())
        await writer.drain()
        writer.close()

    async with tls_server(server, authenticate) as port:
        assert await exchange(port, client) == b"ok cam-1"


async def test_optional_client_certificate_may_be_absent(tmp_path: Path) -> None:
    dev = ensure_dev_certificates(tmp_path / "server", HOSTS)
    root = make_ca(tmp_path / "pki", "device root")
    seen: list[list[x509.Certificate]] = []

    async def record(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(client_certificate_chain(writer.get_extra_info("ssl_object")))
        writer.write(b"hello")
        await writer.drain()
        writer.close()

    async with tls_server(server_ssl_context(dev.cert_file, dev.key_file, root.cert_file), record) as port:
        assert await exchange(port, client_context(dev.ca_file)) == b"hello"

    assert seen == [[]]


async def test_required_client_certificate_refuses_a_client_without_one(tmp_path: Path) -> None:
    dev = ensure_dev_certificates(tmp_path / "server", HOSTS)
    root = make_ca(tmp_path / "pki", "device root")
    server = server_ssl_context(dev.cert_file, dev.key_file, root.cert_file, require_client_cert=True)

    async with tls_server(server, greet) as port:
        # In TLS 1.3 the server refuses after the client finished its side of the
        # handshake: the client sees an alert or just the end of the stream.
        try:
            answer = await exchange(port, client_context(dev.ca_file))
        except (ssl.SSLError, ConnectionError):
            answer = b""

    assert answer == b""


def test_without_cpythons_private_decoder_existing_certificates_are_still_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import edgehub.tls
    from edgehub.certificates import decode_certificate_file

    first = ensure_dev_certificates(tmp_path, HOSTS, now=NOW)
    private = edgehub.tls._cpython_decoder
    assert private is not None
    ours, cpython = decode_certificate_file(str(first.cert_file)), private(str(first.cert_file))
    for field in ("notBefore", "notAfter"):
        assert ssl.cert_time_to_seconds(str(ours[field])) == ssl.cert_time_to_seconds(cpython[field])
    assert sorted(ours["subjectAltName"]) == sorted(cpython["subjectAltName"])  # type: ignore[call-overload]
    files = {p: p.read_bytes() for p in (first.ca_file, first.cert_file, first.key_file)}
    monkeypatch.setattr(edgehub.tls, "_cpython_decoder", None)

    assert ensure_dev_certificates(tmp_path, HOSTS, now=NOW + timedelta(days=1)) == first
    assert {p: p.read_bytes() for p in files} == files


def test_dev_certificates_are_issued_by_a_child_and_this_process_never_loads_cryptography(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys

    probe = ("import sys; from pathlib import Path; from edgehub.tls import dev_certificates; "
             "made = dev_certificates(Path(sys.argv[1]), ['hub.local']); "
             "print(made.cert_file.exists(), made.key_file.exists(), 'cryptography' in sys.modules)")
    first = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True,
                           check=True, timeout=120)
    assert first.stdout.split() == ["True", "True", "False"]
    assert "dev server certificate created" in first.stderr  # the child's log line
    again = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True,
                           check=True, timeout=120)
    assert again.stdout.split() == ["True", "True", "False"]
    assert "created" not in again.stderr  # reused
