"""Support staff's view of SMS: numbers, settings, certificates, appointments (phone masked), messages, opt-outs."""

from __future__ import annotations

from django.contrib import admin, messages
from simple_history.admin import SimpleHistoryAdmin

from sms.models import (
    Appointment,
    MessageState,
    OptOut,
    OutboundMessage,
    PhoneNumber,
    ProcessedMessage,
    SigningCertificate,
    SmsConsent,
    SmsSettings,
)


@admin.register(SmsConsent)
class SmsConsentAdmin(SimpleHistoryAdmin):
    list_display = ["tenant", "on_behalf_confirmed_at", "patient_consent_confirmed_at"]
    search_fields = ["tenant__name", "=tenant__microsoft_tenant_id"]
    list_select_related = ["tenant"]
    raw_id_fields = ["on_behalf_confirmed_by", "patient_consent_confirmed_by"]
    autocomplete_fields = ["tenant"]


@admin.register(PhoneNumber)
class PhoneNumberAdmin(SimpleHistoryAdmin):
    list_display = ["number", "tenant", "state", "toll_free", "verification", "provider", "created_at"]
    list_filter = ["state", "verification", "toll_free", "provider"]
    search_fields = ["number", "tenant__name", "=tenant__microsoft_tenant_id"]
    list_select_related = ["tenant"]
    autocomplete_fields = ["tenant"]
    raw_id_fields = ["requested_by"]


@admin.register(SmsSettings)
class SmsSettingsAdmin(SimpleHistoryAdmin):
    list_display = ["endpoint", "tenant", "phone_number", "confirmations_enabled", "reminders_enabled"]
    list_filter = ["confirmations_enabled", "reminders_enabled"]
    search_fields = ["endpoint__label", "tenant__name", "phone_number__number"]
    list_select_related = ["endpoint", "tenant", "phone_number"]
    raw_id_fields = ["endpoint", "phone_number"]
    autocomplete_fields = ["tenant"]


@admin.register(SigningCertificate)
class SigningCertificateAdmin(SimpleHistoryAdmin):
    list_display = ["tenant", "environment", "thumbprint_sha256", "key_description", "not_after", "active"]
    list_filter = ["environment", "active"]
    search_fields = ["thumbprint_sha256", "tenant__name", "=tenant__microsoft_tenant_id"]
    list_select_related = ["tenant"]
    readonly_fields = [
        "thumbprint_sha256",
        "thumbprint_sha1",
        "subject",
        "key_description",
        "not_before",
        "not_after",
        "uploaded_by",
        "uploaded_at",
    ]


@admin.register(Appointment)
class AppointmentAdmin(admin.ModelAdmin):
    list_display = [
        "external_id",
        "tenant",
        "environment",
        "start",
        "status",
        "department",
        "language",
        "masked_phone",
        "phone_purged_at",
    ]
    list_filter = ["status", "environment", "language"]
    search_fields = ["=external_id", "tenant__name", "=tenant__microsoft_tenant_id"]
    list_select_related = ["tenant"]
    # The number itself is never shown: only its last four digits. The short link's code
    # is a bearer credential for the visit, and the patient key a hash: neither is shown.
    exclude = ["phone", "join_code", "patient_key"]
    readonly_fields = [
        "tenant",
        "endpoint",
        "environment",
        "sending_facility",
        "external_id",
        "start",
        "end",
        "time_zone",
        "status",
        "department",
        "language",
        "masked_phone",
        "phone_purged_at",
        "state_as_of",
    ]
    show_full_result_count = False
    date_hierarchy = "start"

    @admin.display(description="phone")
    def masked_phone(self, obj: Appointment) -> str:
        if obj.phone_purged_at:
            return "purged"
        return f"…{obj.phone_last_four}" if obj.phone_last_four else "—"

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(OutboundMessage)
class OutboundMessageAdmin(admin.ModelAdmin):
    list_display = [
        "created_at",
        "tenant",
        "kind",
        "masked_to",
        "state",
        "send_at",
        "attempts",
        "provider",
        "short_error",
    ]
    list_filter = ["state", "kind", "provider"]
    search_fields = ["=provider_message_id", "tenant__name", "=to_last_four"]
    list_select_related = ["tenant", "phone_number"]
    exclude = ["to", "body", "to_hash"]
    readonly_fields = [
        "tenant",
        "appointment",
        "phone_number",
        "kind",
        "masked_to",
        "send_at",
        "state",
        "attempts",
        "provider",
        "provider_message_id",
        "error",
        "dedupe_key",
        "sent_at",
        "delivered_at",
    ]
    show_full_result_count = False
    actions = ["cancel"]

    @admin.display(description="to")
    def masked_to(self, obj: OutboundMessage) -> str:
        return f"…{obj.to_last_four}"

    @admin.display(description="error")
    def short_error(self, obj: OutboundMessage) -> str:
        return obj.error[:100]

    @admin.action(description="Cancel the selected scheduled messages")
    def cancel(self, request, queryset):
        count = queryset.filter(state=MessageState.SCHEDULED).update(
            state=MessageState.CANCELLED, error="Cancelled by support staff."
        )
        self.message_user(request, f"{count} message(s) cancelled.", messages.SUCCESS)

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(OptOut)
class OptOutAdmin(admin.ModelAdmin):
    list_display = ["tenant", "number_last_four", "active", "opted_out_at", "opted_in_at"]
    list_filter = ["active"]
    search_fields = ["=number_last_four", "tenant__name"]
    list_select_related = ["tenant"]
    exclude = ["number_hash"]
    readonly_fields = ["tenant", "number_last_four", "opted_out_at", "opted_in_at", "active"]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(ProcessedMessage)
class ProcessedMessageAdmin(admin.ModelAdmin):
    list_display = ["received_at", "tenant", "message_type", "control_id", "sender", "ack_code"]
    list_filter = ["ack_code", "message_type"]
    search_fields = ["=control_id", "tenant__name"]
    list_select_related = ["tenant"]
    readonly_fields = [f.name for f in ProcessedMessage._meta.fields]
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False
