"""Background tasks of the tenants app. Each takes primary keys and is idempotent."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.mail import send_mail

from tenants.models import AccessRequest, AccessRequestState

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
