"""Background tasks of the tenants app. Each takes primary keys and is idempotent."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.mail import send_mail

from tenants.models import AccessRequest, AccessRequestState, MembershipInvite
from tenants.scoping import all_tenants

logger = logging.getLogger(__name__)


def notify_access_request_decision(access_request_pk: int) -> bool:
    """Tell the requester and the technical contact how their request was decided.

    Sending twice is harmless (the same message again), so a retry is safe.
    """
    access_request = AccessRequest.objects.filter(pk=access_request_pk).first()
    if access_request is None or access_request.state == AccessRequestState.OPEN:
        return False
    if access_request.state == AccessRequestState.APPROVED:
        subject = f"Access approved for {access_request.organization_name}"
        body = (
            "Your organization can now use the EHR connector. Sign in at "
            f"{settings.PUBLIC_BASE_URL}/ to configure it."
        )
    else:
        subject = f"Access request for {access_request.organization_name} was not approved"
        body = f"Reason given by the support team:\n\n{access_request.rejection_reason}"
    body += f"\n\nStatus page: {settings.PUBLIC_BASE_URL}/access-request/{access_request.status_token}/"
    recipients = {access_request.technical_contact_email, access_request.requester_email}
    send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, sorted(recipients))
    logger.info("access request %s decision sent", access_request_pk)
    return True


def membership_invite_send(invite_pk: int) -> bool:
    """E-mail an invitation its sign-in link. Sending twice is the same message again (safe to retry)."""
    with all_tenants():
        invite = MembershipInvite.objects.select_related("tenant").filter(pk=invite_pk).first()
    if invite is None or not invite.is_open:
        return False
    subject = f"You are invited to {invite.tenant.name} on the EHR connector"
    body = (
        f"You were invited to {invite.tenant.name} as {invite.get_role_display()}.\n\n"
        f"Sign in with your Microsoft work account ({invite.email}) at {settings.PUBLIC_BASE_URL}/sign-in/ "
        "and you land in the organization."
    )
    send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [invite.email])
    logger.info("membership invite %s sent", invite_pk)
    return True
