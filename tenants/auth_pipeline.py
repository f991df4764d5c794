"""Steps of social-auth's pipeline for Microsoft Entra ID sign-in.

The `tid` claim of the verified id_token names the user's Microsoft 365 tenant.
Only users of an enabled organization get an account; everyone else is sent to
a page that says why, without anything being created.
"""

from __future__ import annotations

import logging
import uuid

from django.shortcuts import redirect
from django.urls import reverse

from tenants.models import Tenant, TenantStatus

logger = logging.getLogger(__name__)

REFUSAL_SESSION_KEY = "sign_in_refusal"
SIGN_IN_TENANT_SESSION_KEY = "sign_in_tenant_id"


def _normalized(tid: object) -> str | None:
    try:
        return str(uuid.UUID(str(tid)))
    except (ValueError, TypeError):
        return None


def require_enabled_tenant(strategy, backend, response, details, user=None, *args, **kwargs):
    tid = _normalized(response.get("tid"))
    tenant = Tenant.objects.filter(microsoft_tenant_id=tid).first() if tid else None
    if tenant is not None and tenant.status == TenantStatus.ENABLED:
        return {"sign_in_tenant": tenant}
    if tenant is None and tid:
        elsewhere = _sign_in_at_hosting_region(backend, tid)
        if elsewhere is not None:
            return elsewhere
    if tenant is None:
        reason = "unknown"
    elif tenant.status == TenantStatus.SUSPENDED:
        reason = "suspended"
    else:
        reason = "not_enabled"
    # Remember who tried (verified by Microsoft) so the access request can name them.
    strategy.session_set(
        REFUSAL_SESSION_KEY,
        {
            "reason": reason,
            "tid": tid or "",
            "email": (details.get("email") or "")[:254],
            "subject": str(response.get("sub") or ""),
            "organization": tenant.name if tenant else "",
        },
    )
    logger.info("sign-in refused: tenant %s is %s", tid, reason)
    return redirect("tenants:sign-in-refused")


def _sign_in_at_hosting_region(backend, tid: str):
    """Multi-region: an organization hosted in another region signs in there (nothing is created here)."""
    from tenants.internal_api import locate
    from tenants.regions import layout

    region = locate(tenant_id=tid)
    if not region:
        return None
    logger.info("sign-in for tenant %s sent to region %s", tid, region)
    return redirect(layout().base_url(region) + reverse("social:begin", args=[backend.name]))


def keep_only_stable_ids(backend, response, social=None, *args, **kwargs):
    """Store the user's tenant and object IDs, and nothing else from the identity provider.

    Replaces social-auth's `load_extra_data`, which always adds the access,
    refresh and id tokens (the backend's own EXTRA_DATA) that nothing here uses.
    """
    if social is not None:
        social.extra_data = {claim: response[claim] for claim in ("tid", "oid") if response.get(claim)}
        social.save(update_fields=["extra_data"])


def accept_membership_invites(details, user=None, sign_in_tenant=None, *args, **kwargs):
    """Open invitations of the organization signed in through, for this e-mail, become memberships.

    Only an organization's own people reach this with it as `sign_in_tenant` (their Microsoft
    `tid` is the organization's), so an invitation cannot be accepted from another tenant.
    """
    if user is not None and sign_in_tenant is not None:
        from tenants.services import membership_invites_accept

        membership_invites_accept(tenant=sign_in_tenant, user=user, email=details.get("email") or "")


def remember_sign_in_tenant(strategy, sign_in_tenant=None, *args, **kwargs):
    """Open the session on the organization the user signed in through."""
    if sign_in_tenant is not None:
        from tenants.middleware import ACTIVE_TENANT_SESSION_KEY

        strategy.session_set(ACTIVE_TENANT_SESSION_KEY, sign_in_tenant.pk)
        # Clinicians without a portal role still signed in through this organization:
        # their first visit launch links their EHR user on the strength of it.
        strategy.session_set(SIGN_IN_TENANT_SESSION_KEY, sign_in_tenant.pk)
        strategy.session_pop(REFUSAL_SESSION_KEY)
