"""The connector as a SMART on FHIR client: PKCE, authorize URLs, code exchange, id_token checks.

Used by the EHR approval (a standalone launch with `openid fhirUser`) and by
the visit launches. Every call to the EHR goes through connector/ehr_http.py.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from urllib.parse import urlencode

import jwt
from django.conf import settings
from django.core.cache import cache

from connector.ehr_http import EhrHttpError, ehr_get_json, ehr_post_form
from connector.kept_documents import keep, kept

# An EHR's signing keys are read once an hour, not at every launch. A token signed
# with a key not in the kept set makes one fresh read (the EHR rotated its keys),
# at most once a minute per EHR, so forged key ids cannot make the connector hammer it.
JWKS_CACHE_SECONDS = 3600
JWKS_REFRESH_INTERVAL_SECONDS = 60


class SmartError(Exception):
    """A SMART sign-in step failed; `message` says what to check."""

    def __init__(self, message: str, *, ehr_error: str = "", ehr_description: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.ehr_error = ehr_error
        self.ehr_description = ehr_description


def new_state() -> str:
    """256 random bits, bound to the browser session by the caller."""
    return secrets.token_urlsafe(32)


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge) per RFC 7636."""
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize_url(
    smart_configuration: dict,
    *,
    redirect_uri: str,
    scope: str,
    state: str,
    code_challenge: str,
    aud: str,
    nonce: str | None = None,
    launch: str | None = None,
    client_id: str | None = None,
) -> str:
    params = {
        "response_type": "code",
        "client_id": client_id or settings.SMART_CLIENT_ID,
        "redirect_uri": redirect_uri,
        "scope": scope,
        "state": state,
        "aud": aud,
        "code_challenge": code_challenge,
        "code_challenge_method": "S256",
    }
    if nonce:
        params["nonce"] = nonce
    if launch:
        params["launch"] = launch
    return f"{smart_configuration['authorization_endpoint']}?{urlencode(params)}"


def exchange_code(
    smart_configuration: dict,
    *,
    code: str,
    redirect_uri: str,
    code_verifier: str,
    client_id: str | None = None,
    client_authentication: dict | None = None,
) -> dict:
    """POST the code to the token endpoint; the JSON answer, or SmartError with the EHR's words."""
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": code_verifier,
        "client_id": client_id or settings.SMART_CLIENT_ID,
        **(client_authentication or {}),
    }
    try:
        response = ehr_post_form(smart_configuration["token_endpoint"], data, raise_for_status=False)
    except EhrHttpError as error:
        raise SmartError(f"The EHR's token endpoint could not be used: {error.message}") from error
    body = response.json if isinstance(response.json, dict) else {}
    if response.status != 200 or "access_token" not in body:
        raise SmartError(
            "The EHR refused to finish the sign-in. Check the client registration (client ID and "
            "redirect URI) and the keys registered with the EHR.",
            ehr_error=str(body.get("error", f"HTTP {response.status}")),
            ehr_description=str(body.get("error_description", "")),
        )
    return body


@dataclass(frozen=True)
class EhrIdentity:
    """Who signed in to the EHR, as its id_token says (verified).

    `username` is what pages show: `preferred_username`, else the fhirUser's id, else `sub`.
    `preferred_username` is the claim itself ("" when the EHR sends none, as most do).
    `identifiers` are the Practitioner's identifiers (`system|value`), read only when an
    approval needs them (connector/services/approvals.py).
    """

    subject: str
    fhir_user: str
    username: str
    preferred_username: str = ""
    identifiers: tuple[str, ...] = ()


def absolute_fhir_user(fhir_user: str, base_url: str) -> str:
    """The fhirUser as an absolute URL: a relative reference (`Practitioner/dr1`, as some EHRs send)
    is resolved against the FHIR base URL it came from, so the same id on two servers never merges."""
    fhir_user = (fhir_user or "").strip()
    if not fhir_user or "://" in fhir_user:
        return fhir_user
    return f"{base_url.rstrip('/')}/{fhir_user.lstrip('/')}"


def _jwks_uri(smart_configuration: dict) -> str:
    jwks_uri = smart_configuration.get("jwks_uri")
    if jwks_uri:
        return jwks_uri
    issuer = smart_configuration.get("issuer")
    if not issuer:
        raise SmartError("The EHR publishes no jwks_uri, so its id_token cannot be checked.")
    try:
        openid = ehr_get_json(
            f"{issuer.rstrip('/')}/.well-known/openid-configuration", accept="application/json"
        )
    except EhrHttpError as error:
        raise SmartError(f"The EHR's OpenID configuration could not be read: {error.message}") from error
    jwks_uri = openid.json.get("jwks_uri") if isinstance(openid.json, dict) else None
    if not jwks_uri:
        raise SmartError("The EHR publishes no jwks_uri, so its id_token cannot be checked.")
    return jwks_uri


def _jwks_cache_key(smart_configuration: dict) -> str:
    identity = smart_configuration.get("jwks_uri") or smart_configuration.get("issuer") or ""
    return "ehr-jwks:" + hashlib.sha256(identity.encode()).hexdigest()


def _jwks_for(smart_configuration: dict, *, fresh: bool = False) -> jwt.PyJWKSet:
    """The EHR's signing keys: kept for an hour; `fresh` reads them again (rotation)."""
    key = _jwks_cache_key(smart_configuration)
    if not fresh:
        keys = kept(key)  # this process's copy, already parsed (connector/kept_documents.py)
        if keys is not None:
            return keys
    document = None if fresh else cache.get(key)
    if document is not None:
        keys = jwt.PyJWKSet.from_dict(document)
        keep(key, keys)
        return keys
    try:
        document = ehr_get_json(_jwks_uri(smart_configuration), accept="application/json").json
    except EhrHttpError as error:
        raise SmartError(f"The EHR's signing keys could not be fetched: {error.message}") from error
    try:
        keys = jwt.PyJWKSet.from_dict(document)
    except (jwt.PyJWTError, AttributeError, TypeError, KeyError) as error:
        raise SmartError("The EHR's signing keys (JWKS) could not be read.") from error
    cache.set(key, document, JWKS_CACHE_SECONDS)  # kept only once it proved readable
    keep(key, keys)
    return keys


def _signing_key(keys: jwt.PyJWKSet, key_id: str | None) -> jwt.PyJWK | None:
    key = next((k for k in keys.keys if k.key_id == key_id), None)
    if key is None and len(keys.keys) == 1 and not key_id:
        key = keys.keys[0]
    return key


def _may_read_keys_again(smart_configuration: dict) -> bool:
    return cache.add(_jwks_cache_key(smart_configuration) + ":refreshed", 1, JWKS_REFRESH_INTERVAL_SECONDS)


def verify_id_token(
    id_token: str,
    *,
    smart_configuration: dict,
    expected_issuers: list[str],
    client_id: str | None = None,
    nonce: str | None = None,
) -> EhrIdentity:
    """Check signature (JWKS), issuer, audience, expiry and nonce of an EHR id_token."""
    try:
        header = jwt.get_unverified_header(id_token)
    except jwt.PyJWTError as error:
        raise SmartError("The EHR's id_token is not a JWT.") from error
    key = _signing_key(_jwks_for(smart_configuration), header.get("kid"))
    if key is None and _may_read_keys_again(smart_configuration):
        key = _signing_key(_jwks_for(smart_configuration, fresh=True), header.get("kid"))
    if key is None:
        raise SmartError("The id_token was signed with a key the EHR does not publish; check the EHR's keys.")
    try:
        claims = jwt.decode(
            id_token,
            key=key.key,
            algorithms=["RS256", "RS384", "ES256", "ES384"],
            audience=client_id or settings.SMART_CLIENT_ID,
            options={"require": ["exp", "iat", "iss", "sub", "aud"]},
            leeway=30,
        )
    except jwt.ExpiredSignatureError as error:
        raise SmartError("The EHR's id_token has expired; sign in to the EHR again.") from error
    except jwt.InvalidAudienceError as error:
        raise SmartError(
            "The id_token was issued to another client: check the client ID registered in the EHR."
        ) from error
    except jwt.PyJWTError as error:
        raise SmartError(f"The EHR's id_token is not valid ({type(error).__name__}).") from error
    normalized = {i.rstrip("/") for i in expected_issuers if i}
    if str(claims.get("iss", "")).rstrip("/") not in normalized:
        raise SmartError("The id_token comes from another issuer than this EHR endpoint.")
    if nonce is not None and claims.get("nonce") != nonce:
        raise SmartError("The id_token does not answer this sign-in (nonce mismatch); sign in again.")
    fhir_user = str(claims.get("fhirUser") or claims.get("profile") or "")
    preferred = str(claims.get("preferred_username") or "")
    username = preferred or fhir_user.rsplit("/", 1)[-1] or str(claims["sub"])
    return EhrIdentity(
        subject=str(claims["sub"]), fhir_user=fhir_user, username=username, preferred_username=preferred
    )


def expected_issuers(base_url: str, smart_configuration: dict) -> list[str]:
    return [base_url, smart_configuration.get("issuer", "")]


__all__ = [
    "EhrIdentity",
    "absolute_fhir_user",
    "SmartError",
    "authorize_url",
    "exchange_code",
    "expected_issuers",
    "new_state",
    "pkce_pair",
    "verify_id_token",
]
