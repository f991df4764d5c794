"""The installation's key pairs for SMART confidential-client authentication.

The connector authenticates to EHR token endpoints with private_key_jwt (RS384):
it signs a short-lived client assertion with its private key, and EHRs fetch the
public half from `/.well-known/jwks.json`.

Keys come from PEM files named in `SMART_SIGNING_KEY_FILES`, newest first: the
first signs, all are published, so a key is rotated by generating a new one
(`manage.py generate_signing_key`), listing it first, and dropping the old one
once every EHR has fetched the new JWKS. In development without that setting, a
key is generated once under `var/` (the demo makes its own).
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

ALGORITHM = "RS384"
ASSERTION_LIFETIME_SECONDS = 240


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: rsa.RSAPrivateKey

    def public_jwk(self) -> dict:
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "alg": ALGORITHM, "use": "sig", "key_ops": ["verify"]}


def generate_private_key_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _kid_for(key: rsa.RSAPrivateKey) -> str:
    """A stable key id: the SHA-256 thumbprint of the public key, so restarts keep it."""
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.urlsafe_b64encode(hashlib.sha256(public).digest()[:16]).rstrip(b"=").decode()


def _load(pem: bytes, source: str) -> SigningKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as error:
        raise ImproperlyConfigured(f"{source} is not an unencrypted PEM private key.") from error
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 2048:
        raise ImproperlyConfigured(f"{source} must hold an RSA private key of at least 2048 bits (RS384).")
    return SigningKey(kid=_kid_for(key), private_key=key)


def _development_key_file() -> Path:
    path = Path(settings.VAR_DIR) / "smart-signing-key.pem"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(generate_private_key_pem())
        path.chmod(0o600)
    return path


@lru_cache(maxsize=4)
def _keys_from(files: tuple[str, ...]) -> tuple[SigningKey, ...]:
    return tuple(_load(Path(f).read_bytes(), f) for f in files)


def signing_keys() -> tuple[SigningKey, ...]:
    files = tuple(settings.SMART_SIGNING_KEY_FILES)
    if not files:
        if not settings.DEBUG:
            raise ImproperlyConfigured("SMART_SIGNING_KEY_FILES must name at least one PEM private key file.")
        files = (str(_development_key_file()),)
    return _keys_from(files)


def active_key() -> SigningKey:
    return signing_keys()[0]


def jwks() -> dict:
    return {"keys": [key.public_jwk() for key in signing_keys()]}


def client_assertion(*, client_id: str, token_endpoint: str) -> str:
    """A private_key_jwt client assertion (RFC 7523, SMART Backend Services)."""
    key = active_key()
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": token_endpoint,
        "jti": uuid.uuid4().hex,
        "iat": now,
        "exp": now + ASSERTION_LIFETIME_SECONDS,
    }
    return jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid, "typ": "JWT"})


def client_authentication(*, client_id: str, token_endpoint: str) -> dict:
    """The form fields that authenticate this installation at a token endpoint."""
    if settings.SMART_CLIENT_SECRET and settings.SMART_CLIENT_AUTH == "client_secret":
        return {"client_secret": settings.SMART_CLIENT_SECRET}
    return {
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": client_assertion(client_id=client_id, token_endpoint=token_endpoint),
    }
