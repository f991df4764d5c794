"""Support staff's view of every organization's webhooks (tenants/middleware.py lifts the scope in /admin/)."""

from django.contrib import admin

from connector.webhooks.models import WebhookDelivery, WebhookEndpoint


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    list_display = ["url", "tenant", "enabled", "consecutive_failures", "last_success_at", "last_failure_at"]
    list_filter = ["enabled"]
    list_select_related = ["tenant"]
    search_fields = ["url"]
    # The secrets are never shown here: each was shown once to the organization.
    exclude = ["secret", "previous_secret"]
    readonly_fields = [
        "tenant",
        "created_by",
        "disabled_at",
        "consecutive_failures",
        "total_failures",
        "last_success_at",
        "last_failure_at",
        "previous_secret_until",
    ]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ["event_type", "event_id", "endpoint", "tenant", "state", "attempts", "created_at"]
    list_filter = ["state", "event_type"]
    list_select_related = ["endpoint", "tenant"]
    search_fields = ["event_id"]
    show_full_result_count = False
    raw_id_fields = ["endpoint"]
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields]
