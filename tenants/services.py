"""Writes for organizations: access requests, memberships, API tokens."""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django_q.tasks import async_task

from tenants.models import (
    AccessRequest,
    AccessRequestState,
    ApiToken,
    Membership,
    MembershipInvite,
    Role,
    Tenant,
    TenantStatus,
    TokenScope,
    normalize_microsoft_tenant_id,
    validate_microsoft_tenant_id,
)
from tenants.scoping import all_tenants, tenant_scope

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "ehc_"
ENTRA_PROVIDER = "azuread-v2-tenant-oauth2"


# --- access requests -------------------------------------------------------


def access_request_create(
    *,
    requested_by: AbstractBaseUser | None,
    requester_email: str,
    requester_subject: str = "",
    organization_name: str,
    microsoft_tenant_id: str,
    ehr_vendor: str,
    data_region: str,
    technical_contact_email: str,
) -> AccessRequest:
    """Record a request to use the connector; one open request per tenant ID."""
    validate_microsoft_tenant_id(microsoft_tenant_id)
    tenant_id = normalize_microsoft_tenant_id(microsoft_tenant_id)
    existing = Tenant.objects.filter(microsoft_tenant_id=tenant_id).first()
    if existing is not None and existing.status == TenantStatus.ENABLED:
        raise ValidationError(
            {
                "microsoft_tenant_id": "This organization already uses the connector. Ask one of "
                "its administrators to add you as a member."
            },
            code="tenant_enabled",
        )
    duplicate_message = (
        "An access request for this Microsoft 365 tenant ID is already waiting for review. "
        "You will hear back at the contact email given with it; there is no need to ask again."
    )
    if AccessRequest.objects.filter(microsoft_tenant_id=tenant_id, state=AccessRequestState.OPEN).exists():
        raise ValidationError({"microsoft_tenant_id": duplicate_message}, code="duplicate")
    access_request = AccessRequest(
        requested_by=requested_by,
        requester_email=requester_email,
        requester_subject=requester_subject,
        status_token=secrets.token_urlsafe(32),
        organization_name=organization_name.strip(),
        microsoft_tenant_id=tenant_id,
        ehr_vendor=ehr_vendor,
        data_region=data_region,
        technical_contact_email=technical_contact_email,
    )
    access_request.full_clean()
    try:
        with transaction.atomic():
            access_request.save()
    except IntegrityError as error:
        # Two requests raced past the check above; the partial unique index caught it.
        raise ValidationError({"microsoft_tenant_id": duplicate_message}, code="duplicate") from error
    logger.info("access request %s created", access_request.pk)
    return access_request


def _require_this_region(data_region: str) -> None:
    """In a multi-region installation an organization is created only in its own region's database."""
    from tenants.regions import layout, region_label

    regions = layout()
    if regions.is_multi_region and data_region != regions.current:
        other = regions.base_url(data_region) or "that region's deployment"
        raise ValidationError(
            f"This organization's data region is {region_label(data_region)}, but this deployment serves "
            f"{region_label(regions.current)}. Change the request's data region to "
            f"{region_label(regions.current)} to keep its data here, or ask the requester to submit it at "
            f"{other}/access-request/ and approve it there.",
            code="wrong_region",
        )


def access_request_approve(*, access_request: AccessRequest, reviewed_by: AbstractBaseUser) -> Tenant:
    """Create or re-enable the tenant and make the requester its administrator."""
    with transaction.atomic():
        locked = AccessRequest.objects.select_for_update().get(pk=access_request.pk)
        if locked.state != AccessRequestState.OPEN:
            raise ValidationError(
                f"This request was already {locked.get_state_display().lower()}.", code="not_open"
            )
        _require_this_region(locked.data_region)
        tenant, created = Tenant.objects.get_or_create(
            microsoft_tenant_id=locked.microsoft_tenant_id,
            defaults={
                "name": locked.organization_name,
                "ehr_vendor": locked.ehr_vendor,
                "data_region": locked.data_region,
                "status": TenantStatus.ENABLED,
            },
        )
        if not created and tenant.status != TenantStatus.ENABLED:
            tenant.status = TenantStatus.ENABLED
            tenant.save(update_fields=["status"])
        requester = locked.requested_by or _account_for_requester(locked)
        with tenant_scope(tenant):
            Membership.objects.get_or_create(
                tenant=tenant, user=requester, defaults={"role": Role.ADMINISTRATOR}
            )
        locked.requested_by = requester
        locked.state = AccessRequestState.APPROVED
        locked.reviewed_by = reviewed_by
        locked.reviewed_at = timezone.now()
        locked.tenant = tenant
        locked.save()
        request_pk = locked.pk
        transaction.on_commit(lambda: async_task("tenants.tasks.notify_access_request_decision", request_pk))
    access_request.refresh_from_db()
    logger.info("access request %s approved; tenant %s enabled", request_pk, tenant.pk)
    return tenant


def _account_for_requester(access_request: AccessRequest) -> AbstractBaseUser:
    """The account of someone who asked before they could sign in.

    Their Microsoft sign-in was refused (no account is made for an organization
    that is not enabled), so the account is made now and linked to their Entra
    subject: their next Microsoft sign-in lands on it.
    """
    from django.contrib.auth import get_user_model
    from social_django.models import UserSocialAuth

    user_model = get_user_model()
    if access_request.requester_subject:
        link = (
            UserSocialAuth.objects.filter(provider=ENTRA_PROVIDER, uid=access_request.requester_subject)
            .select_related("user")
            .first()
        )
        if link is not None:
            return link.user
    user, _ = user_model.objects.get_or_create(
        username=access_request.requester_email.lower(),
        defaults={"email": access_request.requester_email.lower()},
    )
    if access_request.requester_subject:
        UserSocialAuth.objects.get_or_create(
            provider=ENTRA_PROVIDER, uid=access_request.requester_subject, defaults={"user": user}
        )
    return user


def access_request_reject(
    *, access_request: AccessRequest, reviewed_by: AbstractBaseUser, reason: str
) -> AccessRequest:
    if not reason.strip():
        raise ValidationError(
            {"rejection_reason": "Say why the request is rejected; the requester will read it."},
            code="reason_required",
        )
    with transaction.atomic():
        locked = AccessRequest.objects.select_for_update().get(pk=access_request.pk)
        if locked.state != AccessRequestState.OPEN:
            raise ValidationError(
                f"This request was already {locked.get_state_display().lower()}.", code="not_open"
            )
        locked.state = AccessRequestState.REJECTED
        locked.reviewed_by = reviewed_by
        locked.reviewed_at = timezone.now()
        locked.rejection_reason = reason.strip()
        locked.save()
        request_pk = locked.pk
        transaction.on_commit(lambda: async_task("tenants.tasks.notify_access_request_decision", request_pk))
    access_request.refresh_from_db()
    logger.info("access request %s rejected", request_pk)
    return access_request


# --- tenants -------------------------------------------------------------


def tenant_set_status(*, tenant: Tenant, status: str) -> Tenant:
    if status not in TenantStatus.values:
        raise ValidationError(f"Unknown status {status!r}.")
    tenant.status = status
    tenant.save(update_fields=["status"])
    logger.info("tenant %s status set to %s", tenant.pk, status)
    return tenant


# --- memberships -----------------------------------------------------------


def membership_create(
    *, tenant: Tenant, user: AbstractBaseUser, role: str, ehr_username: str = ""
) -> Membership:
    with tenant_scope(tenant):
        if Membership.objects.filter(user=user).exists():
            raise ValidationError(
                {"user": "This user is already a member of the organization; change their role instead."},
                code="duplicate",
            )
        membership = Membership(tenant=tenant, user=user, role=role, ehr_username=ehr_username.strip())
        membership.full_clean(exclude=["tenant", "user"])
        membership.save()
    return membership


def membership_update(*, membership: Membership, role: str, ehr_username: str = "") -> Membership:
    with tenant_scope(membership.tenant):
        if membership.role == Role.ADMINISTRATOR and role != Role.ADMINISTRATOR:
            _refuse_removing_last_administrator(membership)
        membership.role = role
        membership.ehr_username = ehr_username.strip()
        membership.full_clean(exclude=["tenant", "user"])
        membership.save()
    return membership


def membership_delete(*, membership: Membership) -> None:
    with tenant_scope(membership.tenant):
        if membership.role == Role.ADMINISTRATOR:
            _refuse_removing_last_administrator(membership)
        membership.delete()


def membership_invite_create(
    *, tenant: Tenant, email: str, role: str, ehr_username: str = "", invited_by: AbstractBaseUser | None
) -> MembershipInvite:
    """Invite someone by e-mail with a role; they become a member at their first sign-in.

    Refused (ValidationError naming the field) for someone already a member, an address with an
    open invitation, or an EHR approver without their EHR username. The e-mail with the sign-in
    link is queued after commit.
    """
    email = email.strip().lower()
    with tenant_scope(tenant):
        if Membership.objects.filter(user__email__iexact=email).exists():
            raise ValidationError(
                {"email": "Someone with this e-mail address is already a member; change their role instead."}
            )
        if MembershipInvite.objects.filter(email=email, accepted_at=None, withdrawn_at=None).exists():
            raise ValidationError(
                {
                    "email": "This address already has an open invitation; withdraw it first to change the role."
                }
            )
        invite = MembershipInvite(
            tenant=tenant, email=email, role=role, ehr_username=ehr_username.strip(), invited_by=invited_by
        )
        invite.full_clean(exclude=["tenant", "invited_by", "accepted_by"])
        if role == Role.EHR_APPROVER and not invite.ehr_username:
            raise ValidationError(
                {"ehr_username": "An EHR approver needs their EHR username, as they sign in to the EHR."}
            )
        with transaction.atomic():
            invite.save()
            invite_pk = invite.pk
            transaction.on_commit(lambda: async_task("tenants.tasks.membership_invite_send", invite_pk))
    logger.info("membership invite %s created in tenant %s", invite.pk, tenant.pk)
    return invite


def membership_invite_withdraw(*, invite: MembershipInvite) -> bool:
    """The invitation no longer works (kept, marked withdrawn). False: it was already used or withdrawn."""
    with tenant_scope(invite.tenant):
        return bool(
            MembershipInvite.objects.filter(pk=invite.pk, accepted_at=None, withdrawn_at=None).update(
                withdrawn_at=timezone.now()
            )
        )


def membership_invites_accept(*, tenant: Tenant, user: AbstractBaseUser, email: str) -> list[Membership]:
    """At a sign-in through `tenant`: the open invitations for this e-mail address become memberships.

    Each invitation is claimed with a conditional UPDATE, so two sign-ins at once make one
    membership. A user who is already a member keeps their role (the invitation is still used up).
    """
    email = (email or "").strip().lower()
    if not email:
        return []
    made = []
    with tenant_scope(tenant):
        for invite in MembershipInvite.objects.filter(email=email, accepted_at=None, withdrawn_at=None):
            with transaction.atomic():
                claimed = MembershipInvite.objects.filter(
                    pk=invite.pk, accepted_at=None, withdrawn_at=None
                ).update(accepted_at=timezone.now(), accepted_by=user)
                if not claimed or Membership.objects.filter(user=user).exists():
                    continue
                made.append(
                    Membership.objects.create(
                        tenant=tenant, user=user, role=invite.role, ehr_username=invite.ehr_username
                    )
                )
                logger.info("membership invite %s accepted by user %s", invite.pk, user.pk)
    return made


def demo_invite_accept(*, invite: MembershipInvite) -> AbstractBaseUser:
    """Demo mode only: the demo chooser's stand-in for the invitee's first Microsoft sign-in.

    Makes (or finds) the demo user of the invited address, `demo-<local part>`, and accepts
    the invitation exactly as a Microsoft sign-in through the organization would.
    """
    from django.contrib.auth import get_user_model
    from django.utils.text import slugify

    User = get_user_model()
    username = f"demo-{slugify(invite.email.split('@')[0])[:40] or 'invitee'}"
    user = User.objects.filter(username=username).first()
    if user is None:
        user = User.objects.create_user(username=username, email=invite.email)
        user.set_unusable_password()
        user.save(update_fields=["password"])
    membership_invites_accept(tenant=invite.tenant, user=user, email=invite.email)
    return user


def _refuse_removing_last_administrator(membership: Membership) -> None:
    others = Membership.objects.filter(role=Role.ADMINISTRATOR).exclude(pk=membership.pk)
    if not others.exists():
        raise ValidationError(
            "This is the organization's last administrator. Make someone else an administrator first.",
            code="last_administrator",
        )


# --- API tokens ----------------------------------------------------------


def hash_api_token(raw_token: str) -> str:
    # The token carries 256 random bits, so a plain SHA-256 cannot be brute-forced
    # and keeps the per-request lookup cheap (unlike a password hash).
    return hashlib.sha256(raw_token.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    raw: str  # shown once to the person who created it, never stored


def api_token_create(
    *, tenant: Tenant, name: str, scope: str, created_by: AbstractBaseUser | None
) -> IssuedToken:
    if scope not in TokenScope.values:
        raise ValidationError({"scope": f"Scope must be one of {', '.join(TokenScope.values)}."})
    if not name.strip():
        raise ValidationError({"name": "Give the token a name that says what uses it."})
    prefix = secrets.token_hex(4)
    raw = f"{TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    with tenant_scope(tenant):
        token = ApiToken.objects.create(
            tenant=tenant,
            name=name.strip(),
            prefix=prefix,
            token_hash=hash_api_token(raw),
            scope=scope,
            created_by=created_by,
        )
    logger.info("API token %s created for tenant %s", prefix, tenant.pk)
    return IssuedToken(token=token, raw=raw)


def api_token_revoke(*, token: ApiToken) -> ApiToken:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        logger.info("API token %s revoked", token.prefix)
    return token


def api_token_authenticate(raw_token: str) -> ApiToken | None:
    """The active token matching `raw_token`, with its last-used time refreshed."""
    if not raw_token.startswith(TOKEN_PREFIX):
        return None
    with all_tenants():
        token = (
            ApiToken.objects.select_related("tenant")
            .filter(token_hash=hash_api_token(raw_token), revoked_at__isnull=True)
            .first()
        )
        if token is None:
            return None
        now = timezone.now()
        # One write a minute at most per token, not one per request.
        if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
            token.last_used_at = now
    return token
