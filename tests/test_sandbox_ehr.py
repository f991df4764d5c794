"""The sandbox EHR: FHIR flavors, SMART authorization (PKCE, client authentication), FHIR REST.

Most tests talk to it over real HTTP through pytest-django's live_server, as the
connector will. Client keys for private_key_jwt are published by this module's
own URLs (it doubles as a test urlconf), so the JWKS fetch is real HTTP too.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
import uuid
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.core.management import call_command
from django.http import JsonResponse
from django.urls import include, path

from connector.sandbox_ehr.models import AccessToken, Resource
from connector.sandbox_ehr.seed import seed_sandbox_ehr
from connector.sandbox_ehr.testing import deny_sign_in, sign_in_as

REDIRECT_URI = "http://localhost/callback"
CLIENT_ID = "test-connector"

# --- client keys for private_key_jwt, published by this module's urlconf ----------------------------

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP384R1())
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _jwk(key, kid: str, alg: str) -> dict:
    public = key.public_key()
    algorithm = jwt.algorithms.RSAAlgorithm if alg.startswith("RS") else jwt.algorithms.ECAlgorithm
    return {**json.loads(algorithm.to_jwk(public)), "kid": kid, "alg": alg, "use": "sig"}


CLIENT_JWKS = {"keys": [_jwk(RSA_KEY, "rsa-1", "RS384"), _jwk(EC_KEY, "ec-1", "ES384")]}


def client_jwks(request):
    return JsonResponse(CLIENT_JWKS)


urlpatterns = [
    path("test-client/jwks.json", client_jwks),
    path(".well-known/jwks.json", client_jwks),
    path("", include("connector.urls")),
]


# --- fixtures and helpers ----------------------------------------------------------------------------


@pytest.fixture
def sandbox(settings, live_server) -> str:
    """The live server's origin with the sandbox on, demo data loaded and this module's JWKS URLs."""
    settings.SANDBOX_EHR = True
    settings.ROOT_URLCONF = __name__
    seed_sandbox_ehr()
    return live_server.url


def fhir_base(origin: str, flavor: str = "r4") -> str:
    return f"{origin}/sandbox-ehr/fhir/{flavor}"


def token_url(origin: str) -> str:
    return f"{origin}/sandbox-ehr/oauth2/token"


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize_url(origin: str, challenge: str, **overrides: str) -> str:
    params = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "scope": "openid fhirUser user/*.read",
        "state": "state-123",
        "aud": fhir_base(origin),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **overrides,
    }
    return f"{origin}/sandbox-ehr/oauth2/authorize?{urlencode({k: v for k, v in params.items() if v is not None})}"


def redirect_query(response: requests.Response) -> dict[str, str]:
    assert response.status_code == 302, response.text
    location = response.headers["Location"]
    assert location.startswith(REDIRECT_URI)
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def code_for(origin: str, username: str, **overrides: str) -> tuple[str, str]:
    """Sign in as `username` on the sandbox sign-in page; returns (code, code_verifier)."""
    verifier, challenge = pkce()
    session = requests.Session()
    page = session.get(authorize_url(origin, challenge, **overrides), timeout=10)
    assert page.status_code == 200, page.text
    answer = redirect_query(sign_in_as(session, page, username))
    assert answer["state"] == overrides.get("state", "state-123")
    return answer["code"], verifier


def exchange(origin: str, code: str, verifier: str, **extra: str) -> requests.Response:
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
        "client_id": CLIENT_ID,
        **extra,
    }
    return requests.post(token_url(origin), data=data, timeout=10)


def assertion(origin: str, *, key=RSA_KEY, kid: str = "rsa-1", alg: str = "RS384", **claims) -> str:
    now = int(time.time())
    body = {
        "iss": CLIENT_ID,
        "sub": CLIENT_ID,
        "aud": token_url(origin),
        "exp": now + 240,
        "iat": now,
        "jti": str(uuid.uuid4()),
        **claims,
    }
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})


def assertion_form(signed: str) -> dict[str, str]:
    return {
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": signed,
    }


def backend_token(origin: str, scope: str = "system/*.read system/*.write") -> requests.Response:
    data = {"grant_type": "client_credentials", "scope": scope, **assertion_form(assertion(origin))}
    return requests.post(token_url(origin), data=data, timeout=10)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}


# --- on and off -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "/sandbox-ehr/",
        "/sandbox-ehr/fhir/r4/metadata",
        "/sandbox-ehr/fhir/r4/.well-known/smart-configuration",
        "/sandbox-ehr/fhir/r4/Patient/pat-alex",
        "/sandbox-ehr/oauth2/authorize",
        "/sandbox-ehr/oauth2/jwks",
    ],
)
def test_every_sandbox_page_is_not_found_while_the_sandbox_is_off(client, db, settings, url):
    settings.SANDBOX_EHR = False
    assert client.get(url).status_code == 404


def test_the_token_endpoint_is_not_found_while_the_sandbox_is_off(client, db, settings):
    settings.SANDBOX_EHR = False
    assert client.post("/sandbox-ehr/oauth2/token", {"grant_type": "client_credentials"}).status_code == 404


# --- flavors --------------------------------------------------------------------------------------------


def test_the_r4_server_describes_itself_as_fhir_r4_with_smart_oauth_uris(sandbox):
    response = requests.get(f"{fhir_base(sandbox)}/metadata", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/fhir+json"
    statement = response.json()
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"
    rest = statement["rest"][0]
    assert rest["mode"] == "server"
    interactions = {r["type"]: {i["code"] for i in r["interaction"]} for r in rest["resource"]}
    for resource_type in ("Patient", "Practitioner", "Appointment", "Encounter"):
        assert {"read", "search-type", "update"} <= interactions[resource_type]
    assert interactions["AuditEvent"] == {"create"}
    (oauth,) = [e for e in rest["security"]["extension"] if e["url"].endswith("/oauth-uris")]
    uris = {e["url"]: e["valueUri"] for e in oauth["extension"]}
    assert uris == {
        "authorize": f"{sandbox}/sandbox-ehr/oauth2/authorize",
        "token": f"{sandbox}/sandbox-ehr/oauth2/token",
    }


def test_the_smart_configuration_lists_endpoints_methods_and_capabilities(sandbox):
    response = requests.get(f"{fhir_base(sandbox)}/.well-known/smart-configuration", timeout=10)
    assert response.status_code == 200
    config = response.json()
    assert config["issuer"] == fhir_base(sandbox)
    assert config["authorization_endpoint"] == f"{sandbox}/sandbox-ehr/oauth2/authorize"
    assert config["token_endpoint"] == token_url(sandbox)
    assert config["jwks_uri"] == f"{sandbox}/sandbox-ehr/oauth2/jwks"
    assert config["grant_types_supported"] == ["authorization_code", "client_credentials"]
    assert set(config["token_endpoint_auth_methods_supported"]) == {
        "private_key_jwt",
        "client_secret_basic",
        "client_secret_post",
    }
    assert config["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
    assert config["response_types_supported"] == ["code"]
    assert config["code_challenge_methods_supported"] == ["S256"]
    assert {"launch-ehr", "launch-standalone", "context-ehr-encounter", "sso-openid-connect"} <= set(
        config["capabilities"]
    )
    assert "openid" in config["scopes_supported"]


def test_the_second_r4_server_is_a_separate_good_server(sandbox):
    statement = requests.get(f"{fhir_base(sandbox, 'r4-other')}/metadata", timeout=10).json()
    config = requests.get(
        f"{fhir_base(sandbox, 'r4-other')}/.well-known/smart-configuration", timeout=10
    ).json()
    assert statement["fhirVersion"] == "4.0.1"
    assert config["issuer"] == fhir_base(sandbox, "r4-other")


def test_the_dstu2_server_answers_with_a_conformance(sandbox):
    body = requests.get(f"{fhir_base(sandbox, 'dstu2')}/metadata", timeout=10).json()
    assert body["resourceType"] == "Conformance"
    assert body["fhirVersion"] == "1.0.2"
    config = requests.get(f"{fhir_base(sandbox, 'dstu2')}/.well-known/smart-configuration", timeout=10)
    assert config.json()["code_challenge_methods_supported"] == ["S256"]


def test_the_no_smart_server_has_good_metadata_but_no_smart_configuration(sandbox):
    metadata = requests.get(f"{fhir_base(sandbox, 'no-smart')}/metadata", timeout=10)
    assert metadata.json()["fhirVersion"] == "4.0.1"
    config = requests.get(f"{fhir_base(sandbox, 'no-smart')}/.well-known/smart-configuration", timeout=10)
    assert config.status_code == 404


def test_the_no_pkce_server_does_not_offer_s256(sandbox):
    config = requests.get(f"{fhir_base(sandbox, 'no-pkce')}/.well-known/smart-configuration", timeout=10)
    assert "S256" not in config.json().get("code_challenge_methods_supported", [])


def test_the_slow_server_answers_after_the_configured_delay(sandbox, settings):
    settings.SANDBOX_EHR_SLOW_SECONDS = 0.6
    started = time.monotonic()
    response = requests.get(f"{fhir_base(sandbox, 'slow')}/metadata", timeout=10)
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.6
    with pytest.raises(requests.Timeout):
        requests.get(f"{fhir_base(sandbox, 'slow')}/metadata", timeout=0.2)


def test_the_redirect_http_server_redirects_metadata_to_plain_http(sandbox):
    response = requests.get(
        f"{fhir_base(sandbox, 'redirect-http')}/metadata", allow_redirects=False, timeout=10
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "http://example.com/fhir/metadata"


def test_an_unknown_flavor_is_not_found(sandbox):
    response = requests.get(f"{fhir_base(sandbox, 'r5')}/metadata", timeout=10)
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"


# --- authorization code with PKCE -----------------------------------------------------------------------


def test_a_clinician_signs_in_and_gets_an_id_token_that_verifies_against_the_jwks(sandbox):
    code, verifier = code_for(sandbox, "DRSMITH", nonce="n-0S6")
    response = exchange(sandbox, code, verifier)
    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["scope"] == "openid fhirUser user/*.read"
    assert "patient" not in body

    signing_key = jwt.PyJWKClient(f"{sandbox}/sandbox-ehr/oauth2/jwks").get_signing_key_from_jwt(
        body["id_token"]
    )
    claims = jwt.decode(
        body["id_token"], signing_key.key, algorithms=["RS256"], audience=CLIENT_ID, issuer=fhir_base(sandbox)
    )
    assert claims["sub"] == "pract-smith"
    assert claims["fhirUser"] == f"{fhir_base(sandbox)}/Practitioner/pract-smith"
    assert claims["preferred_username"] == "DRSMITH"
    assert claims["nonce"] == "n-0S6"
    assert claims["exp"] > claims["iat"]


def test_the_sign_in_page_lists_clinicians_and_analysts_but_patients_only_for_patient_scopes(sandbox):
    _, challenge = pkce()
    staff_page = requests.get(authorize_url(sandbox, challenge), timeout=10).text
    assert "DRSMITH" in staff_page and "DRPARK" in staff_page and "ANALYST1" in staff_page
    assert "ANALYST2" in staff_page and "PT-ALEX" not in staff_page
    portal_page = requests.get(
        authorize_url(sandbox, challenge, scope="openid patient/*.read"), timeout=10
    ).text
    assert "PT-ALEX" in portal_page


def test_an_analyst_signs_in_with_their_ehr_username(sandbox):
    code, verifier = code_for(sandbox, "ANALYST1", aud=fhir_base(sandbox, "r4-other"))
    id_token = exchange(sandbox, code, verifier).json()["id_token"]
    claims = jwt.decode(id_token, options={"verify_signature": False})
    assert claims["preferred_username"] == "ANALYST1"
    assert claims["iss"] == fhir_base(sandbox, "r4-other")
    assert claims["fhirUser"] == f"{fhir_base(sandbox, 'r4-other')}/Practitioner/pract-analyst1"


def test_a_patient_signing_in_to_the_portal_gets_their_patient_context(sandbox):
    code, verifier = code_for(sandbox, "PT-ALEX", scope="openid fhirUser launch/patient patient/*.read")
    body = exchange(sandbox, code, verifier).json()
    assert body["patient"] == "pat-alex"
    assert body["need_patient_banner"] is False
    claims = jwt.decode(body["id_token"], options={"verify_signature": False})
    assert claims["fhirUser"] == f"{fhir_base(sandbox)}/Patient/pat-alex"


def test_a_wrong_code_verifier_is_refused(sandbox):
    code, _ = code_for(sandbox, "DRSMITH")
    response = exchange(sandbox, code, pkce()[0])
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert "code_verifier" in response.json()["error_description"]


def test_a_code_works_once_and_its_reuse_revokes_the_token(sandbox):
    code, verifier = code_for(sandbox, "DRSMITH")
    first = exchange(sandbox, code, verifier)
    assert first.status_code == 200
    second = exchange(sandbox, code, verifier)
    assert second.status_code == 400
    assert second.json()["error"] == "invalid_grant"
    read = requests.get(
        f"{fhir_base(sandbox)}/Patient/pat-alex", headers=bearer(first.json()["access_token"]), timeout=10
    )
    assert read.status_code == 401


def test_a_code_is_refused_for_another_redirect_uri_or_client(sandbox):
    code, verifier = code_for(sandbox, "DRSMITH")
    assert (
        exchange(sandbox, code, verifier, redirect_uri="http://localhost/other").json()["error"]
        == "invalid_grant"
    )
    assert exchange(sandbox, code, verifier, client_id="someone-else").json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    "overrides",
    [{"code_challenge": None, "code_challenge_method": None}, {"code_challenge_method": "plain"}],
    ids=["no-pkce", "plain-pkce"],
)
def test_authorize_without_s256_pkce_redirects_back_with_invalid_request(sandbox, overrides):
    _, challenge = pkce()
    response = requests.get(authorize_url(sandbox, challenge, **overrides), allow_redirects=False, timeout=10)
    answer = redirect_query(response)
    assert answer["error"] == "invalid_request"
    assert "S256" in answer["error_description"]
    assert answer["state"] == "state-123"


@pytest.mark.parametrize("aud", [None, "https://ehr.example.org/fhir"], ids=["missing", "foreign"])
def test_authorize_with_a_missing_or_foreign_aud_shows_an_error_page(sandbox, aud):
    _, challenge = pkce()
    response = requests.get(authorize_url(sandbox, challenge, aud=aud), allow_redirects=False, timeout=10)
    assert response.status_code == 400
    assert "is not a FHIR server of this EHR" in response.text


def test_authorize_with_a_relative_redirect_uri_shows_an_error_page(sandbox):
    _, challenge = pkce()
    response = requests.get(authorize_url(sandbox, challenge, redirect_uri="/callback"), timeout=10)
    assert response.status_code == 400
    assert "redirect_uri" in response.text


def test_deny_redirects_back_with_access_denied(sandbox):
    _, challenge = pkce()
    session = requests.Session()
    page = session.get(authorize_url(sandbox, challenge), timeout=10)
    answer = redirect_query(deny_sign_in(session, page))
    assert answer == {
        "error": "access_denied",
        "error_description": "The user denied the request.",
        "state": "state-123",
    }


def test_offline_access_gives_a_refresh_token_that_rotates(sandbox):
    code, verifier = code_for(sandbox, "DRPARK", scope="openid fhirUser user/*.read offline_access")
    first = exchange(sandbox, code, verifier).json()
    refresh = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"], "client_id": CLIENT_ID}
    second = requests.post(token_url(sandbox), data=refresh, timeout=10)
    assert second.status_code == 200, second.text
    assert second.json()["access_token"] != first["access_token"]
    assert requests.post(token_url(sandbox), data=refresh, timeout=10).json()["error"] == "invalid_grant"


# --- EHR launch -----------------------------------------------------------------------------------------


def _launch(origin: str, role: str, appointment: str = "appt-1001") -> dict[str, str]:
    session = requests.Session()
    home = session.get(f"{origin}/sandbox-ehr/", timeout=10)
    assert home.status_code == 200
    assert "Start virtual visit (clinician)" in home.text and "Dana Smith" in home.text
    csrf = session.cookies["csrftoken"]
    response = session.post(
        f"{origin}/sandbox-ehr/launch/",
        data={"appointment": appointment, "role": role, "csrfmiddlewaretoken": csrf},
        allow_redirects=False,
        timeout=10,
    )
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert f"{location.scheme}://{location.netloc}" == origin
    return {"path": location.path, **{k: v[0] for k, v in parse_qs(location.query).items()}}


def test_a_clinician_launch_skips_sign_in_and_returns_the_visit_context(sandbox):
    launched = _launch(sandbox, "provider")
    assert launched["path"] == "/launch/provider"
    assert launched["iss"] == fhir_base(sandbox)
    verifier, challenge = pkce()
    response = requests.get(
        authorize_url(
            sandbox,
            challenge,
            scope="launch openid fhirUser user/*.read",
            launch=launched["launch"],
            aud=launched["iss"],
        ),
        allow_redirects=False,
        timeout=10,
    )
    body = exchange(sandbox, redirect_query(response)["code"], verifier).json()
    assert body["patient"] == "pat-alex"
    assert body["encounter"] == "enc-1001"
    assert body["fhirContext"] == [{"reference": "Appointment/appt-1001"}]
    assert body["appointment"] == "90001001"
    assert body["conference_id"] == "CONF-1001"
    assert body["department_id"] == "DEPT-101"
    assert body["need_patient_banner"] is False
    claims = jwt.decode(body["id_token"], options={"verify_signature": False})
    assert claims["preferred_username"] == "DRSMITH"


def test_a_patient_portal_launch_signs_in_the_patient(sandbox, settings):
    settings.SANDBOX_EHR_PATIENT_LAUNCH_URL = "/visit/join"
    launched = _launch(sandbox, "patient", appointment="appt-1002")
    assert launched["path"] == "/visit/join"
    verifier, challenge = pkce()
    response = requests.get(
        authorize_url(
            sandbox, challenge, scope="launch openid fhirUser patient/*.read", launch=launched["launch"]
        ),
        allow_redirects=False,
        timeout=10,
    )
    body = exchange(sandbox, redirect_query(response)["code"], verifier).json()
    assert body["patient"] == "pat-jordan"
    assert jwt.decode(body["id_token"], options={"verify_signature": False})["sub"] == "pat-jordan"


def test_a_launch_is_refused_on_another_server_or_without_the_launch_scope(sandbox):
    launch = _launch(sandbox, "provider")["launch"]
    _, challenge = pkce()
    other = requests.get(
        authorize_url(sandbox, challenge, scope="launch", launch=launch, aud=fhir_base(sandbox, "r4-other")),
        allow_redirects=False,
        timeout=10,
    )
    assert redirect_query(other)["error"] == "invalid_request"
    no_scope = requests.get(
        authorize_url(sandbox, challenge, launch=launch), allow_redirects=False, timeout=10
    )
    assert redirect_query(no_scope)["error"] == "invalid_scope"


# --- client authentication ------------------------------------------------------------------------------


@pytest.mark.parametrize("use_kid", [True, False], ids=["kid", "no-kid"])
def test_private_key_jwt_is_checked_against_the_clients_jwks(sandbox, settings, use_kid):
    settings.SANDBOX_EHR_CLIENT_JWKS_URL = f"{sandbox}/test-client/jwks.json"
    code, verifier = code_for(sandbox, "ANALYST2")
    signed = (
        assertion(sandbox)
        if use_kid
        else jwt.encode(
            jwt.decode(assertion(sandbox), options={"verify_signature": False}), RSA_KEY, algorithm="RS384"
        )
    )
    response = exchange(sandbox, code, verifier, **assertion_form(signed))
    assert response.status_code == 200, response.text
    assert AccessToken.objects.get().client_id == CLIENT_ID


def test_es384_assertions_are_checked_against_the_default_jwks_location(sandbox):
    # No SANDBOX_EHR_CLIENT_JWKS_URL: the sandbox reads {origin}/.well-known/jwks.json.
    response = requests.post(
        token_url(sandbox),
        data={
            "grant_type": "client_credentials",
            "scope": "system/*.read",
            **assertion_form(assertion(sandbox, key=EC_KEY, kid="ec-1", alg="ES384")),
        },
        timeout=10,
    )
    assert response.status_code == 200, response.text


def test_a_replayed_client_assertion_is_refused(sandbox):
    signed = assertion(sandbox)
    data = {"grant_type": "client_credentials", "scope": "system/*.read", **assertion_form(signed)}
    assert requests.post(token_url(sandbox), data=data, timeout=10).status_code == 200
    replay = requests.post(token_url(sandbox), data=data, timeout=10)
    assert replay.status_code == 401
    assert replay.json()["error"] == "invalid_client"
    assert "jti" in replay.json()["error_description"]


@pytest.mark.parametrize(
    ("signed", "complaint"),
    [
        (lambda o: assertion(o, key=OTHER_RSA_KEY), "signature"),
        (lambda o: assertion(o, aud="https://elsewhere.example.org/token"), "aud must be"),
        (lambda o: assertion(o, exp=int(time.time()) + 3600), "5 minutes"),
        (lambda o: assertion(o, exp=int(time.time()) - 120), "expired"),
        (lambda o: assertion(o, sub="someone-else"), "iss and sub"),
        (lambda o: assertion(o, kid="unknown"), "no RSA key with kid unknown"),
        (lambda o: assertion(o, alg="RS256"), "RS384 or ES384"),
    ],
    ids=["wrong-key", "wrong-aud", "too-long", "expired", "sub-differs", "unknown-kid", "rs256"],
)
def test_a_bad_client_assertion_is_refused(sandbox, signed, complaint):
    data = {"grant_type": "client_credentials", "scope": "system/*.read", **assertion_form(signed(sandbox))}
    response = requests.post(token_url(sandbox), data=data, timeout=10)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert complaint in response.json()["error_description"]


def test_client_secret_basic_and_post_use_the_sandbox_secret(sandbox, settings):
    settings.SANDBOX_EHR_CLIENT_SECRET = "s3cret"
    code, verifier = code_for(sandbox, "DRSMITH")
    basic = requests.post(
        token_url(sandbox),
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        },
        auth=(CLIENT_ID, "s3cret"),
        timeout=10,
    )
    assert basic.status_code == 200, basic.text
    code, verifier = code_for(sandbox, "DRSMITH")
    wrong = exchange(sandbox, code, verifier, client_secret="nope")
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid_client"
    assert exchange(sandbox, code, verifier, client_secret="s3cret").status_code == 200


def test_client_credentials_gives_a_system_token_to_private_key_jwt_clients_only(sandbox):
    response = backend_token(sandbox)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["scope"] == "system/*.read system/*.write"
    assert "id_token" not in body and "refresh_token" not in body
    public = requests.post(
        token_url(sandbox), data={"grant_type": "client_credentials", "client_id": CLIENT_ID}, timeout=10
    )
    assert public.status_code == 400
    assert public.json()["error"] == "unauthorized_client"
    user_scope = backend_token(sandbox, scope="user/*.read")
    assert user_scope.json()["error"] == "invalid_scope"


def test_the_token_endpoint_explains_an_unknown_grant_type(sandbox):
    response = requests.post(
        token_url(sandbox), data={"grant_type": "password", "client_id": CLIENT_ID}, timeout=10
    )
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


def test_the_sandbox_signs_with_a_configured_private_key(sandbox, settings):
    from cryptography.hazmat.primitives import serialization

    settings.SANDBOX_EHR_PRIVATE_KEY_PEM = OTHER_RSA_KEY.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    (published,) = requests.get(f"{sandbox}/sandbox-ehr/oauth2/jwks", timeout=10).json()["keys"]
    assert published["n"] == _jwk(OTHER_RSA_KEY, "x", "RS256")["n"]
    assert published["use"] == "sig" and published["alg"] == "RS256" and published["kid"]


# --- FHIR REST ------------------------------------------------------------------------------------------


def test_fhir_rest_needs_a_bearer_token(sandbox):
    anonymous = requests.get(f"{fhir_base(sandbox)}/Patient/pat-alex", timeout=10)
    assert anonymous.status_code == 401
    assert anonymous.json()["resourceType"] == "OperationOutcome"
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    forged = requests.get(f"{fhir_base(sandbox)}/Patient/pat-alex", headers=bearer("forged"), timeout=10)
    assert forged.status_code == 401


def test_fhir_read_and_search_with_a_user_token(sandbox):
    code, verifier = code_for(sandbox, "DRSMITH")
    headers = bearer(exchange(sandbox, code, verifier).json()["access_token"])
    patient = requests.get(f"{fhir_base(sandbox)}/Patient/pat-alex", headers=headers, timeout=10)
    assert patient.status_code == 200
    assert patient.headers["Content-Type"] == "application/fhir+json"
    assert patient.json()["name"][0]["family"] == "Testpatient"
    assert patient.headers["ETag"] == 'W/"1"'

    def search(query: str) -> list[str]:
        bundle = requests.get(f"{fhir_base(sandbox)}/{query}", headers=headers, timeout=10).json()
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
        return [entry["resource"]["id"] for entry in bundle["entry"]]

    assert search("Appointment?patient=pat-alex") == ["appt-1001", "appt-1005"]
    assert search("Encounter?patient=Patient/pat-jordan") == ["enc-1002", "enc-1004"]
    assert search("Practitioner?identifier=urn:sandbox-ehr:username|ANALYST1") == ["pract-analyst1"]
    assert search("Appointment?identifier=90001003") == ["appt-1003"]
    assert search("Encounter?_id=enc-1001,enc-1005") == ["enc-1001", "enc-1005"]
    today = Resource.objects.get(server="r4", fhir_id="appt-1001").body["start"][:10]
    assert search(f"Appointment?date={today}") == ["appt-1001", "appt-1002", "appt-1003"]
    assert search(f"Appointment?date=gt{today}") == ["appt-1004", "appt-1005"]
    missing = requests.get(f"{fhir_base(sandbox)}/Patient/nobody", headers=headers, timeout=10)
    assert missing.status_code == 404
    assert missing.json()["resourceType"] == "OperationOutcome"


def test_a_token_for_one_server_is_refused_by_the_other(sandbox):
    code, verifier = code_for(sandbox, "DRSMITH")
    headers = bearer(exchange(sandbox, code, verifier).json()["access_token"])
    other = requests.get(f"{fhir_base(sandbox, 'r4-other')}/Patient/pat-alex", headers=headers, timeout=10)
    assert other.status_code == 401


def test_the_connector_writes_back_an_encounter_with_a_system_token(sandbox):
    headers = {
        **bearer(backend_token(sandbox).json()["access_token"]),
        "Content-Type": "application/fhir+json",
    }
    url = f"{fhir_base(sandbox)}/Encounter/enc-1001"
    encounter = requests.get(url, headers=headers, timeout=10).json()
    encounter["status"] = "finished"
    encounter["period"] = {"start": "2025-03-01T09:01:00Z", "end": "2025-03-01T09:24:00Z"}
    updated = requests.put(
        url, data=json.dumps(encounter), headers={**headers, "If-Match": 'W/"1"'}, timeout=10
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["meta"]["versionId"] == "2"
    assert Resource.objects.get(server="r4", fhir_id="enc-1001").body["status"] == "finished"
    assert Resource.objects.get(server="r4-other", fhir_id="enc-1001").body["status"] == "planned"

    stale = requests.put(
        url, data=json.dumps(encounter), headers={**headers, "If-Match": 'W/"1"'}, timeout=10
    )
    assert stale.status_code == 412
    encounter["status"] = "done"
    invalid = requests.put(url, data=json.dumps(encounter), headers=headers, timeout=10)
    assert invalid.status_code == 400
    assert "status" in invalid.json()["issue"][0]["diagnostics"]
    encounter["status"] = "finished"
    encounter["period"]["end"] = "2025-03-01T09:24:00"
    naive = requests.put(url, data=json.dumps(encounter), headers=headers, timeout=10)
    assert naive.status_code == 400
    assert "timezone" in naive.json()["issue"][0]["diagnostics"]


def test_a_read_only_token_cannot_update(sandbox):
    code, verifier = code_for(sandbox, "DRSMITH")
    headers = bearer(exchange(sandbox, code, verifier).json()["access_token"])
    url = f"{fhir_base(sandbox)}/Encounter/enc-1001"
    encounter = requests.get(url, headers=headers, timeout=10).json()
    response = requests.put(url, json=encounter, headers=headers, timeout=10)
    assert response.status_code == 403
    assert response.json()["issue"][0]["code"] == "forbidden"


def test_audit_events_and_communications_can_be_created(sandbox):
    headers = bearer(
        backend_token(sandbox, scope="system/AuditEvent.c system/Communication.c").json()["access_token"]
    )
    audit = {
        "resourceType": "AuditEvent",
        "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110100"},
        "recorded": "2025-03-01T09:01:00Z",
        "agent": [{"requestor": True, "who": {"reference": "Practitioner/pract-smith"}}],
        "source": {"observer": {"display": "Open EHR Connector"}},
    }
    created = requests.post(f"{fhir_base(sandbox)}/AuditEvent", json=audit, headers=headers, timeout=10)
    assert created.status_code == 201, created.text
    new_id = created.json()["id"]
    assert created.headers["Location"] == f"{fhir_base(sandbox)}/AuditEvent/{new_id}/_history/1"
    assert Resource.objects.get(resource_type="AuditEvent").fhir_id == new_id
    message = {
        "resourceType": "Communication",
        "status": "completed",
        "subject": {"reference": "Patient/pat-alex"},
    }
    assert requests.post(f"{fhir_base(sandbox)}/Communication", json=message, headers=headers, timeout=10).ok
    incomplete = requests.post(
        f"{fhir_base(sandbox)}/AuditEvent", json={"resourceType": "AuditEvent"}, headers=headers
    )
    assert incomplete.status_code == 400
    assert incomplete.json()["issue"][0]["code"] == "required"
    not_creatable = requests.post(
        f"{fhir_base(sandbox)}/Patient", json={"resourceType": "Patient"}, headers=headers
    )
    assert not_creatable.status_code == 405


def test_the_discovery_only_flavors_serve_no_data(sandbox):
    headers = bearer(backend_token(sandbox).json()["access_token"])
    response = requests.get(f"{fhir_base(sandbox, 'no-smart')}/Patient/pat-alex", headers=headers, timeout=10)
    assert response.status_code == 404


# --- demo data ------------------------------------------------------------------------------------------


def test_seeding_twice_keeps_one_copy_of_the_demo_data(db):
    call_command("seed_sandbox_ehr")
    call_command("seed_sandbox_ehr")
    servers = {"r4", "r4-other", "r4-generic"}
    assert set(Resource.objects.values_list("server", flat=True)) == servers
    r4 = Resource.objects.filter(server="r4")
    assert r4.filter(resource_type="Appointment").count() == 5
    assert r4.filter(resource_type="Encounter").count() == 5
    assert r4.filter(resource_type="Patient").count() == 3
    assert r4.filter(resource_type="Practitioner").count() == 5


def test_the_home_page_lists_the_visits_and_the_demo_users(client, db, settings):
    settings.SANDBOX_EHR = True
    seed_sandbox_ehr()
    page = client.get("/sandbox-ehr/").content.decode()
    assert page.count("Join virtual visit (patient portal)") == 5
    for username in ("DRSMITH", "DRPARK", "ANALYST1", "ANALYST2", "PT-ALEX"):
        assert username in page
