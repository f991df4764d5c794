"""The sandbox EHR's own signing key: its JWKS and the id_tokens it signs.

The key comes from `settings.SANDBOX_EHR_PRIVATE_KEY_PEM` when set; otherwise it
is generated on first use and kept in the database, so the web server and the
workers sign with the same key.
"""

from __future__ import annotations

import base64
import hashlib
import json

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings
from django.db import IntegrityError, transaction

from connector.sandbox_ehr.models import SigningKey

ID_TOKEN_ALGORITHM = "RS256"


def _generate_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _private_key_pem() -> str:
    configured = getattr(settings, "SANDBOX_EHR_PRIVATE_KEY_PEM", "")
    if configured:
        return configured
    stored = SigningKey.objects.filter(name="primary").first()
    if stored:
        return stored.private_key_pem
    try:
        with transaction.atomic():
            return SigningKey.objects.create(name="primary", private_key_pem=_generate_pem()).private_key_pem
    except IntegrityError:
        # Another process generated it first: use theirs.
        return SigningKey.objects.get(name="primary").private_key_pem


def _private_key() -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(_private_key_pem().encode(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("SANDBOX_EHR_PRIVATE_KEY_PEM must be an RSA private key.")
    return key


def _public_jwk(key: rsa.RSAPrivateKey) -> dict:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    # RFC 7638 thumbprint: stable across processes, changes with the key.
    canonical = json.dumps({k: jwk[k] for k in ("e", "kty", "n")}, separators=(",", ":"), sort_keys=True)
    kid = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()
    return {**jwk, "kid": kid, "use": "sig", "alg": ID_TOKEN_ALGORITHM}


def public_jwks() -> dict:
    """The JWKS served at /sandbox-ehr/oauth2/jwks."""
    return {"keys": [_public_jwk(_private_key())]}


def id_token_sign(claims: dict) -> str:
    """Sign an id_token (RS256) with the sandbox's key; the header names the key's kid."""
    key = _private_key()
    return jwt.encode(claims, key, algorithm=ID_TOKEN_ALGORITHM, headers={"kid": _public_jwk(key)["kid"]})
