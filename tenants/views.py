"""Sign-in, access requests, the organization switcher and API tokens in the portal."""

from __future__ import annotations

import logging
import secrets

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.cache import add_never_cache_headers
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST
from django_ratelimit.decorators import ratelimit

from connector.api.throttles import TokenManagementThrottle
from connector.forms import add_service_errors
from connector.views import rate_limited
from tenants import services
from tenants.auth_pipeline import REFUSAL_SESSION_KEY
from tenants.forms import AccessRequestForm, ApiTokenForm, MemberInviteForm, MemberRoleForm
from tenants.middleware import ACTIVE_TENANT_SESSION_KEY
from tenants.models import AccessRequest, AccessRequestState, ApiToken, Membership, MembershipInvite, Role
from tenants.regions import layout, region_label
from tenants.scoping import all_tenants
from tenants.selectors import demo_memberships
from tenants.sign_in_defences import demo_sign_in_allowed, demo_sign_in_failed, lockout_message

logger = logging.getLogger(__name__)

DEMO_USERNAME_PREFIX = "demo-"
USED_TOKEN_FORM_IDS_SESSION_KEY = "api_token_form_ids"
# The portal and the API share one budget per person (TokenManagementThrottle, RATE_LIMIT_TOKENS).
TOO_MANY_TOKEN_CHANGES = "Too many API tokens created or revoked in the last hour. Wait and try again."


def home(request: HttpRequest) -> HttpResponse:
    if not request.user.is_authenticated:
        return redirect("tenants:sign-in")
    return redirect("tenants:portal-home")


@ratelimit(key="ip", rate=lambda g, r: settings.SIGN_IN_RATE, method="POST", block=True)
def sign_in(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated and request.method == "GET":
        return redirect("tenants:portal-home")
    demo_users = []
    demo_invites = []
    if settings.DEMO_SIGN_IN:
        demo_users = _demo_users()
        with all_tenants():
            demo_invites = list(
                MembershipInvite.objects.filter(accepted_at=None, withdrawn_at=None)
                .select_related("tenant")
                .order_by("tenant__name", "email")
            )
    return render(
        request,
        "tenants/sign_in.html",
        {
            "demo_users": demo_users,
            "demo_invites": demo_invites,
            "session_expired": request.GET.get("expired") == "1",
            "next": request.GET.get("next", ""),
        },
    )


def _demo_users() -> list[dict]:
    rows = []
    for membership in demo_memberships():
        rows.append(
            {
                "username": membership.user.username,
                "role": membership.get_role_display(),
                "organization": membership.tenant.name,
            }
        )
    return rows


@require_POST
@ratelimit(key="ip", rate=lambda g, r: settings.SIGN_IN_RATE, method="POST", block=True)
def demo_sign_in(request: HttpRequest) -> HttpResponse:
    """The clearly labelled local sign-in of the demo; off whenever Entra ID is configured."""
    if not settings.DEMO_SIGN_IN:
        raise Http404("Demo sign-in is off.")
    invite_pk = request.POST.get("invite", "")
    if invite_pk:
        return _demo_invite_sign_in(request, invite_pk)
    username = request.POST.get("username", "")
    if not demo_sign_in_allowed(request, username):
        messages.error(request, lockout_message(request))
        return redirect("tenants:sign-in")
    user = get_user_model().objects.filter(username=username, is_active=True).first()
    # Or the person whose account-less demo access request was approved (they hold its status link).
    approved = AccessRequest.objects.filter(
        status_token=request.POST.get("access_request", "") or None, state=AccessRequestState.APPROVED
    ).first()
    approved_here = (
        user is not None and approved is not None and _made_for_an_account_less_request(approved, user)
    )
    if user is None or not (username.startswith(DEMO_USERNAME_PREFIX) or approved_here):
        demo_sign_in_failed(request, username)
        messages.error(request, "That is not one of the demo users.")
        return redirect("tenants:sign-in")
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    logger.info("demo sign-in as user %s", user.pk)
    next_url = request.POST.get("next", "")
    if next_url and url_has_allowed_host_and_scheme(next_url, {request.get_host()}, request.is_secure()):
        return redirect(next_url)
    return redirect("tenants:portal-home")


def _demo_invite_sign_in(request: HttpRequest, invite_pk: str) -> HttpResponse:
    """Demo mode: sign in as an invited person (their first sign-in), landing in the organization."""
    with all_tenants():
        invite = (
            MembershipInvite.objects.select_related("tenant")
            .filter(pk=invite_pk if invite_pk.isdigit() else 0, accepted_at=None, withdrawn_at=None)
            .first()
        )
    if invite is None:
        messages.error(request, "That invitation was already used or withdrawn. Pick a demo user instead.")
        return redirect("tenants:sign-in")
    user = services.demo_invite_accept(invite=invite)
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    request.session[ACTIVE_TENANT_SESSION_KEY] = invite.tenant_id
    logger.info("demo sign-in of invitation %s as user %s", invite.pk, user.pk)
    messages.success(request, f"Welcome to {invite.tenant.name}.")
    return redirect("tenants:portal-home")


def sign_in_refused(request: HttpRequest) -> HttpResponse:
    refusal = request.session.get(REFUSAL_SESSION_KEY)
    if not refusal:
        return redirect("tenants:sign-in")
    return render(request, "tenants/sign_in_refused.html", {"refusal": refusal}, status=403)


def access_request_new(request: HttpRequest) -> HttpResponse:
    """The "request access" step: open to a signed-in user or to someone whose
    Microsoft sign-in was just refused (their verified identity is in the session)."""
    refusal = request.session.get(REFUSAL_SESSION_KEY) or {}
    # Demo mode has no Microsoft sign-in: a person without an account types who they are.
    account_less = not request.user.is_authenticated and not refusal.get("email") and settings.DEMO_SIGN_IN
    if not request.user.is_authenticated and not refusal.get("email") and not account_less:
        # Production: Microsoft sign-in first. This page says so (never a redirect that loops
        # back here); an unknown organization's sign-in then comes back to this form.
        return render(request, "tenants/access_request_sign_in_first.html", {"next": request.path})
    initial = {
        "microsoft_tenant_id": refusal.get("tid", ""),
        "organization_name": refusal.get("organization", ""),
    }
    form = AccessRequestForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        regions = layout()
        if regions.is_multi_region and data["data_region"] != regions.current:
            # The request, and later every row of the organization, belongs in its own region.
            return render(
                request,
                "tenants/access_request_other_region.html",
                {
                    "region": region_label(data["data_region"]),
                    "here": region_label(regions.current),
                    "url": regions.base_url(data["data_region"]) + reverse("tenants:access-request"),
                },
            )
        if account_less:
            requester = {"requested_by": None, "requester_email": data["requester_email"]}
        elif request.user.is_authenticated:
            requester = {
                "requested_by": request.user,
                "requester_email": request.user.email or data["requester_email"],
            }
        else:
            requester = {
                "requested_by": None,
                "requester_email": refusal["email"],
                "requester_subject": refusal.get("subject", ""),
            }
            # The tenant ID was verified by Microsoft at sign-in: do not let it be changed.
            data["microsoft_tenant_id"] = refusal.get("tid") or data["microsoft_tenant_id"]
        if not requester["requester_email"]:
            form.add_error("requester_email", "Give an email address we can answer to.")
        else:
            try:
                access_request = services.access_request_create(
                    organization_name=data["organization_name"],
                    microsoft_tenant_id=data["microsoft_tenant_id"],
                    ehr_vendor=data["ehr_vendor"],
                    data_region=data["data_region"],
                    technical_contact_email=data["technical_contact_email"],
                    **requester,
                )
            except ValidationError as error:
                add_service_errors(form, error)
            else:
                messages.success(request, "Your request was sent. Keep the link of this page to follow it.")
                return redirect("tenants:access-request-status", status_token=access_request.status_token)
    return render(
        request,
        "tenants/access_request_form.html",
        {"form": form, "tenant_id_locked": bool(refusal.get("tid")), "account_less": account_less},
    )


def _made_for_an_account_less_request(access_request: AccessRequest, user) -> bool:
    """The account approval made for a demo request sent without an account (no Microsoft identity)."""
    return (
        access_request.state == AccessRequestState.APPROVED
        and access_request.requested_by_id == user.pk
        and not access_request.requester_subject
        and user.get_username() == access_request.requester_email.lower()
        and not user.social_auth.exists()
    )


def access_request_status(request: HttpRequest, status_token: str) -> HttpResponse:
    access_request = get_object_or_404(AccessRequest, status_token=status_token)
    demo_requester_sign_in = (
        settings.DEMO_SIGN_IN
        and access_request.requested_by is not None
        and _made_for_an_account_less_request(access_request, access_request.requested_by)
    )
    return render(
        request,
        "tenants/access_request_status.html",
        {"access_request": access_request, "demo_requester_sign_in": demo_requester_sign_in},
    )


@login_required
def portal_home(request: HttpRequest) -> HttpResponse:
    if request.tenant is None:
        return render(request, "tenants/no_membership.html", status=403)
    return render(request, "tenants/portal_home.html", {})


@login_required
@require_POST
def switch_tenant(request: HttpRequest) -> HttpResponse:
    wanted = request.POST.get("tenant", "")
    membership = next((m for m in request.memberships if str(m.tenant_id) == wanted), None)
    if membership is None:
        raise Http404("You are not a member of that organization.")
    request.session[ACTIVE_TENANT_SESSION_KEY] = membership.tenant_id
    messages.info(request, f"You are now working in {membership.tenant.name}.")
    return redirect("tenants:portal-home")


def _require_role(request: HttpRequest, *roles: str) -> None:
    if request.membership is None or request.membership.role not in roles:
        raise PermissionDenied("Your role in this organization does not allow this page.")


@login_required
def api_tokens(request: HttpRequest) -> HttpResponse:
    """List, create and show a new token's secret once.

    The secret is rendered in the answer to the POST itself (never kept in the
    session, which lives in the database), with `Cache-Control: no-store`. A
    one-time form ID makes a resubmitted form (a reload) create nothing.
    """
    _require_role(request, Role.ADMINISTRATOR)
    form = ApiTokenForm(request.POST or None)
    issued = None
    if request.method == "POST" and form.is_valid():
        if not TokenManagementThrottle().allow_request(request, None):
            return rate_limited(request, message=TOO_MANY_TOKEN_CHANGES)
        if not _form_id_is_fresh(request):
            messages.info(
                request,
                "This form was already sent and its token created; the secret was shown once. "
                "If it was not copied, revoke that token and create another.",
            )
            return redirect("tenants:api-tokens")
        issued = services.api_token_create(
            tenant=request.tenant, created_by=request.user, **form.cleaned_data
        )
        form = ApiTokenForm()
    tokens = ApiToken.objects.select_related("created_by").order_by("-created_at")
    context = {"form": form, "tokens": tokens, "issued": issued, "form_id": secrets.token_urlsafe(16)}
    response = render(request, "tenants/api_tokens.html", context)
    add_never_cache_headers(response)
    return response


def _form_id_is_fresh(request: HttpRequest) -> bool:
    """Remember the last few form IDs (not secrets) so that a resubmitted form is recognised."""
    form_id = request.POST.get("form_id", "")
    used = request.session.get(USED_TOKEN_FORM_IDS_SESSION_KEY, [])
    if form_id and form_id in used:
        return False
    if form_id:
        request.session[USED_TOKEN_FORM_IDS_SESSION_KEY] = [*used, form_id][-10:]
    return True


@login_required
@require_POST
def api_token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    _require_role(request, Role.ADMINISTRATOR)
    if not TokenManagementThrottle().allow_request(request, None):
        return rate_limited(request, message=TOO_MANY_TOKEN_CHANGES)
    token = get_object_or_404(ApiToken, pk=pk)
    services.api_token_revoke(token=token)
    messages.success(request, f"Token {token.name} was revoked; calls with it now fail.")
    return redirect("tenants:api-tokens")


@login_required
def members(request: HttpRequest) -> HttpResponse:
    """Members and open invitations; administrators invite (POST here), change roles and remove."""
    _require_role(request, Role.ADMINISTRATOR, Role.EHR_APPROVER)
    form = MemberInviteForm(request.POST or None)
    status = 200
    if request.method == "POST":
        _require_role(request, Role.ADMINISTRATOR)
        if form.is_valid():
            try:
                invite = services.membership_invite_create(
                    tenant=request.tenant, invited_by=request.user, **form.cleaned_data
                )
            except ValidationError as error:
                add_service_errors(form, error)
            else:
                messages.success(
                    request,
                    f"{invite.email} is invited as {invite.get_role_display()}: they become a member when they "
                    "first sign in with that Microsoft work account.",
                )
                return redirect("tenants:members")
        status = 400
    rows = Membership.objects.select_related("user").order_by("user__username")
    context = {
        "members": [
            {
                "membership": m,
                "form": MemberRoleForm(initial={"role": m.role, "ehr_username": m.ehr_username}),
            }
            for m in rows
        ],
        "invites": MembershipInvite.objects.filter(accepted_at=None, withdrawn_at=None).order_by("email"),
        "form": form,
        "can_manage": request.membership.role == Role.ADMINISTRATOR,
    }
    return render(request, "tenants/members.html", context, status=status)


@login_required
@require_POST
def member_change(request: HttpRequest, pk: int) -> HttpResponse:
    """Change a member's role (administrators; never away from the last administrator)."""
    _require_role(request, Role.ADMINISTRATOR)
    membership = get_object_or_404(Membership.objects.select_related("user"), pk=pk)
    form = MemberRoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose one of the roles: administrator, EHR approver or viewer.")
        return redirect("tenants:members")
    try:
        services.membership_update(membership=membership, **form.cleaned_data)
    except ValidationError as error:
        messages.error(request, f"{membership.user.get_username()}: {' '.join(error.messages)}")
    else:
        messages.success(request, f"{membership.user.get_username()} is now {membership.get_role_display()}.")
    return redirect("tenants:members")


@login_required
@require_POST
def member_remove(request: HttpRequest, pk: int) -> HttpResponse:
    _require_role(request, Role.ADMINISTRATOR)
    membership = get_object_or_404(Membership.objects.select_related("user"), pk=pk)
    try:
        services.membership_delete(membership=membership)
    except ValidationError as error:
        messages.error(request, f"{membership.user.get_username()}: {' '.join(error.messages)}")
    else:
        messages.success(request, f"{membership.user.get_username()} is no longer a member.")
    return redirect("tenants:members")


@login_required
@require_POST
def member_invite_withdraw(request: HttpRequest, pk: int) -> HttpResponse:
    _require_role(request, Role.ADMINISTRATOR)
    invite = get_object_or_404(MembershipInvite, pk=pk)
    if services.membership_invite_withdraw(invite=invite):
        messages.success(request, f"The invitation of {invite.email} was withdrawn.")
    else:
        messages.info(request, f"The invitation of {invite.email} was already used or withdrawn.")
    return redirect("tenants:members")
