"""Helpers for the scheduling-feed tests: certificates made at test time, signatures, fixtures, set-up.

Private keys only ever exist in memory here; nothing is written to the repository.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

FIXTURES = Path(__file__).resolve().parent.parent.parent / "fixtures" / "hl7"


def fixture(name: str, *, line_ending: bytes = b"\r") -> bytes:
    """A fixture as an EHR sends it: stored with \\n for readable diffs, sent with \\r (or `line_ending`)."""
    return (FIXTURES / name).read_bytes().replace(b"\n", line_ending)


def make_key(kind: str = "rsa2048"):
    return {
        "rsa2048": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "rsa1024": lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024),
        "p256": lambda: ec.generate_private_key(ec.SECP256R1()),
        "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
        "secp256k1": lambda: ec.generate_private_key(ec.SECP256K1()),
    }[kind]()


def make_certificate(
    key,
    *,
    common_name: str = "EHR scheduling feed",
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    issuer_key=None,
    issuer: x509.Certificate | None = None,
    ca: bool = False,
    client: bool = True,
    server_name: str | None = None,
) -> x509.Certificate:
    """A certificate for `key`: self-signed unless `issuer`/`issuer_key` are given."""
    now = datetime.now(UTC)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Health (test only)"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # Well in the past: tests travel in time (time_machine) but OpenSSL checks TLS
        # certificates against the real clock.
        .not_valid_before(not_before or now - timedelta(days=400))
        .not_valid_after(not_after or now + timedelta(days=730))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        if server_name:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(server_name)]), critical=False
            )
        if usages:
            builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    signer = issuer_key or key
    return builder.sign(signer, None if isinstance(signer, ed25519.Ed25519PrivateKey) else hashes.SHA256())


def pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def sign(body: bytes, key, *, raw_ecdsa: bool = False) -> str:
    """The X-HL7-Signature value, as `openssl dgst -sha256 -sign key.pem | base64` makes it."""
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(body, padding.PKCS1v15(), hashes.SHA256())
    else:
        signature = key.sign(body, ec.ECDSA(hashes.SHA256()))
        if raw_ecdsa:
            r, s = decode_dss_signature(signature)
            size = (key.curve.key_size + 7) // 8
            signature = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    return base64.b64encode(signature).decode("ascii")


def ready_endpoint(
    tenant,
    *,
    environment: str = "test",
    time_zone: str = "America/Chicago",
    base_url: str | None = None,
    sms: bool = True,
):
    """An approved endpoint; with `sms`, also consent, an active number and SMS settings so texts get scheduled."""
    from connector.models import EndpointStatus, FhirEndpoint
    from sms.models import NumberState, PhoneNumber, SmsConsent, SmsSettings, TollFreeVerification
    from tenants.scoping import tenant_scope

    with tenant_scope(tenant):
        endpoint = FhirEndpoint.objects.create(
            tenant=tenant,
            environment=environment,
            time_zone=time_zone,
            status=EndpointStatus.APPROVED,
            label=f"{tenant.name} {environment}",
            base_url=base_url or f"https://fhir.example.org/{tenant.pk}/{environment}/api/FHIR/R4",
        )
        if sms:
            now = datetime.now(UTC)
            SmsConsent.objects.update_or_create(
                tenant=tenant,
                defaults={"on_behalf_confirmed_at": now, "patient_consent_confirmed_at": now},
            )
            number = PhoneNumber.objects.filter(tenant=tenant, state=NumberState.ACTIVE).first()
            if number is None:
                number = PhoneNumber.objects.create(
                    tenant=tenant,
                    number=f"+1833555{tenant.pk % 10000:04d}",
                    state=NumberState.ACTIVE,
                    verification=TollFreeVerification.VERIFIED,
                )
            SmsSettings.objects.create(tenant=tenant, endpoint=endpoint, phone_number=number)
    return endpoint
