"""Approval of FHIR endpoints by the organization's EHR analysts (Epic).

The approver signs in to the portal, then to the EHR itself (a SMART standalone
launch with `openid fhirUser`). Only a verified EHR user listed among the
organization's approvers may decide. Nothing from the EHR sign-in is kept but
who decided what, and when.

An approver entry matches an EHR sign-in in one of three forms, tried in this
order (many EHRs send no `preferred_username`):

1. the EHR username: the id_token's `preferred_username`;
2. the fhirUser: `Practitioner/123`, its absolute URL, or the bare id `123`,
   resolved against the endpoint's base URL;
3. a Practitioner identifier, `value` or `system|value`: the Practitioner
   named by fhirUser is read with the sign-in's access token, only when the
   first two forms matched nobody.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from connector.ehr_http import EhrHttpError, ehr_get_json
from connector.models import (
    ApprovalDecision,
    ApproverMatch,
    EhrApprover,
    EndpointApproval,
    EndpointStatus,
    FhirEndpoint,
)
from connector.services.records import integration_records_produce
from connector.smart import EhrIdentity, absolute_fhir_user
from tenants.models import EhrVendor

logger = logging.getLogger(__name__)

APPROVAL_SCOPE = "openid fhirUser"


@dataclass(frozen=True)
class ApproverFound:
    approver: EhrApprover
    matched_as: str  # an ApproverMatch value


def _fhir_user_forms(fhir_user: str, base_url: str) -> set[str]:
    """Every way an administrator may have typed this fhirUser, upper-cased."""
    absolute = absolute_fhir_user(fhir_user, base_url)
    if not absolute:
        return set()
    forms = {absolute}
    base = base_url.rstrip("/") + "/"
    if absolute.startswith(base):
        relative = absolute[len(base) :]
        forms |= {relative, relative.rsplit("/", 1)[-1]}
    return {form.upper() for form in forms}


def _identifier_forms(identifiers: tuple[str, ...]) -> set[str]:
    forms = set()
    for identifier in identifiers:
        forms.add(identifier.upper())
        forms.add(identifier.rsplit("|", 1)[-1].upper())
    return forms


def approver_match(*, endpoint: FhirEndpoint, identity: EhrIdentity) -> ApproverFound | None:
    """The configured approver this EHR sign-in is, and by which form; None if nobody."""
    approvers = list(EhrApprover.objects.all())
    attempts = (
        (ApproverMatch.USERNAME, {identity.preferred_username.upper()} - {""}),
        (ApproverMatch.FHIR_USER, _fhir_user_forms(identity.fhir_user, endpoint.base_url)),
        (ApproverMatch.IDENTIFIER, _identifier_forms(identity.identifiers)),
    )
    for matched_as, forms in attempts:
        for approver in approvers:
            if approver.ehr_username.upper() in forms:
                return ApproverFound(approver=approver, matched_as=matched_as)
    return None


def approver_is_configured(*, endpoint: FhirEndpoint, identity: EhrIdentity) -> bool:
    return approver_match(endpoint=endpoint, identity=identity) is not None


def approver_identity_complete(
    *, endpoint: FhirEndpoint, identity: EhrIdentity, access_token: str
) -> EhrIdentity:
    """The identity with its Practitioner's identifiers, read only when nothing else matched.

    The Practitioner is read at the endpoint's own base URL (never at an address taken from the
    token) with the sign-in's access token. A failed read leaves the identity as it was: the
    approver then hears that they are not configured, and the log says why.
    """
    if approver_match(endpoint=endpoint, identity=identity) is not None:
        return identity
    absolute = absolute_fhir_user(identity.fhir_user, endpoint.base_url)
    base = endpoint.base_url.rstrip("/") + "/"
    relative = absolute[len(base) :] if absolute.startswith(base) else ""
    parts = relative.split("/")
    if len(parts) != 2 or parts[0] != "Practitioner" or not parts[1] or not access_token:
        return identity
    if not EhrApprover.objects.exists():
        return identity
    try:
        practitioner = ehr_get_json(
            f"{base}Practitioner/{parts[1]}", headers={"Authorization": f"Bearer {access_token}"}
        ).json
    except EhrHttpError as error:
        logger.info("approver's Practitioner could not be read: %s", error.code)
        return identity
    identifiers = tuple(
        f"{item.get('system') or ''}|{item['value']}".lstrip("|")
        for item in (practitioner.get("identifier") or [] if isinstance(practitioner, dict) else [])
        if isinstance(item, dict) and isinstance(item.get("value"), str) and item["value"]
    )
    return dataclasses.replace(identity, identifiers=identifiers)


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
    found = approver_match(endpoint=endpoint, identity=identity)
    if found is None:
        raise PermissionDenied(
            f"The EHR user {identity.username} is not one of the approvers configured for your organization. "
            "An administrator can add their EHR username, fhirUser or Practitioner identifier in step 1 "
            "of the setup."
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
            ehr_username=identity.username[:150],
            ehr_user=absolute_fhir_user(identity.fhir_user, locked.base_url),
            matched_as=found.matched_as,
        )
        EhrApprover.objects.filter(pk=found.approver.pk).update(
            last_matched_as=found.matched_as, last_matched_at=timezone.now()
        )
        if decision == ApprovalDecision.APPROVED:
            locked.status = EndpointStatus.APPROVED
            locked.save(update_fields=["status", "updated_at"])
            integration_records_produce(endpoint=locked)
            from connector.webhooks.events import emit_endpoint_approved

            emit_endpoint_approved(endpoint=locked, approval=approval)
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
