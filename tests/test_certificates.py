"""Uploading the certificate that signs the scheduling feed: what is accepted, and what administrators are told."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12
from django.core.exceptions import ValidationError

from sms.certificates import (
    NOT_A_CERTIFICATE_MESSAGE,
    PFX_MESSAGE,
    PKCS7_MESSAGE,
    PRIVATE_KEY_MESSAGE,
    certificate_parse,
)
from sms.models import SigningCertificate
from sms.services.certificates import certificate_upload
from tenants.scoping import tenant_scope
from tests.support.hl7_feed import der, key_pem, make_certificate, make_key, pem


@pytest.fixture(scope="module")
def rsa_key():
    return make_key("rsa2048")


@pytest.fixture(scope="module")
def rsa_certificate(rsa_key):
    return make_certificate(rsa_key, common_name="NVH Epic scheduling feed")


def message_of(error: ValidationError) -> str:
    return error.messages[0]


# --- what is accepted ----------------------------------------------------------------


def test_it_reads_a_pem_certificate_and_describes_it(rsa_certificate):
    parsed = certificate_parse(pem(rsa_certificate))

    assert parsed.key_description == "RSA 2048"
    assert parsed.thumbprint_sha256 == rsa_certificate.fingerprint(hashes.SHA256()).hex().upper()
    assert parsed.thumbprint_sha1 == rsa_certificate.fingerprint(hashes.SHA1()).hex().upper()
    assert len(parsed.thumbprint_sha256) == 64 and ":" not in parsed.thumbprint_sha256
    assert "CN=NVH Epic scheduling feed" in parsed.subject
    assert parsed.not_before == rsa_certificate.not_valid_before_utc
    assert parsed.not_after == rsa_certificate.not_valid_after_utc
    assert parsed.expires_soon is False and parsed.warnings == ()
    assert parsed.pem.startswith("-----BEGIN CERTIFICATE-----")


def test_it_reads_a_der_cer_file(rsa_certificate):
    parsed = certificate_parse(der(rsa_certificate))

    assert parsed.thumbprint_sha256 == rsa_certificate.fingerprint(hashes.SHA256()).hex().upper()


def test_it_reads_a_base64_cer_file_without_header_lines(rsa_certificate):
    body = base64.encodebytes(der(rsa_certificate))  # wrapped at 76 characters, as Windows exports it

    assert certificate_parse(body).key_description == "RSA 2048"


def test_it_reads_text_with_windows_line_endings_and_a_byte_order_mark(rsa_certificate):
    text = "\ufeff" + pem(rsa_certificate).decode().replace("\n", "\r\n")

    assert certificate_parse(text).key_description == "RSA 2048"


@pytest.mark.parametrize(("kind", "description"), [("p256", "EC P-256"), ("p384", "EC P-384")])
def test_it_accepts_ec_keys_on_p256_and_p384(kind, description):
    assert certificate_parse(pem(make_certificate(make_key(kind)))).key_description == description


def test_it_uses_the_first_certificate_of_a_chain_and_says_so(rsa_certificate):
    other = make_certificate(make_key("p256"), common_name="Intermediate")

    parsed = certificate_parse(pem(rsa_certificate) + pem(other))

    assert parsed.thumbprint_sha256 == rsa_certificate.fingerprint(hashes.SHA256()).hex().upper()
    assert "2 certificates" in parsed.warnings[0]


def test_it_warns_about_a_certificate_expiring_within_30_days(rsa_key):
    certificate = make_certificate(rsa_key, not_after=datetime.now(UTC) + timedelta(days=10))

    parsed = certificate_parse(pem(certificate))

    assert parsed.expires_soon is True
    assert "expires on" in parsed.warnings[0] and "days from now" in parsed.warnings[0]


# --- what is refused, and how it is explained ------------------------------------------------


def test_it_refuses_a_1024_bit_rsa_key():
    with pytest.raises(ValidationError) as refused:
        certificate_parse(pem(make_certificate(make_key("rsa1024"))))

    assert message_of(refused.value) == "RSA key of 1024 bits: use at least 2048"


def test_it_refuses_an_ec_curve_other_than_p256_or_p384():
    with pytest.raises(ValidationError) as refused:
        certificate_parse(pem(make_certificate(make_key("secp256k1"))))

    assert message_of(refused.value) == "EC curve secp256k1 is not accepted: use P-256 or P-384"


def test_it_refuses_an_ed25519_key():
    with pytest.raises(ValidationError) as refused:
        certificate_parse(pem(make_certificate(ed25519.Ed25519PrivateKey.generate())))

    assert "keys are not accepted: use RSA" in message_of(refused.value)


def test_it_refuses_an_expired_certificate(rsa_key):
    now = datetime.now(UTC)
    certificate = make_certificate(
        rsa_key, not_before=now - timedelta(days=400), not_after=now - timedelta(days=2)
    )

    with pytest.raises(ValidationError) as refused:
        certificate_parse(pem(certificate))

    assert refused.value.code == "expired"
    assert "expired on" in message_of(refused.value)


def test_it_refuses_a_certificate_not_valid_yet(rsa_key):
    certificate = make_certificate(rsa_key, not_before=datetime.now(UTC) + timedelta(days=3))

    with pytest.raises(ValidationError) as refused:
        certificate_parse(pem(certificate))

    assert refused.value.code == "not_yet_valid"


def test_it_explains_that_a_pem_private_key_is_not_a_certificate(rsa_key):
    with pytest.raises(ValidationError) as refused:
        certificate_parse(key_pem(rsa_key))

    assert message_of(refused.value) == PRIVATE_KEY_MESSAGE


def test_it_explains_that_a_certificate_with_its_private_key_must_not_be_uploaded(rsa_key, rsa_certificate):
    with pytest.raises(ValidationError) as refused:
        certificate_parse(pem(rsa_certificate) + key_pem(rsa_key))

    assert message_of(refused.value) == PRIVATE_KEY_MESSAGE


def test_it_recognizes_der_and_encrypted_private_keys(rsa_key):
    plain = rsa_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    encrypted = rsa_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret-pass"),
    )
    for data in (plain, encrypted):
        with pytest.raises(ValidationError) as refused:
            certificate_parse(data)
        assert message_of(refused.value) == PRIVATE_KEY_MESSAGE


def test_a_der_file_whose_last_byte_looks_like_whitespace_is_read_whole():
    # DER is binary: its last byte is 0x0A, 0x0D, 0x20... in about 1 file in 40.
    key = make_key("p256")  # ECDSA signatures differ each time: try until one ends so
    encoded, certificate = b"", None
    while encoded[-1:] not in (b"\n", b"\r", b" ", b"\t", b"\x0b", b"\x0c"):
        certificate = make_certificate(key)
        encoded = certificate.public_bytes(serialization.Encoding.DER)

    parsed = certificate_parse(encoded)

    assert parsed.thumbprint_sha256 == certificate.fingerprint(hashes.SHA256()).hex().upper()


@pytest.mark.parametrize("added", [b"\r\n", b"\n", b" \r\n\r\n"])
def test_a_der_file_ending_in_whitespace_with_a_newline_added_is_read_whole(added):
    # Both at once: the certificate's own last byte looks like a blank, and a tool added more.
    key = make_key("p256")
    encoded, certificate = b"", None
    while encoded[-1:] not in (b"\n", b"\r", b" ", b"\t", b"\x0b", b"\x0c"):
        certificate = make_certificate(key)
        encoded = certificate.public_bytes(serialization.Encoding.DER)

    parsed = certificate_parse(encoded + added)

    assert parsed.thumbprint_sha256 == certificate.fingerprint(hashes.SHA256()).hex().upper()


def test_a_binary_file_padded_with_many_blanks_is_refused_quickly(rsa_certificate):
    with pytest.raises(ValidationError):
        certificate_parse(b"\x30\x82" + b"\x00" * 100 + b" " * 1_000_000)


def test_a_der_file_with_a_newline_added_at_the_end_is_still_read(rsa_certificate):
    parsed = certificate_parse(der(rsa_certificate) + b"\r\n")

    assert parsed.thumbprint_sha256 == rsa_certificate.fingerprint(hashes.SHA256()).hex().upper()


def test_it_gives_a_hint_for_pkcs7_bundles(rsa_certificate):
    for encoding in (serialization.Encoding.PEM, serialization.Encoding.DER):
        bundle = pkcs7.serialize_certificates([rsa_certificate], encoding)
        with pytest.raises(ValidationError) as refused:
            certificate_parse(bundle)
        assert message_of(refused.value) == PKCS7_MESSAGE


def test_it_gives_a_hint_for_pfx_files(rsa_key, rsa_certificate):
    pfx = pkcs12.serialize_key_and_certificates(
        b"feed", rsa_key, rsa_certificate, None, serialization.BestAvailableEncryption(b"secret-pass")
    )

    with pytest.raises(ValidationError) as refused:
        certificate_parse(pfx)

    assert message_of(refused.value) == PFX_MESSAGE


@pytest.mark.parametrize("data", [b"hello, this is not a certificate", b"\x00\x01\x02garbage", b"QUJDRA=="])
def test_it_says_what_a_certificate_file_must_be(data):
    with pytest.raises(ValidationError) as refused:
        certificate_parse(data)

    assert message_of(refused.value) == NOT_A_CERTIFICATE_MESSAGE


def test_it_refuses_an_empty_file():
    with pytest.raises(ValidationError):
        certificate_parse(b"  \n")


# --- the upload service --------------------------------------------------------------------


def test_an_upload_replaces_the_active_certificate_of_that_environment_only(org_a, admin_a):
    first = certificate_upload(
        tenant=org_a, environment="test", data=pem(make_certificate(make_key("p256"))), uploaded_by=admin_a
    )
    production = certificate_upload(
        tenant=org_a,
        environment="production",
        data=pem(make_certificate(make_key("p256"))),
        uploaded_by=admin_a,
    )

    second = certificate_upload(
        tenant=org_a, environment="test", data=pem(make_certificate(make_key("rsa2048"))), uploaded_by=admin_a
    )

    with tenant_scope(org_a):
        first.refresh_from_db()
        production.refresh_from_db()
        assert first.active is False
        assert production.active is True
        assert second.active is True and second.key_description == "RSA 2048"
        assert second.uploaded_by == admin_a
        assert SigningCertificate.objects.filter(environment="test", active=True).get() == second
        assert first.history.first().active is False  # the replacement is in the history


def test_a_refused_upload_keeps_the_current_certificate(org_a, admin_a):
    current = certificate_upload(
        tenant=org_a, environment="test", data=pem(make_certificate(make_key("p256"))), uploaded_by=admin_a
    )

    with pytest.raises(ValidationError):
        certificate_upload(
            tenant=org_a,
            environment="test",
            data=pem(make_certificate(make_key("rsa1024"))),
            uploaded_by=admin_a,
        )

    with tenant_scope(org_a):
        current.refresh_from_db()
        assert current.active is True


def test_an_upload_returns_its_warnings(org_a, admin_a, rsa_key):
    soon = make_certificate(rsa_key, not_after=datetime.now(UTC) + timedelta(days=10))

    uploaded = certificate_upload(tenant=org_a, environment="test", data=pem(soon), uploaded_by=admin_a)

    assert uploaded.expires_soon is True
    assert uploaded.warnings and "expires on" in uploaded.warnings[0]


def test_an_upload_never_touches_another_organizations_certificate(org_a, org_b, admin_a, admin_b):
    of_b = certificate_upload(
        tenant=org_b, environment="test", data=pem(make_certificate(make_key("p256"))), uploaded_by=admin_b
    )

    certificate_upload(
        tenant=org_a, environment="test", data=pem(make_certificate(make_key("p256"))), uploaded_by=admin_a
    )

    with tenant_scope(org_b):
        of_b.refresh_from_db()
        assert of_b.active is True
    with tenant_scope(org_a):
        assert SigningCertificate.objects.count() == 1


def test_an_upload_for_an_unknown_environment_is_refused(org_a, admin_a, rsa_certificate):
    with pytest.raises(ValidationError):
        certificate_upload(
            tenant=org_a, environment="staging", data=pem(rsa_certificate), uploaded_by=admin_a
        )
