"""Approval of FHIR endpoints by the organization's EHR analysts (Epic).

The approver signs in to the portal, then to the EHR itself (a SMART standalone
launch with `openid fhirUser`). Only a verified EHR user listed among the
organization's approvers may decide. Nothing from the EHR sign-in is kept but
who decided what, and when.
"""

from __future__ import annotations

import logging

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction

from connector.models import ApprovalDecision, EhrApprover, EndpointApproval, EndpointStatus, FhirEndpoint
from connector.services.records import integration_records_produce
from connector.smart import EhrIdentity
from tenants.models import EhrVendor

logger = logging.getLogger(__name__)

APPROVAL_SCOPE = "openid fhirUser"


def approver_is_configured(*, endpoint: FhirEndpoint, identity: EhrIdentity) -> bool:
    names = {a.upper() for a in EhrApprover.objects.values_list("ehr_username", flat=True)}
    candidates = {identity.username.upper(), identity.fhir_user.rsplit("/", 1)[-1].upper()}
    return bool(names & candidates)


def _decide(
    *,
    endpoint: FhirEndpoint,
    decided_by: AbstractBaseUser,
    identity: EhrIdentity,
    decision: str,
    comment: str,
) -> EndpointApproval:
    if endpoint.tenant.ehr_vendor != EhrVendor.EPIC:
        raise ValidationError("Only Epic endpoints need an approval; this one is ready once validated.")
    if not approver_is_configured(endpoint=endpoint, identity=identity):
        raise PermissionDenied(
            f"The EHR user {identity.username} is not one of the approvers configured for your organization. "
            "An administrator can add their EHR username in step 1 of the setup."
        )
    with transaction.atomic():
        locked = FhirEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        if locked.status != EndpointStatus.AWAITING_APPROVAL:
            raise ValidationError(
                f"This endpoint is {locked.get_status_display().lower()}, not awaiting approval.",
                code="not_awaiting",
            )
        approval = EndpointApproval.objects.create(
            tenant=locked.tenant,
            endpoint=locked,
            config_version=locked.config_version,
            base_url=locked.base_url,
            decision=decision,
            comment=comment.strip(),
            decided_by=decided_by,
            ehr_username=identity.username,
            ehr_user=identity.fhir_user,
        )
        if decision == ApprovalDecision.APPROVED:
            locked.status = EndpointStatus.APPROVED
            locked.save(update_fields=["status", "updated_at"])
            integration_records_produce(endpoint=locked)
        else:
            locked.status = EndpointStatus.DRAFT
            locked.save(update_fields=["status", "updated_at"])
    endpoint.refresh_from_db()
    logger.info("endpoint %s %s by EHR user id %s", endpoint.pk, decision, approval.pk)
    return approval


def approval_grant(
    *, endpoint: FhirEndpoint, decided_by: AbstractBaseUser, identity: EhrIdentity, comment: str = ""
) -> EndpointApproval:
    return _decide(
        endpoint=endpoint,
        decided_by=decided_by,
        identity=identity,
        decision=ApprovalDecision.APPROVED,
        comment=comment,
    )


def approval_reject(
    *, endpoint: FhirEndpoint, decided_by: AbstractBaseUser, identity: EhrIdentity, comment: str
) -> EndpointApproval:
    if not comment.strip():
        raise ValidationError(
            {"comment": "Say why the endpoint is rejected; the administrator will read it."}
        )
    return _decide(
        endpoint=endpoint,
        decided_by=decided_by,
        identity=identity,
        decision=ApprovalDecision.REJECTED,
        comment=comment,
    )
