"""The configuration portal: the setup wizard at /portal/setup/."""

from __future__ import annotations

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from connector.forms import add_service_errors
from connector.models import EhrApprover, EndpointStatus, FhirEndpoint, IntegrationRecord
from connector.portal.forms import ApproversForm, EndpointForm
from connector.portal.steps import first_open_step, neighbours, wizard_steps
from connector.services import endpoints as endpoint_services
from connector.services.records import integration_record_rotate_token
from connector.services.write_back import write_backs_needing_attention
from tenants.models import EhrVendor, Role

SETUP_ROLES = (Role.ADMINISTRATOR, Role.EHR_APPROVER)


def require_role(request: HttpRequest, *roles: str) -> None:
    if request.tenant is None:
        raise PermissionDenied("You are not a member of an enabled organization.")
    if request.membership.role not in roles:
        raise PermissionDenied("Your role in this organization does not allow this page.")


def wizard_context(request: HttpRequest, key: str, **extra) -> dict:
    back, next_ = neighbours(request.tenant, key)
    return {
        "steps": [s for s in wizard_steps(request.tenant) if s.applies],
        "current_step": key,
        "back_step": back,
        "next_step": next_,
        "is_epic": request.tenant.ehr_vendor == EhrVendor.EPIC,
        "can_configure": request.membership.role == Role.ADMINISTRATOR,
        **extra,
    }


@login_required
def setup(request: HttpRequest) -> HttpResponse:
    """Resume the wizard at the first step not done yet."""
    require_role(request, *SETUP_ROLES)
    return redirect(first_open_step(request.tenant).url)


@login_required
def configure(request: HttpRequest) -> HttpResponse:
    require_role(request, *SETUP_ROLES)
    form = EndpointForm(prefix="endpoint", initial=endpoint_services.endpoint_defaults(tenant=request.tenant))
    approvers_form = ApproversForm(
        prefix="approvers",
        initial={"usernames": "\n".join(EhrApprover.objects.values_list("ehr_username", flat=True))},
    )
    if request.method == "POST":
        require_role(request, Role.ADMINISTRATOR)
        if "approvers-usernames" in request.POST:
            approvers_form = ApproversForm(request.POST, prefix="approvers")
            if approvers_form.is_valid():
                try:
                    endpoint_services.ehr_approvers_set(
                        tenant=request.tenant, usernames=approvers_form.cleaned_data["usernames"].splitlines()
                    )
                except ValidationError as error:
                    add_service_errors(approvers_form, error)
                else:
                    messages.success(request, "The approvers were saved.")
                    return redirect("portal:configure")
        else:
            form = EndpointForm(request.POST, prefix="endpoint")
            if form.is_valid():
                try:
                    endpoint = endpoint_services.endpoint_create(tenant=request.tenant, **form.cleaned_data)
                except ValidationError as error:
                    add_service_errors(form, error)
                else:
                    endpoint_services.endpoint_request_validation(endpoint=endpoint)
                    messages.success(request, f"{endpoint.label} was added; it is being validated now.")
                    return redirect("portal:configure")
    endpoints = FhirEndpoint.objects.filter(deleted_at__isnull=True).order_by("environment", "label")
    failed_writes = (
        write_backs_needing_attention().count() if request.membership.role == Role.ADMINISTRATOR else 0
    )
    return render(
        request,
        "portal/configure.html",
        wizard_context(
            request,
            "configure",
            form=form,
            approvers_form=approvers_form,
            endpoints=endpoints,
            approvers=EhrApprover.objects.all(),
            failed_writes=failed_writes,
        ),
    )


@login_required
def endpoint_edit(request: HttpRequest, pk: int) -> HttpResponse:
    require_role(request, Role.ADMINISTRATOR)
    endpoint = get_object_or_404(FhirEndpoint, pk=pk)
    form = EndpointForm(request.POST or None, instance=endpoint, prefix="endpoint")
    if request.method == "POST" and form.is_valid():
        try:
            endpoint_services.endpoint_update(endpoint=FhirEndpoint.objects.get(pk=pk), **form.cleaned_data)
        except ValidationError as error:
            add_service_errors(form, error)
        else:
            endpoint.refresh_from_db()
            needs_check = endpoint.status in (EndpointStatus.DRAFT, EndpointStatus.AWAITING_APPROVAL)
            if needs_check and not endpoint.last_validation:
                # A new URL or environment: check it again at once.
                endpoint_services.endpoint_request_validation(endpoint=endpoint)
            messages.success(request, f"{endpoint.label} was saved.")
            return redirect("portal:configure")
    return render(
        request,
        "portal/endpoint_edit.html",
        wizard_context(request, "configure", form=form, endpoint=endpoint),
    )


@login_required
@require_POST
def endpoint_validate(request: HttpRequest, pk: int) -> HttpResponse:
    require_role(request, Role.ADMINISTRATOR)
    endpoint = get_object_or_404(FhirEndpoint, pk=pk)
    try:
        endpoint_services.endpoint_request_validation(endpoint=endpoint)
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    return redirect("portal:configure")


@login_required
@require_POST
def endpoint_disable(request: HttpRequest, pk: int) -> HttpResponse:
    require_role(request, Role.ADMINISTRATOR)
    endpoint = get_object_or_404(FhirEndpoint, pk=pk)
    if endpoint.status == EndpointStatus.DISABLED:
        endpoint_services.endpoint_enable(endpoint=endpoint)
        endpoint_services.endpoint_request_validation(endpoint=endpoint)
        messages.success(request, f"{endpoint.label} was enabled again and is being validated.")
    else:
        endpoint_services.endpoint_disable(endpoint=endpoint)
        messages.success(request, f"{endpoint.label} was disabled; launches through it now stop.")
    return redirect("portal:configure")


@login_required
@require_POST
def endpoint_delete(request: HttpRequest, pk: int) -> HttpResponse:
    """Delete (kept in history, gone from lists); refused with the reason while visits or texts need it."""
    require_role(request, Role.ADMINISTRATOR)
    endpoint = get_object_or_404(FhirEndpoint, pk=pk, deleted_at__isnull=True)
    try:
        endpoint_services.endpoint_delete(endpoint=endpoint)
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(
            request,
            f"{endpoint.label} was deleted. Past visits and reports keep it; adding its URL again brings it back.",
        )
    return redirect("portal:configure")


@login_required
def endpoint_status(request: HttpRequest, pk: int) -> JsonResponse:
    """Polled by the configure page while a validation runs."""
    require_role(request, *SETUP_ROLES)
    endpoint = get_object_or_404(FhirEndpoint, pk=pk)
    return JsonResponse(
        {
            "status": endpoint.status,
            "status_display": endpoint.get_status_display(),
            "step": endpoint.validation_step,
            "ok": endpoint.last_validation.get("ok"),
            "code": endpoint.last_validation.get("code", ""),
            "message": endpoint.last_validation.get("message", ""),
            "gaps": [
                {"feature": f.get("title", ""), "status": f.get("status", "")}
                for f in endpoint.validation_gaps
            ],
        }
    )


@login_required
def review(request: HttpRequest) -> HttpResponse:
    require_role(request, *SETUP_ROLES)
    records = IntegrationRecord.objects.select_related("endpoint").order_by(
        "endpoint__environment", "endpoint__label", "kind"
    )
    pending = FhirEndpoint.objects.exclude(
        status__in=[EndpointStatus.APPROVED, EndpointStatus.VALIDATED, EndpointStatus.DISABLED]
    )
    return render(
        request, "portal/review.html", wizard_context(request, "review", records=records, pending=pending)
    )


@login_required
def records_download(request: HttpRequest) -> HttpResponse:
    require_role(request, *SETUP_ROLES)
    records = IntegrationRecord.objects.select_related("endpoint").order_by("endpoint__label", "kind")
    body = json.dumps(
        {"organization": request.tenant.name, "records": [r.as_export() for r in records]}, indent=2
    )
    response = HttpResponse(body, content_type="application/json")
    response["Content-Disposition"] = 'attachment; filename="integration-records.json"'
    return response


@login_required
@require_POST
def record_rotate_token(request: HttpRequest, pk: int) -> HttpResponse:
    require_role(request, Role.ADMINISTRATOR)
    record = get_object_or_404(IntegrationRecord, pk=pk)
    try:
        integration_record_rotate_token(record=record)
    except ValueError as error:
        messages.error(request, str(error))
    else:
        messages.success(
            request, "A new context token was made; enter it in the EHR, the old one no longer works."
        )
    return redirect("portal:review")
