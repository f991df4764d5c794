"""Client authentication at the sandbox token endpoint (RFC 6749 section 2.3, RFC 7523, SMART).

Four ways, one per request: none (a public client names itself with client_id),
client_secret_basic, client_secret_post (any client_id, the secret is
`SANDBOX_EHR_CLIENT_SECRET`), and private_key_jwt (an RS384 or ES384 assertion
checked against the client's JWKS, fetched from `SANDBOX_EHR_CLIENT_JWKS_URL`
or `{origin}/.well-known/jwks.json`).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote_plus

import jwt
import requests
from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone

from connector.sandbox_ehr.common import OAuthError
from connector.sandbox_ehr.models import ClientAssertionUse

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGORITHMS = ["RS384", "ES384"]
MAX_ASSERTION_LIFETIME = timedelta(minutes=5)
CLOCK_SKEW_SECONDS = 30
JWKS_FETCH_TIMEOUT_SECONDS = 5
_BASIC_CHALLENGE = {"WWW-Authenticate": 'Basic realm="sandbox-ehr"'}


@dataclass(frozen=True)
class Client:
    client_id: str
    method: str  # none, client_secret_basic, client_secret_post or private_key_jwt


def _client_secret() -> str:
    return getattr(settings, "SANDBOX_EHR_CLIENT_SECRET", "sandbox-secret")


def client_jwks_url(request: HttpRequest) -> str:
    return getattr(settings, "SANDBOX_EHR_CLIENT_JWKS_URL", "") or request.build_absolute_uri(
        "/.well-known/jwks.json"
    )


def client_authenticate(request: HttpRequest) -> Client:
    """Who is calling the token endpoint. Raises OAuthError (invalid_client, invalid_request)."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    uses_basic = header[:6].lower() == "basic "
    uses_assertion = "client_assertion" in request.POST or "client_assertion_type" in request.POST
    uses_post_secret = "client_secret" in request.POST
    if uses_basic + uses_assertion + uses_post_secret > 1:
        raise OAuthError("invalid_request", "Use exactly one client authentication method per request.")
    body_client_id = request.POST.get("client_id", "")
    if uses_basic:
        client_id, secret = _basic_credentials(header[6:])
        if body_client_id and body_client_id != client_id:
            raise OAuthError("invalid_request", "client_id in the body differs from the Basic credentials.")
        _check_secret(secret, status=401, headers=_BASIC_CHALLENGE)
        return Client(client_id, "client_secret_basic")
    if uses_assertion:
        return Client(_assertion_client_id(request, body_client_id), "private_key_jwt")
    if not body_client_id:
        raise OAuthError(
            "invalid_client", "Name the client: client_id, Basic credentials or a client assertion.", 401
        )
    if uses_post_secret:
        _check_secret(request.POST["client_secret"], status=401)
        return Client(body_client_id, "client_secret_post")
    return Client(body_client_id, "none")


def _basic_credentials(encoded: str) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as error:
        raise OAuthError(
            "invalid_client", "The Basic credentials are not base64.", 401, _BASIC_CHALLENGE
        ) from error
    client_id, colon, secret = decoded.partition(":")
    if not colon or not client_id:
        raise OAuthError(
            "invalid_client", "The Basic credentials must be client_id:client_secret.", 401, _BASIC_CHALLENGE
        )
    # RFC 6749 section 2.3.1: both halves are form-urlencoded before base64.
    return unquote_plus(client_id), unquote_plus(secret)


def _check_secret(secret: str, *, status: int, headers: dict | None = None) -> None:
    if not hmac.compare_digest(secret.encode(), _client_secret().encode()):
        raise OAuthError("invalid_client", "The client secret is wrong.", status, headers)


def _fetch_jwks(url: str) -> list[jwt.PyJWK]:
    try:
        response = requests.get(url, timeout=JWKS_FETCH_TIMEOUT_SECONDS)
        response.raise_for_status()
        return jwt.PyJWKSet.from_dict(response.json()).keys
    except (requests.RequestException, ValueError, jwt.PyJWTError) as error:
        raise OAuthError(
            "invalid_client", f"Could not read the client's JWKS at {url}: {error}", 401
        ) from error


def _assertion_client_id(request: HttpRequest, body_client_id: str) -> str:
    """Verify a private_key_jwt assertion (SMART Backend Services rules) and return its client_id."""
    if request.POST.get("client_assertion_type") != JWT_BEARER:
        raise OAuthError("invalid_request", f"client_assertion_type must be {JWT_BEARER}.")
    assertion = request.POST.get("client_assertion", "")
    try:
        header = jwt.get_unverified_header(assertion)
        unverified = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError as error:
        raise OAuthError("invalid_client", f"client_assertion is not a JWT: {error}", 401) from error
    algorithm = header.get("alg")
    if algorithm not in ASSERTION_ALGORITHMS:
        raise OAuthError(
            "invalid_client", f"client_assertion must be signed RS384 or ES384, not {algorithm}.", 401
        )
    client_id = unverified.get("iss")
    if not client_id or unverified.get("sub") != client_id:
        raise OAuthError("invalid_client", "client_assertion's iss and sub must both be the client_id.", 401)
    if body_client_id and body_client_id != client_id:
        raise OAuthError("invalid_client", "client_id differs from the client_assertion's iss.", 401)

    url = client_jwks_url(request)
    kid = header.get("kid")
    key_type = "RSA" if algorithm.startswith("RS") else "EC"
    keys = [k for k in _fetch_jwks(url) if k.key_type == key_type and (kid is None or k.key_id == kid)]
    if not keys:
        raise OAuthError("invalid_client", f"The JWKS at {url} has no {key_type} key with kid {kid}.", 401)
    token_url = request.build_absolute_uri(reverse("sandbox_ehr:token"))
    claims = None
    for key in keys:
        try:
            claims = jwt.decode(
                assertion,
                key.key,
                algorithms=[algorithm],
                audience=token_url,
                issuer=client_id,
                leeway=CLOCK_SKEW_SECONDS,
                options={"require": ["iss", "sub", "aud", "exp", "jti"]},
            )
            break
        except jwt.InvalidSignatureError:
            continue
        except jwt.InvalidAudienceError as error:
            raise OAuthError("invalid_client", f"client_assertion's aud must be {token_url}.", 401) from error
        except jwt.PyJWTError as error:
            raise OAuthError("invalid_client", f"client_assertion refused: {error}", 401) from error
    if claims is None:
        raise OAuthError("invalid_client", f"client_assertion's signature matches no key at {url}.", 401)
    expires = datetime.fromtimestamp(claims["exp"], tz=UTC)
    if expires > timezone.now() + MAX_ASSERTION_LIFETIME + timedelta(seconds=CLOCK_SKEW_SECONDS):
        raise OAuthError("invalid_client", "client_assertion's exp must be at most 5 minutes ahead.", 401)
    _remember_jti(client_id, str(claims["jti"]), expires)
    return client_id


def _remember_jti(client_id: str, jti: str, expires) -> None:
    ClientAssertionUse.objects.filter(expires_at__lt=timezone.now() - timedelta(minutes=10)).delete()
    try:
        with transaction.atomic():
            ClientAssertionUse.objects.create(client_id=client_id, jti=jti, expires_at=expires)
    except IntegrityError as error:
        raise OAuthError(
            "invalid_client", "client_assertion's jti was already used (a replay).", 401
        ) from error
