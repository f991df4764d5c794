"""The sandbox EHR's SMART authorization server (a development peer): authorize, token, JWKS.

Authorization code with PKCE (S256 only) for EHR and standalone launches, client
credentials for SMART Backend Services, refresh tokens for offline_access. The
sign-in page lets anyone pick a demo user: there are no passwords in the sandbox.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from django.core import signing
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from connector.sandbox_ehr.client_auth import Client, client_authenticate
from connector.sandbox_ehr.common import OAuthError, sandbox_only
from connector.sandbox_ehr.flavors import FLAVORS, Flavor, fhir_base_url, flavor_for_base_url
from connector.sandbox_ehr.keys import public_jwks
from connector.sandbox_ehr.scopes import is_patient_facing, is_system_only
from connector.sandbox_ehr.selectors import launch_get_valid, user_get, users_for_sign_in
from connector.sandbox_ehr.services import code_issue, code_redeem, launch_context, token_issue, token_refresh

AUTHORIZE_PARAMS = (
    "response_type", "client_id", "redirect_uri", "scope", "state", "aud",
    "code_challenge", "code_challenge_method", "launch", "nonce",
)  # fmt: skip
_SIGNING_SALT = "sandbox_ehr.authorize"
_SIGNED_MAX_AGE_SECONDS = 600
# The "try it" client on the sandbox home page: a fixed PKCE pair, fine for a demo page only.
TRY_CLIENT_ID = "sandbox-try-it"
TRY_VERIFIER = "sandbox-try-it-code-verifier-0123456789-abcdefghij"
TRY_CHALLENGE = "I47VG_O58yoQQ399rW42_nQT5WNa5P-fJSDnIyUEGJ0"  # S256 of TRY_VERIFIER


class _ShowError(Exception):
    """A problem the user sees on a page: the redirect_uri or the client cannot be trusted."""


class _RedirectError(Exception):
    """A problem sent back to the client's redirect_uri (RFC 6749 section 4.1.2.1)."""

    def __init__(self, error: str, description: str):
        super().__init__(description)
        self.error, self.description = error, description


def _redirect(redirect_uri: str, **params: str) -> HttpResponseRedirect:
    parts = urlsplit(redirect_uri)
    query = parse_qsl(parts.query, keep_blank_values=True) + [(k, v) for k, v in params.items() if v]
    return HttpResponseRedirect(urlunsplit(parts._replace(query=urlencode(query))))


def _error_page(request: HttpRequest, message: str) -> HttpResponse:
    return render(
        request, "sandbox_ehr/error.html", {"title": "Sign-in refused", "message": message}, status=400
    )


def _check(request: HttpRequest, params: dict) -> Flavor:
    """Validate an authorization request in RFC 6749 order: first what decides where errors may go."""
    redirect = urlsplit(params["redirect_uri"])
    if redirect.scheme not in ("http", "https") or not redirect.netloc or redirect.fragment:
        raise _ShowError("redirect_uri must be an absolute http(s) URL without a fragment.")
    if not params["client_id"]:
        raise _ShowError("client_id is missing.")
    flavor = flavor_for_base_url(request, params["aud"])
    if flavor is None:
        known = ", ".join(fhir_base_url(request, name) for name in FLAVORS)
        raise _ShowError(f"aud '{params['aud']}' is not a FHIR server of this EHR. Use one of: {known}.")
    if params["response_type"] != "code":
        raise _RedirectError("unsupported_response_type", "response_type must be code.")
    if params["code_challenge_method"] != "S256" or not params["code_challenge"]:
        raise _RedirectError(
            "invalid_request", "PKCE is required: send code_challenge with code_challenge_method=S256."
        )
    if not params["scope"]:
        raise _RedirectError("invalid_scope", "scope is missing.")
    return flavor


def _issue(params: dict, flavor: Flavor, user_reference: str, context: dict) -> HttpResponseRedirect:
    code = code_issue(
        client_id=params["client_id"],
        redirect_uri=params["redirect_uri"],
        scope=params["scope"],
        server=flavor.name,
        code_challenge=params["code_challenge"],
        nonce=params["nonce"],
        user_reference=user_reference,
        context=context,
    )
    return _redirect(params["redirect_uri"], code=code, state=params["state"])


def _launched(params: dict, flavor: Flavor) -> HttpResponseRedirect:
    """An EHR launch: the user is the one who launched, so no sign-in page."""
    launch = launch_get_valid(params["launch"])
    if launch is None:
        raise _RedirectError(
            "invalid_request", "The launch is unknown or expired (launches live 10 minutes)."
        )
    if launch.server != flavor.name:
        raise _RedirectError(
            "invalid_request", f"The launch belongs to the {launch.server} server, not {flavor.name}."
        )
    if "launch" not in params["scope"].split():
        raise _RedirectError("invalid_scope", "An EHR launch needs the launch scope.")
    return _issue(params, flavor, launch.user_reference, launch_context(launch))


def _chosen(request: HttpRequest, params: dict, flavor: Flavor) -> HttpResponse:
    """The sign-in page's answer: a user, or Deny."""
    if "deny" in request.POST:
        raise _RedirectError("access_denied", "The user denied the request.")
    user = user_get(server=flavor.name, reference=request.POST.get("user", ""))
    patient_facing = is_patient_facing(params["scope"])
    if user is None or (user.resource_type == "Patient" and not patient_facing):
        raise _ShowError("Pick one of the users listed on the sign-in page.")
    context = {"patient": user.fhir_id} if user.resource_type == "Patient" and patient_facing else {}
    return _issue(params, flavor, user.reference, context)


@sandbox_only
@require_http_methods(["GET", "POST"])
def authorize(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        try:
            params = signing.loads(
                request.POST.get("request", ""), salt=_SIGNING_SALT, max_age=_SIGNED_MAX_AGE_SECONDS
            )
        except signing.BadSignature:
            return _error_page(request, "The sign-in form expired or was altered. Start again from the app.")
    else:
        params = {name: request.GET.get(name, "") for name in AUTHORIZE_PARAMS}
    try:
        flavor = _check(request, params)
        if request.method == "POST":
            return _chosen(request, params, flavor)
        if params["launch"]:
            return _launched(params, flavor)
    except _ShowError as error:
        return _error_page(request, str(error))
    except _RedirectError as error:
        return _redirect(
            params["redirect_uri"],
            error=error.error,
            error_description=error.description,
            state=params["state"],
        )
    patient_facing = is_patient_facing(params["scope"])
    context = {
        "params": params,
        "signed_request": signing.dumps(params, salt=_SIGNING_SALT),
        "server": fhir_base_url(request, flavor.name),
        "scopes": params["scope"].split(),
        "staff": users_for_sign_in(server=flavor.name, resource_type="Practitioner") if flavor.data else [],
        "patients": users_for_sign_in(server=flavor.name, resource_type="Patient")
        if flavor.data and patient_facing
        else [],
    }
    return render(request, "sandbox_ehr/sign_in.html", context)


def _grant_authorization_code(request: HttpRequest, client: Client) -> dict:
    for name in ("code", "redirect_uri", "code_verifier"):
        if not request.POST.get(name):
            raise OAuthError("invalid_request", f"{name} is required for grant_type=authorization_code.")
    code = code_redeem(
        code=request.POST["code"],
        client_id=client.client_id,
        redirect_uri=request.POST["redirect_uri"],
        code_verifier=request.POST["code_verifier"],
    )
    return token_issue(
        client_id=client.client_id,
        scope=code.scope,
        server=code.server,
        issuer=fhir_base_url(request, code.server),
        user_reference=code.user_reference,
        context=code.context,
        nonce=code.nonce,
        code=code,
    )


def _grant_client_credentials(request: HttpRequest, client: Client) -> dict:
    if client.method != "private_key_jwt":
        raise OAuthError(
            "unauthorized_client", "client_credentials needs private_key_jwt client authentication."
        )
    scope = request.POST.get("scope", "")
    if not is_system_only(scope):
        raise OAuthError(
            "invalid_scope", "SMART Backend Services ask for system/ scopes only, e.g. system/*.read."
        )
    return token_issue(client_id=client.client_id, scope=scope)


@csrf_exempt  # called by servers, authenticated by client credentials, not by a browser session
@sandbox_only
@require_POST
def token(request: HttpRequest) -> HttpResponse:
    if request.content_type != "application/x-www-form-urlencoded":
        error = OAuthError("invalid_request", "Send the token request as application/x-www-form-urlencoded.")
        return error.response()
    try:
        client = client_authenticate(request)
        grant_type = request.POST.get("grant_type", "")
        if grant_type == "authorization_code":
            body = _grant_authorization_code(request, client)
        elif grant_type == "client_credentials":
            body = _grant_client_credentials(request, client)
        elif grant_type == "refresh_token":
            issuers = {name: fhir_base_url(request, name) for name in FLAVORS}
            body = token_refresh(
                refresh_token=request.POST.get("refresh_token", ""),
                client_id=client.client_id,
                issuer_for=issuers,
            )
        else:
            raise OAuthError(
                "unsupported_grant_type",
                "grant_type must be authorization_code, client_credentials or refresh_token.",
            )
    except OAuthError as error:
        return error.response()
    return JsonResponse(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


@sandbox_only
@require_GET
def jwks(request: HttpRequest) -> JsonResponse:
    return JsonResponse(public_jwks())


@sandbox_only
@require_GET
def try_callback(request: HttpRequest) -> HttpResponse:
    """Where the home page's "try the sign-in" client lands: shows the code and can exchange it."""
    context = {
        "received": sorted(request.GET.items()),
        "code": request.GET.get("code", ""),
        "token_url": reverse("sandbox_ehr:token"),
        "redirect_uri": request.build_absolute_uri(reverse("sandbox_ehr:try-callback")),
        "client_id": TRY_CLIENT_ID,
        "code_verifier": TRY_VERIFIER,
    }
    return render(request, "sandbox_ehr/try_callback.html", context)
