"""Tests for edgehub.auth.registry: SAS and X.509 authentication against configured identities."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from edgehub.auth.identities import IdentitySpec
from edgehub.auth.registry import AuthResult, IdentityRegistry
from edgehub.auth.sas import make_sas_token, sas_resource
from edgehub.errors import AuthError, ConfigError
from edgehub.message import Identity
from edgehub.testing.certs import CertificateAuthority, make_ca, make_client_certificate

HOST = "myhub.azure-devices.net"
EDGE_HOST = "edgehub.local"
PRIMARY = base64.b64encode(b"primary-key-0123456789abcdefghij").decode()
SECONDARY = base64.b64encode(b"secondary-key-0123456789abcdefgh").decode()
WRONG = base64.b64encode(b"wrong-key-0123456789abcdefghijkl").decode()
NOW_DT = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
NOW = NOW_DT.timestamp()
SENSOR = Identity("sensor-1")
FILTER = Identity("edge", "filter")


def token_for(identity: Identity, key: str = PRIMARY, expiry: float = NOW + 3600, host: str = HOST) -> str:
    return make_sas_token(sas_resource(host, identity), key, int(expiry))


@pytest.fixture
def registry() -> IdentityRegistry:
    return IdentityRegistry(
        [
            IdentitySpec("sensor-1", primary_key=PRIMARY, secondary_key=SECONDARY),
            IdentitySpec("edge", "filter", primary_key=PRIMARY),
        ],
        host_names=[HOST, EDGE_HOST],
    )


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return make_ca(tmp_path / "ca", "device CA", now=NOW_DT)


def test_primary_key_token_authenticates_with_its_expiry(registry: IdentityRegistry) -> None:
    result = registry.authenticate_sas(SENSOR, token_for(SENSOR, expiry=NOW + 600), NOW)

    assert result == AuthResult(SENSOR, NOW + 600, "sas")


def test_secondary_key_token_authenticates(registry: IdentityRegistry) -> None:
    assert registry.authenticate_sas(SENSOR, token_for(SENSOR, SECONDARY), NOW).identity == SENSOR


def test_module_token_authenticates_the_module(registry: IdentityRegistry) -> None:
    assert registry.authenticate_sas(FILTER, token_for(FILTER), NOW).method == "sas"


@pytest.mark.parametrize("host", [HOST, EDGE_HOST, EDGE_HOST.upper()])
def test_token_for_any_hub_host_name_authenticates(registry: IdentityRegistry, host: str) -> None:
    assert registry.authenticate_sas(SENSOR, token_for(SENSOR, host=host), NOW).identity == SENSOR


def test_wrong_key_is_refused_without_revealing_key_or_signature(registry: IdentityRegistry) -> None:
    token = token_for(SENSOR, WRONG)

    with pytest.raises(AuthError, match="matches neither its primary nor secondary key") as caught:
        registry.authenticate_sas(SENSOR, token, NOW)

    reason = str(caught.value)
    signature = token.split("sig=")[1].split("&")[0]
    assert signature not in reason
    assert all(key not in reason for key in (PRIMARY, SECONDARY, WRONG))


def test_expired_token_is_refused(registry: IdentityRegistry) -> None:
    with pytest.raises(AuthError, match="expired"):
        registry.authenticate_sas(SENSOR, token_for(SENSOR, expiry=NOW - 1), NOW)


def test_token_naming_another_device_is_refused(registry: IdentityRegistry) -> None:
    with pytest.raises(AuthError, match="does not name sensor-1"):
        registry.authenticate_sas(SENSOR, token_for(Identity("sensor-2")), NOW)


def test_device_token_does_not_authenticate_its_module(registry: IdentityRegistry) -> None:
    with pytest.raises(AuthError, match="does not name edge/filter"):
        registry.authenticate_sas(FILTER, token_for(Identity("edge")), NOW)


def test_token_for_a_foreign_host_is_refused(registry: IdentityRegistry) -> None:
    with pytest.raises(AuthError, match="not one of this hub's host names"):
        registry.authenticate_sas(SENSOR, token_for(SENSOR, host="evil.example"), NOW)


def test_unknown_identity_is_refused(registry: IdentityRegistry) -> None:
    with pytest.raises(AuthError, match="unknown identity sensor-9"):
        registry.authenticate_sas(Identity("sensor-9"), token_for(Identity("sensor-9")), NOW)


def test_refusal_reason_escapes_client_supplied_ids(registry: IdentityRegistry) -> None:
    with pytest.raises(AuthError) as caught:
        registry.authenticate_sas(Identity("evil\nline"), "x", NOW)

    assert str(caught.value) == "unknown identity evil\\nline"


def test_malformed_token_is_refused(registry: IdentityRegistry) -> None:
    with pytest.raises(AuthError, match="not a shared access signature"):
        registry.authenticate_sas(SENSOR, "password", NOW)


def test_identity_without_keys_cannot_use_sas(tmp_path: Path) -> None:
    device = make_client_certificate(tmp_path, "cam-1", now=NOW_DT)
    registry = IdentityRegistry([IdentitySpec("cam-1", x509_thumbprint=device.sha256_thumbprint)], [HOST])

    with pytest.raises(AuthError, match="SAS authentication is not enabled"):
        registry.authenticate_sas(Identity("cam-1"), token_for(Identity("cam-1")), NOW)


def test_registry_lists_its_identities(registry: IdentityRegistry) -> None:
    assert registry.identities == {SENSOR, FILTER}
    assert SENSOR in registry
    assert Identity("sensor-9") not in registry
    assert len(registry) == 2
    assert registry.host_names == (HOST, EDGE_HOST)


@pytest.mark.parametrize("algorithm", ["sha256", "sha1"])
@pytest.mark.parametrize("style", ["upper", "lower", "colons"])
def test_self_signed_certificate_authenticates_by_thumbprint(
    tmp_path: Path, algorithm: str, style: str
) -> None:
    device = make_client_certificate(tmp_path, "cam-1", now=NOW_DT, days=30)
    thumbprint = device.sha256_thumbprint if algorithm == "sha256" else device.sha1_thumbprint
    if style == "lower":
        thumbprint = thumbprint.lower()
    elif style == "colons":
        thumbprint = ":".join(thumbprint[i : i + 2] for i in range(0, len(thumbprint), 2))
    registry = IdentityRegistry([IdentitySpec("cam-1", x509_thumbprint=thumbprint)], [HOST])

    result = registry.authenticate_x509(Identity("cam-1"), [device.certificate], NOW)

    assert result == AuthResult(Identity("cam-1"), (NOW_DT + timedelta(days=30)).timestamp(), "x509")


def test_certificate_given_as_der_bytes_authenticates(tmp_path: Path) -> None:
    device = make_client_certificate(tmp_path, "cam-1", now=NOW_DT)
    registry = IdentityRegistry([IdentitySpec("cam-1", x509_thumbprint=device.sha256_thumbprint)], [HOST])

    der = device.certificate.public_bytes(Encoding.DER)

    assert registry.authenticate_x509(Identity("cam-1"), [der], NOW).method == "x509"


def test_module_authenticates_by_thumbprint(tmp_path: Path) -> None:
    module = make_client_certificate(tmp_path, "whatever", now=NOW_DT)
    registry = IdentityRegistry(
        [IdentitySpec("edge", "filter", x509_thumbprint=module.sha1_thumbprint)], [HOST]
    )

    assert registry.authenticate_x509(FILTER, [module.certificate], NOW).identity == FILTER


def test_other_certificate_does_not_match_the_thumbprint(tmp_path: Path) -> None:
    device = make_client_certificate(tmp_path / "a", "cam-1", now=NOW_DT)
    impostor = make_client_certificate(tmp_path / "b", "cam-1", now=NOW_DT)
    registry = IdentityRegistry([IdentitySpec("cam-1", x509_thumbprint=device.sha256_thumbprint)], [HOST])

    with pytest.raises(AuthError, match="thumbprint does not match cam-1"):
        registry.authenticate_x509(Identity("cam-1"), [impostor.certificate], NOW)


def test_expired_certificate_is_refused_even_with_matching_thumbprint(tmp_path: Path) -> None:
    device = make_client_certificate(tmp_path, "cam-1", now=NOW_DT, days=1)
    registry = IdentityRegistry([IdentitySpec("cam-1", x509_thumbprint=device.sha256_thumbprint)], [HOST])

    with pytest.raises(AuthError, match="not valid now"):
        registry.authenticate_x509(Identity("cam-1"), [device.certificate], NOW + 2 * 86400)


def test_not_yet_valid_certificate_is_refused(tmp_path: Path) -> None:
    device = make_client_certificate(tmp_path, "cam-1", not_before=NOW_DT + timedelta(days=1))
    registry = IdentityRegistry([IdentitySpec("cam-1", x509_thumbprint=device.sha256_thumbprint)], [HOST])

    with pytest.raises(AuthError, match="not valid now"):
        registry.authenticate_x509(Identity("cam-1"), [device.certificate], NOW)


def test_ca_signed_certificate_with_device_id_cn_authenticates(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    device = make_client_certificate(tmp_path, "cam-1", ca, now=NOW_DT)
    registry = IdentityRegistry([IdentitySpec("cam-1", x509_ca_file=str(ca.cert_file))], [HOST])

    assert registry.authenticate_x509(Identity("cam-1"), [device.certificate], NOW).method == "x509"


def test_chain_through_an_intermediate_authenticates(tmp_path: Path, ca: CertificateAuthority) -> None:
    intermediate = make_ca(tmp_path / "int", "intermediate CA", issuer=ca, now=NOW_DT)
    device = make_client_certificate(
        tmp_path, "cam-1", intermediate, intermediates=(intermediate,), now=NOW_DT
    )
    registry = IdentityRegistry([IdentitySpec("cam-1", x509_ca_file=str(ca.cert_file))], [HOST])

    assert registry.authenticate_x509(Identity("cam-1"), device.chain, NOW).identity == Identity("cam-1")
    with pytest.raises(AuthError, match="does not chain to a trusted CA"):
        registry.authenticate_x509(Identity("cam-1"), [device.certificate], NOW)


def test_intermediate_ca_file_is_a_trust_anchor(tmp_path: Path, ca: CertificateAuthority) -> None:
    intermediate = make_ca(tmp_path / "int", "intermediate CA", issuer=ca, now=NOW_DT)
    device = make_client_certificate(tmp_path, "cam-1", intermediate, now=NOW_DT)
    registry = IdentityRegistry([IdentitySpec("cam-1", x509_ca_file=str(intermediate.cert_file))], [HOST])

    assert registry.authenticate_x509(Identity("cam-1"), [device.certificate], NOW).identity == Identity(
        "cam-1"
    )


def test_certificate_from_another_ca_is_refused(tmp_path: Path, ca: CertificateAuthority) -> None:
    other = make_ca(tmp_path / "other", "device CA", now=NOW_DT)  # same name, other key
    device = make_client_certificate(tmp_path, "cam-1", other, now=NOW_DT)
    registry = IdentityRegistry([IdentitySpec("cam-1", x509_ca_file=str(ca.cert_file))], [HOST])

    with pytest.raises(AuthError, match="does not chain to a trusted CA"):
        registry.authenticate_x509(Identity("cam-1"), [device.certificate], NOW)


def test_ca_signed_certificate_for_another_device_is_refused(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    device = make_client_certificate(tmp_path, "cam-2", ca, now=NOW_DT)
    registry = IdentityRegistry([IdentitySpec("cam-1", x509_ca_file=str(ca.cert_file))], [HOST])

    with pytest.raises(AuthError, match=r"CN \(cam-2\) is not cam-1"):
        registry.authenticate_x509(Identity("cam-1"), [device.certificate], NOW)


def test_ca_signed_module_needs_device_slash_module_cn(tmp_path: Path, ca: CertificateAuthority) -> None:
    module = make_client_certificate(tmp_path, "edge/filter", ca, now=NOW_DT)
    device = make_client_certificate(tmp_path, "edge", ca, now=NOW_DT)
    registry = IdentityRegistry([IdentitySpec("edge", "filter", x509_ca_file=str(ca.cert_file))], [HOST])

    assert registry.authenticate_x509(FILTER, [module.certificate], NOW).identity == FILTER
    with pytest.raises(AuthError, match=r"CN \(edge\) is not edge/filter"):
        registry.authenticate_x509(FILTER, [device.certificate], NOW)


def test_ca_certificate_itself_is_not_a_client_certificate(tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "cam-1", now=NOW_DT)
    registry = IdentityRegistry([IdentitySpec("cam-1", x509_ca_file=str(ca.cert_file))], [HOST])

    with pytest.raises(AuthError, match="is a CA certificate"):
        registry.authenticate_x509(Identity("cam-1"), [ca.certificate], NOW)


def test_identity_with_no_credential_uses_the_trust_bundle(tmp_path: Path, ca: CertificateAuthority) -> None:
    device = make_client_certificate(tmp_path, "cam-1", ca, now=NOW_DT)
    registry = IdentityRegistry([IdentitySpec("cam-1")], [HOST], trust_bundle=ca.cert_file)

    assert registry.authenticate_x509(Identity("cam-1"), [device.certificate], NOW).method == "x509"


def test_trust_bundle_also_anchors_identities_with_their_own_ca(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    own = make_ca(tmp_path / "own", "own CA", now=NOW_DT)
    device = make_client_certificate(tmp_path, "cam-1", ca, now=NOW_DT)
    registry = IdentityRegistry(
        [IdentitySpec("cam-1", x509_ca_file=str(own.cert_file))], [HOST], trust_bundle=ca.cert_file
    )

    assert registry.authenticate_x509(Identity("cam-1"), [device.certificate], NOW).identity == Identity(
        "cam-1"
    )


def test_key_only_identity_cannot_use_x509(
    tmp_path: Path, registry: IdentityRegistry, ca: CertificateAuthority
) -> None:
    device = make_client_certificate(tmp_path, "sensor-1", ca, now=NOW_DT)

    with pytest.raises(AuthError, match=r"X\.509 authentication is not enabled for sensor-1"):
        registry.authenticate_x509(SENSOR, [device.certificate], NOW)


def test_empty_or_undecodable_chain_is_refused(tmp_path: Path) -> None:
    device = make_client_certificate(tmp_path, "cam-1", now=NOW_DT)
    registry = IdentityRegistry([IdentitySpec("cam-1", x509_thumbprint=device.sha256_thumbprint)], [HOST])

    with pytest.raises(AuthError, match="no client certificate"):
        registry.authenticate_x509(Identity("cam-1"), [], NOW)
    with pytest.raises(AuthError, match="not valid DER"):
        registry.authenticate_x509(Identity("cam-1"), [b"junk"], NOW)


def test_ca_files_are_read_once_when_the_registry_is_built(tmp_path: Path, ca: CertificateAuthority) -> None:
    device = make_client_certificate(tmp_path, "cam-1", ca, now=NOW_DT)
    registry = IdentityRegistry([IdentitySpec("cam-1", x509_ca_file=str(ca.cert_file))], [HOST])
    ca.cert_file.unlink()

    assert registry.authenticate_x509(Identity("cam-1"), [device.certificate], NOW).identity == Identity(
        "cam-1"
    )


def test_invalid_identities_are_refused_with_one_problem_each(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        IdentityRegistry(
            [
                IdentitySpec("a", primary_key="not base64!"),
                IdentitySpec("b", primary_key=PRIMARY, secondary_key=""),
                IdentitySpec("c", x509_thumbprint="abc"),
                IdentitySpec("d", x509_ca_file=str(tmp_path / "missing.pem")),
                IdentitySpec("e"),
                IdentitySpec("f", primary_key=PRIMARY),
                IdentitySpec("f", primary_key=SECONDARY),
                IdentitySpec(""),
            ],
            [HOST],
        )

    assert caught.value.problems == [
        ("identities[0] (a)", "primaryKey is not base64"),
        ("identities[1] (b)", "secondaryKey is empty"),
        ("identities[2] (c)", "x509Thumbprint must be a SHA-1 (40) or SHA-256 (64) hex fingerprint"),
        ("identities[3] (d)", f"cannot read CA file {tmp_path / 'missing.pem'}: No such file or directory"),
        (
            "identities[4] (e)",
            "no primaryKey, x509Thumbprint or x509CaFile, and no TrustBundleFile for CA authentication",
        ),
        ("identities[6] (f)", "duplicate identity"),
        ("identities[7] ()", "deviceId and moduleId must not be empty"),
    ]


def test_unusable_trust_bundle_is_a_config_error(tmp_path: Path) -> None:
    not_pem = tmp_path / "bundle.pem"
    not_pem.write_text("hello")

    with pytest.raises(ConfigError) as caught:
        IdentityRegistry([], [HOST], trust_bundle=not_pem)

    assert caught.value.problems == [("TrustBundleFile", f"CA file {not_pem} holds no PEM certificate")]
