"""Read and check the certificate an organization uploads to sign its scheduling feed.

Administrators export certificates in many shapes: Base64 PEM with headers, a
.cer that is DER or Base64 without headers, and sometimes the wrong thing
altogether (the private key, a .p7b bundle, a .pfx). Each mistake gets an
explanation they can act on.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.core.exceptions import ValidationError
from django.utils import timezone

MIN_RSA_BITS = 2048
ACCEPTED_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384"}
EXPIRY_WARNING_DAYS = 30

PRIVATE_KEY_MESSAGE = (
    "This is a private key, not a certificate: upload the public certificate (.cer or .pem)."
)
NOT_A_CERTIFICATE_MESSAGE = "Not a certificate: the file must be Base64 PEM or DER (.cer)."
PKCS7_MESSAGE = (
    "This is a PKCS#7 bundle (.p7b/.p7c): export the signing certificate alone as a .cer "
    "(Base64 or DER) and upload that."
)
PFX_MESSAGE = (
    "This is a PFX/PKCS#12 file (.pfx/.p12), which contains the private key: keep it on the EHR's "
    "side and upload only the public certificate (.cer or .pem)."
)
CSR_MESSAGE = (
    "This is a certificate signing request (CSR), not a certificate: upload the certificate "
    "issued for it (.cer or .pem)."
)
PUBLIC_KEY_MESSAGE = (
    "This is a bare public key, not a certificate: upload the X.509 certificate (.cer or .pem)."
)

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 #]+)-----")
_BASE64_ONLY = re.compile(rb"^[A-Za-z0-9+/=\s]+$")
# Blanks after a binary certificate that are tried off one by one (see _load).
MAX_TRAILING_BLANKS = 16
# DER OIDs that identify what a binary upload is when it is not a certificate.
_OID_PKCS7_SIGNED_DATA = bytes.fromhex("06092a864886f70d010702")
_OID_PKCS7_DATA = bytes.fromhex("06092a864886f70d010701")
_PFX_VERSION_3 = bytes.fromhex("020103")


@dataclass(frozen=True)
class ParsedCertificate:
    """What the portal shows and stores about an uploaded certificate."""

    certificate: x509.Certificate = field(repr=False)
    pem: str = field(repr=False)
    thumbprint_sha256: str  # upper-case hex, no colons
    thumbprint_sha1: str
    subject: str
    key_description: str  # "RSA 2048", "EC P-256"
    not_before: datetime
    not_after: datetime
    expires_soon: bool
    warnings: tuple[str, ...] = ()


def _fail(message: str, code: str) -> ValidationError:
    return ValidationError(message, code=code)


def _load(data: bytes) -> tuple[x509.Certificate, tuple[str, ...]]:
    """The first certificate in `data`, or a ValidationError that says what the file is instead."""
    stripped = data.strip().lstrip(b"\xef\xbb\xbf").strip()
    if not stripped:
        raise _fail("The file is empty: upload the public certificate (.cer or .pem).", "empty")
    labels = _PEM_BLOCK.findall(stripped)
    if labels:
        certificates = [
            label
            for label in labels
            if label in (b"CERTIFICATE", b"X509 CERTIFICATE", b"TRUSTED CERTIFICATE")
        ]
        if any(b"PRIVATE KEY" in label for label in labels):
            raise _fail(PRIVATE_KEY_MESSAGE, "private_key")
        if not certificates:
            if any(b"PKCS7" in label for label in labels):
                raise _fail(PKCS7_MESSAGE, "pkcs7")
            if any(b"CERTIFICATE REQUEST" in label for label in labels):
                raise _fail(CSR_MESSAGE, "csr")
            if any(b"PUBLIC KEY" in label for label in labels):
                raise _fail(PUBLIC_KEY_MESSAGE, "public_key")
            raise _fail(NOT_A_CERTIFICATE_MESSAGE, "not_certificate")
        try:
            loaded = x509.load_pem_x509_certificates(stripped)
        except ValueError as error:
            raise _fail(
                "The PEM certificate is damaged (its Base64 does not decode to a certificate): "
                "export it again.",
                "damaged",
            ) from error
        warnings: tuple[str, ...] = ()
        if len(loaded) > 1:
            warnings = (
                f"The file holds {len(loaded)} certificates; the first one was used. "
                "Upload the EHR's signing certificate alone to be sure.",
            )
        return loaded[0], warnings
    if _BASE64_ONLY.match(stripped):
        # A .cer in Base64 without the BEGIN/END lines.
        try:
            candidates = [base64.b64decode(b"".join(stripped.split()), validate=True)]
        except (binascii.Error, ValueError) as error:
            raise _fail(NOT_A_CERTIFICATE_MESSAGE, "not_certificate") from error
    else:
        # Binary DER as uploaded first; then without the blanks a tool may have added at
        # the end, one byte at a time: the certificate's own last bytes may be "whitespace"
        # too (0x09, 0x0A, 0x20 and the like: about 1 in 40), so stripping them all would cut
        # into it. Bounded: a file padded with many blanks is tried a few times, not once a byte.
        trailing = len(data) - len(data.rstrip())
        candidates = [data[: len(data) - cut] for cut in range(min(trailing, MAX_TRAILING_BLANKS) + 1)]
        if stripped not in candidates:
            candidates.append(stripped)
    for der in candidates:
        try:
            return x509.load_der_x509_certificate(der), ()
        except ValueError:
            pass
    for der in candidates:
        _explain_binary(der)
    raise _fail(NOT_A_CERTIFICATE_MESSAGE, "not_certificate")


def _explain_binary(der: bytes) -> None:
    """Raise a precise error for a DER blob that is a key, a bundle or a PFX."""
    head = der[:64]
    if _OID_PKCS7_SIGNED_DATA in head:
        raise _fail(PKCS7_MESSAGE, "pkcs7")
    if head[:1] == b"\x30" and _PFX_VERSION_3 in head[:8] and _OID_PKCS7_DATA in head:
        raise _fail(PFX_MESSAGE, "pfx")
    try:
        serialization.load_der_private_key(der, password=None)
    except TypeError as error:  # an encrypted private key: it wanted a password
        raise _fail(PRIVATE_KEY_MESSAGE, "private_key") from error
    except (ValueError, NotImplementedError):
        pass
    else:
        raise _fail(PRIVATE_KEY_MESSAGE, "private_key")
    if der[:1] == b"\x30" and b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x05" in head:  # PBES2/PBKDF2 OIDs
        raise _fail(PRIVATE_KEY_MESSAGE, "private_key")


def describe_key(certificate: x509.Certificate) -> str:
    """ "RSA 2048" or "EC P-256"; a ValidationError for any key the feed does not accept."""
    key = certificate.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise _fail(f"RSA key of {key.key_size} bits: use at least {MIN_RSA_BITS}", "weak_rsa")
        return f"RSA {key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        label = ACCEPTED_CURVES.get(key.curve.name)
        if label is None:
            raise _fail(f"EC curve {key.curve.name} is not accepted: use P-256 or P-384", "curve")
        return f"EC {label}"
    kind = type(key).__name__.replace("PublicKey", "").lstrip("_") or "This"
    raise _fail(
        f"{kind} keys are not accepted: use RSA (at least {MIN_RSA_BITS} bits) or EC P-256 or P-384",
        "key_type",
    )


def certificate_parse(data: bytes | str, *, now: datetime | None = None) -> ParsedCertificate:
    """Check an uploaded certificate and describe it, or raise a ValidationError an administrator understands.

    Accepts Base64 PEM (with BEGIN CERTIFICATE lines) and .cer files (DER, or
    Base64 without the lines). The key must be RSA of at least 2048 bits or EC
    on P-256 or P-384; the certificate must be valid now. `expires_soon` (and a
    warning) when it ends within 30 days.
    """
    raw = data.encode("utf-8", errors="replace") if isinstance(data, str) else bytes(data)
    certificate, warnings = _load(raw)
    key_description = describe_key(certificate)
    now = now or timezone.now()
    not_before = certificate.not_valid_before_utc
    not_after = certificate.not_valid_after_utc
    if not_after <= now:
        raise _fail(
            f"This certificate expired on {not_after:%Y-%m-%d %H:%M} UTC: upload a current one.", "expired"
        )
    if not_before > now:
        raise _fail(
            f"This certificate is not valid yet: it becomes valid on {not_before:%Y-%m-%d %H:%M} UTC. "
            "Check the clock of the machine that made it, or upload it once it is valid.",
            "not_yet_valid",
        )
    expires_soon = not_after - now <= timedelta(days=EXPIRY_WARNING_DAYS)
    if expires_soon:
        days = max(0, (not_after - now).days)
        warnings = (
            *warnings,
            f"This certificate expires on {not_after:%Y-%m-%d} ({days} days from now): "
            "have the EHR team make a new one and upload it before then.",
        )
    return ParsedCertificate(
        certificate=certificate,
        pem=certificate.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        thumbprint_sha256=certificate.fingerprint(hashes.SHA256()).hex().upper(),
        # SHA-1 only as the thumbprint Windows certificate dialogs show, not for security.
        thumbprint_sha1=certificate.fingerprint(hashes.SHA1()).hex().upper(),  # noqa: S303
        subject=certificate.subject.rfc4514_string()[:500] or "(empty subject)",
        key_description=key_description,
        not_before=not_before,
        not_after=not_after,
        expires_soon=expires_soon,
        warnings=warnings,
    )
