"""The X-HL7-Signature check: the EHR signs the exact body bytes with the key of its uploaded certificate.

RSA certificates: RSASSA-PKCS1-v1_5 with SHA-256 (`openssl dgst -sha256 -sign`).
EC certificates (P-256, P-384): ECDSA with SHA-256, the signature DER-encoded as
openssl writes it, or raw r||s (JOSE style) of exactly twice the curve's size.
The header is the signature in Base64 (standard or URL-safe, padding optional).
"""

from __future__ import annotations

import base64
import binascii
from functools import lru_cache

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from sms.models import SigningCertificate

MAX_SIGNATURE_CHARS = 2048  # RSA 8192 in Base64 is under 1400 characters


class SignatureInvalid(Exception):
    """The body was not signed by the organization's certificate. `reason` is safe to return and log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@lru_cache(maxsize=256)
def _public_key(pem: str):
    # Keyed by the PEM itself: a replaced certificate is a different key, never a stale one.
    return x509.load_pem_x509_certificate(pem.encode("ascii")).public_key()


def decode_signature(signature_b64: str) -> bytes:
    text = "".join((signature_b64 or "").split())
    if not text:
        raise SignatureInvalid("the X-HL7-Signature header is missing or empty")
    if len(text) > MAX_SIGNATURE_CHARS:
        raise SignatureInvalid("the X-HL7-Signature header is too long to be a signature")
    text = text.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise SignatureInvalid("the X-HL7-Signature header is not Base64") from error


def verify_signature(body: bytes, signature_b64: str, certificate: SigningCertificate) -> None:
    """Return if `signature_b64` signs exactly `body` with the key of `certificate`, else raise SignatureInvalid."""
    signature = decode_signature(signature_b64)
    key = _public_key(certificate.pem)
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, body, padding.PKCS1v15(), hashes.SHA256())
            return
        if isinstance(key, ec.EllipticCurvePublicKey):
            _verify_ecdsa(key, signature, body)
            return
    except InvalidSignature as error:
        raise SignatureInvalid(
            "the signature does not match this body and the organization's uploaded certificate"
        ) from error
    raise SignatureInvalid("the uploaded certificate's key type cannot verify signatures")


def _verify_ecdsa(key: ec.EllipticCurvePublicKey, signature: bytes, body: bytes) -> None:
    size = (key.curve.key_size + 7) // 8
    algorithm = ec.ECDSA(hashes.SHA256())
    if len(signature) == 2 * size:
        # Raw r||s. A DER signature of exactly this length is (nearly) impossible, but try it too.
        raw = encode_dss_signature(
            int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
        )
        try:
            key.verify(raw, body, algorithm)
            return
        except InvalidSignature:
            pass
    try:
        key.verify(signature, body, algorithm)
    except ValueError as error:  # not DER at all
        raise InvalidSignature() from error
