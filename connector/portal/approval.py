"""Step 3 (Epic): the EHR analyst signs in to the EHR and approves or rejects each endpoint.

The EHR sign-in is a SMART standalone launch against the endpoint's own
authorization server: authorization code with PKCE S256 and a `state` of 256
random bits kept in this browser session, single use. The verified EHR identity
is kept in the session for a few minutes only, for the decision that follows.
"""

from __future__ import annotations

import logging
import secrets
import time

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from connector.ehr_http import EhrHttpError
from connector.endpoint_checks import fetch_smart_configuration
from connector.models import EndpointApproval, EndpointStatus, FhirEndpoint
from connector.portal.forms import DecisionForm
from connector.portal.views import require_role, wizard_context
from connector.services.approvals import (
    APPROVAL_SCOPE,
    approval_grant,
    approval_reject,
    approver_identity_complete,
    approver_is_configured,
)
from connector.signing_keys import client_authentication
from connector.smart import (
    EhrIdentity,
    SmartError,
    authorize_url,
    exchange_code,
    expected_issuers,
    new_state,
    pkce_pair,
    verify_id_token,
)
from tenants.models import EhrVendor, Role

logger = logging.getLogger(__name__)

PENDING_KEY = "ehr_approval_pending"  # state -> what the callback needs
IDENTITY_KEY = "ehr_approval_identity"
SIGN_IN_MAX_AGE = 600  # seconds between leaving for the EHR and coming back
DECISION_MAX_AGE = 600  # seconds a verified EHR sign-in stays good for a decision


def _callback_uri(request: HttpRequest) -> str:
    return request.build_absolute_uri(reverse("portal:approval-callback"))


@login_required
def approve(request: HttpRequest) -> HttpResponse:
    require_role(request, Role.ADMINISTRATOR, Role.EHR_APPROVER)
    if request.tenant.ehr_vendor != EhrVendor.EPIC:
        return render(request, "portal/approve_not_needed.html", wizard_context(request, "review"))
    endpoints = FhirEndpoint.objects.exclude(status=EndpointStatus.DISABLED).order_by("environment", "label")
    history = EndpointApproval.objects.select_related("endpoint", "decided_by")[:50]
    return render(
        request,
        "portal/approve.html",
        wizard_context(
            request,
            "approve",
            endpoints=endpoints,
            history=history,
            can_approve=request.membership.role == Role.EHR_APPROVER,
        ),
    )


@login_required
@require_POST
def approval_begin(request: HttpRequest, pk: int) -> HttpResponse:
    """Send the approver to the EHR's sign-in for this endpoint."""
    require_role(request, Role.EHR_APPROVER)
    endpoint = get_object_or_404(FhirEndpoint, pk=pk)
    if endpoint.status != EndpointStatus.AWAITING_APPROVAL:
        messages.error(
            request, f"{endpoint.label} is {endpoint.get_status_display().lower()}, not awaiting approval."
        )
        return redirect("portal:approve")
    try:
        configuration = fetch_smart_configuration(endpoint.base_url)
    except EhrHttpError as error:
        messages.error(request, f"The EHR sign-in could not start: {error.message}")
        return redirect("portal:approve")
    verifier, challenge = pkce_pair()
    state = new_state()
    nonce = secrets.token_urlsafe(16)
    pending = request.session.get(PENDING_KEY, {})
    # Keep only recent attempts: a few tabs may be open at once.
    pending = {k: v for k, v in pending.items() if time.time() - v["at"] < SIGN_IN_MAX_AGE}
    pending[state] = {"endpoint": endpoint.pk, "verifier": verifier, "nonce": nonce, "at": time.time()}
    request.session[PENDING_KEY] = pending
    return redirect(
        authorize_url(
            configuration,
            redirect_uri=_callback_uri(request),
            scope=APPROVAL_SCOPE,
            state=state,
            code_challenge=challenge,
            aud=endpoint.base_url,
            nonce=nonce,
            client_id=endpoint.client_id,
        )
    )


def _sign_in_failed(request: HttpRequest, endpoint: FhirEndpoint | None, error: SmartError) -> HttpResponse:
    logger.info("EHR sign-in for approval failed: %s", error.ehr_error or error.message)
    return render(
        request,
        "portal/approval_failed.html",
        {"endpoint": endpoint, "error": error},
        status=400,
    )


@login_required
def approval_callback(request: HttpRequest) -> HttpResponse:
    """The EHR sends the approver back here with a code (or an error) and the state."""
    require_role(request, Role.EHR_APPROVER)
    state = request.GET.get("state", "")
    pending = request.session.get(PENDING_KEY, {})
    attempt = pending.pop(state, None) if state else None
    request.session[PENDING_KEY] = pending  # single use, whatever happens next
    if attempt is None or time.time() - attempt["at"] > SIGN_IN_MAX_AGE:
        return _sign_in_failed(
            request,
            None,
            SmartError(
                "This EHR sign-in does not belong to this browser session, was already used, or took too long. "
                "Start the approval again from the portal."
            ),
        )
    endpoint = get_object_or_404(FhirEndpoint, pk=attempt["endpoint"])
    if request.GET.get("error"):
        return _sign_in_failed(
            request,
            endpoint,
            SmartError(
                "The EHR did not sign you in. Check that the connector's client is registered in the EHR "
                "with this redirect URI, and that your EHR account may use it.",
                ehr_error=request.GET.get("error", ""),
                ehr_description=request.GET.get("error_description", ""),
            ),
        )
    try:
        configuration = fetch_smart_configuration(endpoint.base_url)
        tokens = exchange_code(
            configuration,
            code=request.GET.get("code", ""),
            redirect_uri=_callback_uri(request),
            code_verifier=attempt["verifier"],
            client_id=endpoint.client_id,
            client_authentication=client_authentication(
                client_id=endpoint.client_id, token_endpoint=configuration["token_endpoint"]
            ),
        )
        if "id_token" not in tokens:
            raise SmartError(
                "The EHR returned no id_token: the client must be allowed the openid and fhirUser scopes."
            )
        identity = verify_id_token(
            tokens["id_token"],
            smart_configuration=configuration,
            expected_issuers=expected_issuers(endpoint.base_url, configuration),
            nonce=attempt["nonce"],
            client_id=endpoint.client_id,
        )
    except EhrHttpError as error:
        return _sign_in_failed(request, endpoint, SmartError(error.message))
    except SmartError as error:
        return _sign_in_failed(request, endpoint, error)
    # Only when neither the username nor the fhirUser matched: read the Practitioner's identifiers.
    identity = approver_identity_complete(
        endpoint=endpoint, identity=identity, access_token=str(tokens.get("access_token") or "")
    )
    if not approver_is_configured(endpoint=endpoint, identity=identity):
        return _sign_in_failed(
            request,
            endpoint,
            SmartError(
                f"You signed in to the EHR as {identity.username}"
                + (f" ({identity.fhir_user})" if identity.fhir_user else "")
                + ", who is not one of the approvers configured for your organization. An administrator can "
                "add your EHR username, your fhirUser or your Practitioner identifier in step 1."
            ),
        )
    # The tokens are dropped here; only who signed in is kept, briefly.
    request.session[IDENTITY_KEY] = {
        "endpoint": endpoint.pk,
        "subject": identity.subject,
        "fhir_user": identity.fhir_user,
        "username": identity.username,
        "preferred_username": identity.preferred_username,
        "identifiers": list(identity.identifiers),
        "at": time.time(),
    }
    return redirect("portal:approval-decide", pk=endpoint.pk)


def _verified_identity(request: HttpRequest, endpoint: FhirEndpoint) -> EhrIdentity | None:
    data = request.session.get(IDENTITY_KEY)
    if not data or data["endpoint"] != endpoint.pk or time.time() - data["at"] > DECISION_MAX_AGE:
        return None
    return EhrIdentity(
        subject=data["subject"],
        fhir_user=data["fhir_user"],
        username=data["username"],
        preferred_username=data.get("preferred_username", ""),
        identifiers=tuple(data.get("identifiers") or ()),
    )


@login_required
def approval_decide(request: HttpRequest, pk: int) -> HttpResponse:
    require_role(request, Role.EHR_APPROVER)
    endpoint = get_object_or_404(FhirEndpoint, pk=pk)
    identity = _verified_identity(request, endpoint)
    if identity is None:
        messages.error(request, "Sign in to the EHR first; the decision needs a fresh EHR sign-in.")
        return redirect("portal:approve")
    form = DecisionForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        decide = approval_grant if form.cleaned_data["decision"] == "approve" else approval_reject
        try:
            decide(
                endpoint=endpoint,
                decided_by=request.user,
                identity=identity,
                comment=form.cleaned_data["comment"],
            )
        except ValidationError as error:
            form.add_error(
                "comment" if "comment" in getattr(error, "message_dict", {}) else None, error.messages
            )
        except PermissionDenied as error:
            form.add_error(None, str(error))
        else:
            request.session.pop(IDENTITY_KEY, None)
            endpoint.refresh_from_db()
            messages.success(request, f"{endpoint.label}: {endpoint.get_status_display()}.")
            return redirect("portal:approve")
    return render(
        request,
        "portal/approval_decide.html",
        wizard_context(request, "approve", endpoint=endpoint, identity=identity, form=form),
    )
