"""FHIR endpoints: create, change, validate, disable."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from connector.background import queue_after_commit
from connector.endpoint_checks import check_fhir_endpoint, normalize_fhir_base_url
from connector.models import EhrApprover, EndpointStatus, Environment, FhirEndpoint
from connector.services.records import integration_records_mark_out_of_date, integration_records_produce
from tenants.models import EhrVendor, Tenant

logger = logging.getLogger(__name__)

# A validation makes a few HTTP calls with timeouts; a run holding it longer than this has died.
VALIDATION_LEASE = timedelta(minutes=4)
# Queued again this many times after its worker died, then given up with a message.
VALIDATION_MAX_ATTEMPTS = 3


def _vendor_needs_approval(tenant: Tenant) -> bool:
    """Epic requires an analyst's approval of each endpoint; other vendors do not."""
    return tenant.ehr_vendor == EhrVendor.EPIC


def _duplicate_url_error() -> ValidationError:
    return ValidationError(
        {
            "base_url": "This FHIR base URL is already configured for your organization; edit that one instead."
        },
        code="duplicate",
    )


def _normalized_url(base_url: str) -> str:
    try:
        return normalize_fhir_base_url(base_url)
    except ValidationError as error:
        raise ValidationError({"base_url": error.messages}, code="invalid_url") from error


def endpoint_create(
    *,
    tenant: Tenant,
    base_url: str,
    environment: str,
    label: str,
    time_zone: str = "UTC",
    write_back_enabled: bool = False,
    write_join_link: bool = False,
    smart_client_id: str = "",
) -> FhirEndpoint:
    endpoint = FhirEndpoint(
        tenant=tenant,
        base_url=_normalized_url(base_url),
        environment=environment,
        label=label.strip(),
        time_zone=time_zone,
        write_back_enabled=write_back_enabled,
        write_join_link=write_join_link,
        smart_client_id=smart_client_id.strip(),
    )
    endpoint.full_clean(exclude=["tenant"], validate_unique=False)
    deleted = FhirEndpoint.objects.filter(
        tenant=tenant, base_url=endpoint.base_url, deleted_at__isnull=False
    ).first()
    if deleted is not None:
        return _endpoint_restore(deleted=deleted, endpoint=endpoint)
    if FhirEndpoint.objects.filter(tenant=tenant, base_url=endpoint.base_url).exists():
        raise _duplicate_url_error()
    try:
        with transaction.atomic():
            endpoint.save()
    except IntegrityError as error:
        raise _duplicate_url_error() from error
    logger.info("endpoint %s created for tenant %s", endpoint.pk, tenant.pk)
    return endpoint


def _endpoint_restore(*, deleted: FhirEndpoint, endpoint: FhirEndpoint) -> FhirEndpoint:
    """The URL of a deleted endpoint added again: the same row comes back (its history and past
    visits with it) with the new settings, as a draft to validate, under a new config version."""
    for field in (
        "environment",
        "label",
        "time_zone",
        "write_back_enabled",
        "write_join_link",
        "smart_client_id",
    ):
        setattr(deleted, field, getattr(endpoint, field))
    deleted.deleted_at = None
    deleted.status = EndpointStatus.DRAFT
    deleted.config_version += 1
    deleted.last_validation = {}
    deleted.last_validated_at = None
    deleted.save()
    logger.info("endpoint %s restored", deleted.pk)
    return deleted


def endpoint_delete(*, endpoint: FhirEndpoint) -> FhirEndpoint:
    """Delete an endpoint from the portal: kept (past visits and reports point to it), gone from lists.

    Refused (ValidationError saying why and what to do) while anything still depends on it:
    visits not over yet, or texts still to be sent for its appointments.
    """
    from connector.models import Visit, VisitState
    from sms.models import MessageState, OutboundMessage

    open_visits = Visit.objects.filter(
        endpoint=endpoint, state__in=[VisitState.SCHEDULED, VisitState.IN_PROGRESS]
    ).count()
    pending_texts = OutboundMessage.objects.filter(
        appointment__endpoint=endpoint, state__in=[MessageState.SCHEDULED, MessageState.SENDING]
    ).count()
    reasons = []
    if open_visits:
        reasons.append(f"{open_visits} visit{'s' if open_visits != 1 else ''} not over yet")
    if pending_texts:
        reasons.append(f"{pending_texts} text message{'s' if pending_texts != 1 else ''} still to be sent")
    if reasons:
        raise ValidationError(
            f"{endpoint.label} cannot be deleted while it has {' and '.join(reasons)}. Disable it now (launches "
            "stop) and delete it once those visits are over and the texts are sent or cancelled.",
            code="in_use",
        )
    with transaction.atomic():
        endpoint.status = EndpointStatus.DISABLED
        endpoint.deleted_at = timezone.now()
        endpoint.save(update_fields=["status", "deleted_at", "updated_at"])
        integration_records_mark_out_of_date(endpoint=endpoint)
    logger.info("endpoint %s deleted", endpoint.pk)
    return endpoint


def endpoint_defaults(*, tenant: Tenant) -> dict:
    """What a new endpoint form starts with: the organization's time zone (that of its endpoints,
    the most used) and the environment it has no endpoint for yet (test first)."""
    from django.db.models import Count

    live = FhirEndpoint.objects.filter(tenant=tenant, deleted_at__isnull=True)
    zone = (
        live.values("time_zone")
        .annotate(n=Count("pk"))
        .order_by("-n", "time_zone")
        .values_list("time_zone", flat=True)
    ).first()
    has_test = live.filter(environment=Environment.TEST).exists()
    has_production = live.filter(environment=Environment.PRODUCTION).exists()
    environment = Environment.PRODUCTION if has_test and not has_production else Environment.TEST
    return {"environment": environment, **({"time_zone": zone} if zone else {})}


def endpoint_update(
    *,
    endpoint: FhirEndpoint,
    base_url: str | None = None,
    environment: str | None = None,
    label: str | None = None,
    time_zone: str | None = None,
    write_back_enabled: bool | None = None,
    write_join_link: bool | None = None,
    smart_client_id: str | None = None,
) -> FhirEndpoint:
    """Change an endpoint. A new URL, environment or client ID needs validating (and approving) again.

    A new client ID counts as a new identity: the approval sign-in proved that the EHR
    accepts the connector under the old one.
    """
    if endpoint.status == EndpointStatus.DISABLED:
        raise ValidationError(
            "This endpoint is disabled; enable it again before changing it.", code="disabled"
        )
    new_url = _normalized_url(base_url) if base_url is not None else endpoint.base_url
    new_environment = environment if environment is not None else endpoint.environment
    new_client_id = smart_client_id.strip() if smart_client_id is not None else endpoint.smart_client_id
    identity_changed = (
        new_url != endpoint.base_url
        or new_environment != endpoint.environment
        or new_client_id != endpoint.smart_client_id
    )
    if new_url != endpoint.base_url and (
        FhirEndpoint.objects.filter(tenant=endpoint.tenant, base_url=new_url).exclude(pk=endpoint.pk).exists()
    ):
        raise _duplicate_url_error()
    endpoint.base_url = new_url
    endpoint.environment = new_environment
    endpoint.smart_client_id = new_client_id
    if label is not None:
        endpoint.label = label.strip()
    if time_zone is not None:
        endpoint.time_zone = time_zone
    if write_back_enabled is not None:
        endpoint.write_back_enabled = write_back_enabled
    if write_join_link is not None:
        endpoint.write_join_link = write_join_link
    endpoint.full_clean(exclude=["tenant"], validate_unique=False)
    with transaction.atomic():
        if identity_changed:
            endpoint.config_version += 1
            was_live = endpoint.status in (EndpointStatus.APPROVED, EndpointStatus.VALIDATED)
            if was_live and _vendor_needs_approval(endpoint.tenant):
                # The approval was for the old address: ask for a new one.
                endpoint.status = EndpointStatus.AWAITING_APPROVAL
            else:
                endpoint.status = EndpointStatus.DRAFT
            endpoint.last_validation = {}
            endpoint.last_validated_at = None
            integration_records_mark_out_of_date(endpoint=endpoint)
        endpoint.save()
        if not identity_changed and endpoint.is_usable:
            # Label or time zone appear in the records: produce them again.
            integration_records_produce(endpoint=endpoint)
    logger.info("endpoint %s updated (identity changed: %s)", endpoint.pk, identity_changed)
    return endpoint


def endpoint_disable(*, endpoint: FhirEndpoint) -> FhirEndpoint:
    endpoint.status = EndpointStatus.DISABLED
    endpoint.save(update_fields=["status", "updated_at"])
    integration_records_mark_out_of_date(endpoint=endpoint)
    logger.info("endpoint %s disabled", endpoint.pk)
    return endpoint


def endpoint_enable(*, endpoint: FhirEndpoint) -> FhirEndpoint:
    """A re-enabled endpoint starts from draft: the EHR may have changed meanwhile."""
    if endpoint.status == EndpointStatus.DISABLED:
        endpoint.status = EndpointStatus.DRAFT
        endpoint.config_version += 1
        endpoint.save(update_fields=["status", "config_version", "updated_at"])
    return endpoint


def endpoint_request_validation(*, endpoint: FhirEndpoint) -> FhirEndpoint:
    """Queue a validation; the page polls the endpoint's status for progress."""
    if endpoint.status == EndpointStatus.DISABLED:
        raise ValidationError("This endpoint is disabled; enable it before validating.", code="disabled")
    now = timezone.now()
    claimed = (
        FhirEndpoint.objects.filter(pk=endpoint.pk)
        .exclude(status=EndpointStatus.VALIDATING)
        .update(
            status=EndpointStatus.VALIDATING,
            validation_step="queued",
            validation_lease_until=now + VALIDATION_LEASE,
            validation_attempts=0,
            updated_at=now,
        )
    )
    if claimed:
        queue_after_commit("connector.tasks.endpoint_validate", endpoint.pk, endpoint.config_version)
    endpoint.refresh_from_db()
    return endpoint


def endpoint_validate(*, endpoint: FhirEndpoint, config_version: int | None = None) -> FhirEndpoint:
    """Run the checks now (called by the task) and move the endpoint on.

    Idempotent: a validation of a configuration that has changed since it was
    queued is dropped; a newer one has been or will be queued.
    """
    if config_version is not None and config_version != endpoint.config_version:
        logger.info("endpoint %s changed since validation was queued; skipped", endpoint.pk)
        return endpoint
    if endpoint.status == EndpointStatus.DISABLED:
        return endpoint

    def progress(step: str) -> None:
        FhirEndpoint.objects.filter(pk=endpoint.pk).update(validation_step=step)

    version_checked = endpoint.config_version
    # This run holds the validation for one lease; if its worker dies, the sweeper queues it again.
    FhirEndpoint.objects.filter(pk=endpoint.pk, status=EndpointStatus.VALIDATING).update(
        validation_lease_until=timezone.now() + VALIDATION_LEASE,
        validation_attempts=F("validation_attempts") + 1,
    )
    progress("started")
    result = check_fhir_endpoint(endpoint.base_url, progress=progress)
    endpoint.refresh_from_db()
    if endpoint.config_version != version_checked or endpoint.status == EndpointStatus.DISABLED:
        # Changed or disabled while the checks ran: this result is about the old setup.
        return endpoint
    endpoint.last_validation = _with_write_back_warning(result.to_dict(), endpoint)
    endpoint.last_validated_at = result.checked_at
    endpoint.validation_step = ""
    already_approved = endpoint.approvals.filter(
        config_version=endpoint.config_version, decision="approved"
    ).exists()
    if not result.ok:
        endpoint.status = EndpointStatus.DRAFT
    elif not _vendor_needs_approval(endpoint.tenant):
        endpoint.status = EndpointStatus.VALIDATED
    elif already_approved:
        endpoint.status = EndpointStatus.APPROVED
    else:
        endpoint.status = EndpointStatus.AWAITING_APPROVAL
    with transaction.atomic():
        endpoint.save()
        if endpoint.is_usable:
            integration_records_produce(endpoint=endpoint)
    logger.info("endpoint %s validated: %s (%s)", endpoint.pk, result.ok, result.code)
    return endpoint


def _with_write_back_warning(result: dict, endpoint: FhirEndpoint) -> dict:
    """Write-back switched on for a server that cannot take it: say so first, it fails at every visit."""
    features = (result.get("details") or {}).get("features") or []
    write_back = next((f for f in features if f.get("key") == "write_back"), None)
    if endpoint.write_back_enabled and write_back and write_back.get("status") == "lost":
        result["message"] = (
            "Write-back is on for this endpoint, but this server cannot take it (see below): turn write-back off "
            "or ask your EHR team to enable SMART Backend Services. " + result["message"]
        )
    return result


def endpoint_validation_recover(*, endpoint: FhirEndpoint) -> str:
    """A validation whose lease ended (its task was lost or its worker died): queue it again.

    After VALIDATION_MAX_ATTEMPTS runs that died, the endpoint goes back to
    draft with a message instead, so a check that kills its worker every time
    does not loop forever. Returns "queued", "given up" or "" (someone else
    moved the endpoint meanwhile).
    """
    now = timezone.now()
    mine = FhirEndpoint.objects.filter(
        pk=endpoint.pk,
        status=EndpointStatus.VALIDATING,
        validation_lease_until=endpoint.validation_lease_until,
    )
    if endpoint.validation_attempts >= VALIDATION_MAX_ATTEMPTS:
        result = {
            "ok": False,
            "code": "interrupted",
            "message": (
                f"The validation stopped {endpoint.validation_attempts} times before it finished (the worker "
                "running it was stopped). Check that the FHIR server answers, then validate again."
            ),
            "checked_at": now.isoformat(),
            "details": {},
        }
        given_up = mine.update(
            status=EndpointStatus.DRAFT,
            validation_step="",
            validation_lease_until=None,
            last_validation=result,
            last_validated_at=now,
            updated_at=now,
        )
        return "given up" if given_up else ""
    if not mine.update(validation_lease_until=now + VALIDATION_LEASE, validation_step="queued again"):
        return ""
    queue_after_commit("connector.tasks.endpoint_validate", endpoint.pk, endpoint.config_version)
    logger.info("endpoint %s: validation queued again after its lease ended", endpoint.pk)
    return "queued"


def ehr_approvers_set(*, tenant: Tenant, usernames: list[str]) -> list[EhrApprover]:
    """Replace the list of approvers (Epic): one EHR username, fhirUser reference or Practitioner
    identifier per entry (connector/services/approvals.py matches them)."""
    cleaned = []
    for raw in usernames:
        name = raw.strip()
        if not name:
            continue
        if len(name) > 500 or any(ch.isspace() for ch in name):
            raise ValidationError(
                {
                    "usernames": f"{name[:40]!r} is not an EHR username, fhirUser or identifier: "
                    "one word per line, no spaces."
                }
            )
        if name.upper() not in {c.upper() for c in cleaned}:
            cleaned.append(name)
    with transaction.atomic():
        EhrApprover.objects.exclude(ehr_username__in=cleaned).delete()
        existing = set(EhrApprover.objects.values_list("ehr_username", flat=True))
        for name in cleaned:
            if name not in existing:
                EhrApprover.objects.create(tenant=tenant, ehr_username=name)
    return list(EhrApprover.objects.all())


__all__ = [
    "Environment",
    "ehr_approvers_set",
    "endpoint_create",
    "endpoint_disable",
    "endpoint_enable",
    "endpoint_request_validation",
    "endpoint_update",
    "endpoint_validate",
]
