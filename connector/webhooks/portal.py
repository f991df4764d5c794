"""The organization's webhooks in the portal: register endpoints, see deliveries, send again.

Administrators only. The secret is shown once, on the page that answers the
registration or the rotation (never stored in the session or shown again).
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from connector.portal.views import require_role
from connector.webhooks.models import EventType, WebhookDelivery, WebhookEndpoint
from connector.webhooks.services import (
    webhook_deliveries_redeliver,
    webhook_endpoint_create,
    webhook_endpoint_delete,
    webhook_endpoint_update,
    webhook_secret_rotate,
)
from tenants.models import Role

SHOWN = 100


class WebhookEndpointForm(forms.Form):
    url = forms.CharField(
        label="Receiver URL", max_length=2000, widget=forms.URLInput(attrs={"placeholder": "https://"})
    )
    description = forms.CharField(label="Description", max_length=200, required=False)
    event_types = forms.MultipleChoiceField(
        label="Events", choices=EventType.choices, widget=forms.CheckboxSelectMultiple
    )


def _page(
    request: HttpRequest, form: WebhookEndpointForm, created=None, secret: str = "", rotated=None
) -> HttpResponse:
    endpoint_filter = request.GET.get("endpoint", "")
    deliveries = WebhookDelivery.objects.select_related("endpoint").order_by("-created_at", "-pk")
    if endpoint_filter.isdigit():
        deliveries = deliveries.filter(endpoint_id=int(endpoint_filter))
    return render(
        request,
        "portal/webhooks.html",
        {
            "form": form,
            "endpoints": list(WebhookEndpoint.objects.order_by("created_at")),
            "deliveries": list(deliveries[:SHOWN]),
            "shown": SHOWN,
            "created": created,
            "rotated": rotated,
            "secret": secret,
            "now": timezone.now(),
        },
        status=201 if created else 200,
    )


@login_required
def webhooks(request: HttpRequest) -> HttpResponse:
    require_role(request, Role.ADMINISTRATOR)
    if request.method != "POST":
        return _page(request, WebhookEndpointForm())
    form = WebhookEndpointForm(request.POST)
    if form.is_valid():
        try:
            endpoint, secret = webhook_endpoint_create(
                tenant=request.tenant, created_by=request.user, **form.cleaned_data
            )
        except ValidationError as error:
            if hasattr(error, "error_dict"):
                for field, errors in error.message_dict.items():
                    form.add_error(field if field in form.fields else None, errors)
            else:
                form.add_error(None, error.messages)
        else:
            return _page(request, WebhookEndpointForm(), created=endpoint, secret=secret)
    return _page(request, form)


@login_required
@require_POST
def webhook_endpoint_action(request: HttpRequest, pk: int) -> HttpResponse:
    require_role(request, Role.ADMINISTRATOR)
    # Scoped: another organization's endpoint is not found.
    endpoint = get_object_or_404(WebhookEndpoint, pk=pk)
    action = request.POST.get("action")
    if action == "enable":
        webhook_endpoint_update(endpoint=endpoint, enabled=True)
        messages.success(request, f"{endpoint.url} is enabled again. Use Send again for what it missed.")
    elif action == "disable":
        webhook_endpoint_update(endpoint=endpoint, enabled=False)
        messages.success(request, f"{endpoint.url} is disabled: no events are sent to it.")
    elif action == "delete":
        webhook_endpoint_delete(endpoint=endpoint)
        messages.success(request, f"{endpoint.url} is deleted, with its delivery log.")
    elif action == "rotate":
        # Answered with the page itself: the new secret is shown this once, never kept in the session.
        secret = webhook_secret_rotate(endpoint=endpoint)
        return _page(request, WebhookEndpointForm(), rotated=endpoint, secret=secret)
    else:
        messages.error(request, "Unknown action.")
    return redirect("portal:webhooks")


@login_required
@require_POST
def webhook_redeliver(request: HttpRequest, pk: int) -> HttpResponse:
    require_role(request, Role.ADMINISTRATOR)
    delivery = get_object_or_404(WebhookDelivery.objects.select_related("endpoint"), pk=pk)
    if not delivery.endpoint.enabled:
        messages.error(request, "This delivery's endpoint is disabled: enable it first, then send again.")
    else:
        queued, _ = webhook_deliveries_redeliver(pks=[delivery.pk])
        if queued:
            messages.success(request, f"{delivery.event_type} {delivery.event_id} will be sent again now.")
        else:
            messages.info(request, "This delivery is being sent right now; look again in a minute.")
    return redirect("portal:webhooks")
