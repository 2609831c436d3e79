"""Tests for edgehub.testing.certs: the CA and client certificates other tests rely on."""

from __future__ import annotations

import hashlib
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from edgehub.testing.certs import make_ca, make_client_certificate

NOW = datetime(2026, 2, 1, tzinfo=UTC)


def test_client_certificate_is_signed_by_its_ca_with_the_given_cn(tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "root", now=NOW)
    device = make_client_certificate(tmp_path, "edge/filter", ca, now=NOW, days=7)

    device.certificate.verify_directly_issued_by(ca.certificate)
    cn = device.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == "edge/filter"
    assert device.certificate.not_valid_after_utc == NOW + timedelta(days=7)
    assert x509.load_pem_x509_certificates(device.cert_file.read_bytes()) == [device.certificate]
    assert stat.S_IMODE(device.key_file.stat().st_mode) == 0o600


def test_chain_file_lists_the_leaf_then_intermediates(tmp_path: Path) -> None:
    root = make_ca(tmp_path, "root", now=NOW)
    intermediate = make_ca(tmp_path, "intermediate", issuer=root, now=NOW)
    device = make_client_certificate(tmp_path, "cam-1", intermediate, intermediates=(intermediate,), now=NOW)

    intermediate.certificate.verify_directly_issued_by(root.certificate)
    assert x509.load_pem_x509_certificates(device.chain_file.read_bytes()) == [
        device.certificate,
        intermediate.certificate,
    ]


def test_self_signed_certificate_and_its_thumbprints(tmp_path: Path) -> None:
    device = make_client_certificate(tmp_path, "cam-1", now=NOW)

    device.certificate.verify_directly_issued_by(device.certificate)
    der = device.certificate.public_bytes(Encoding.DER)
    assert device.sha256_thumbprint == hashlib.sha256(der).hexdigest().upper()
    assert device.sha1_thumbprint == hashlib.sha1(der, usedforsecurity=False).hexdigest().upper()
