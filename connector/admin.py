"""Support staff's view of FHIR endpoints, approvals and integration records."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.utils.html import format_html, format_html_join
from simple_history.admin import SimpleHistoryAdmin

from connector.lookup_hash import EHR_USER, lookup_hashes
from connector.models import (
    ClinicianLink,
    EhrApprover,
    EndpointApproval,
    FhirEndpoint,
    IntegrationRecord,
    Meeting,
    Visit,
    VisitEvent,
    WriteBack,
    WriteBackState,
)
from connector.services.endpoints import endpoint_request_validation
from tenants.scoping import tenant_scope


class ApprovalInline(admin.TabularInline):
    model = EndpointApproval
    extra = 0
    can_delete = False
    fields = ["decided_at", "decision", "ehr_username", "decided_by", "config_version", "comment"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class RecordInline(admin.TabularInline):
    model = IntegrationRecord
    extra = 0
    can_delete = False
    fields = ["kind", "config_version", "out_of_date", "launch_url", "generated_at"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(FhirEndpoint)
class FhirEndpointAdmin(SimpleHistoryAdmin):
    list_display = [
        "label",
        "tenant",
        "environment",
        "base_url",
        "status",
        "write_back_enabled",
        "last_validated_at",
    ]
    list_filter = ["status", "tenant__ehr_vendor", "environment"]
    search_fields = ["label", "base_url", "tenant__name", "=tenant__microsoft_tenant_id"]
    list_select_related = ["tenant"]
    autocomplete_fields = ["tenant"]
    readonly_fields = [
        "status",
        "config_version",
        "validation_step",
        "validation_features",
        "last_validation",
        "last_validated_at",
        "created_at",
        "updated_at",
    ]
    inlines = [ApprovalInline, RecordInline]
    actions = ["validate_again"]

    @admin.display(description="Features (last validation)")
    def validation_features(self, endpoint: FhirEndpoint) -> str:
        """Each feature of the connector and whether this server can carry it (endpoint_features.py)."""
        features = (endpoint.last_validation.get("details") or {}).get("features") or []
        if not features:
            return "—"
        words = {"available": "available", "lost": "LOST", "unconfirmed": "to confirm"}
        return format_html(
            "<ul>{}</ul>",
            format_html_join(
                "",
                "<li><strong>{}</strong>: {}{}</li>",
                (
                    (
                        words.get(f.get("status"), f.get("status")),
                        f.get("title", ""),
                        f" (missing: {', '.join(f['missing'])})"
                        if f.get("missing")
                        else (
                            f" (not published: {', '.join(f['unconfirmed'])})" if f.get("unconfirmed") else ""
                        ),
                    )
                    for f in features
                    if isinstance(f, dict)
                ),
            ),
        )

    @admin.action(description="Validate again")
    def validate_again(self, request, queryset):
        queued = 0
        for endpoint in queryset.select_related("tenant"):
            try:
                with tenant_scope(endpoint.tenant):
                    endpoint_request_validation(endpoint=endpoint)
                queued += 1
            except ValidationError as error:
                self.message_user(request, f"{endpoint}: {' '.join(error.messages)}", messages.ERROR)
        if queued:
            self.message_user(request, f"Validation started for {queued} endpoint(s).", messages.SUCCESS)


@admin.register(EndpointApproval)
class EndpointApprovalAdmin(admin.ModelAdmin):
    list_display = [
        "decided_at",
        "endpoint",
        "tenant",
        "decision",
        "ehr_username",
        "matched_as",
        "decided_by",
    ]
    list_filter = ["decision", "tenant__ehr_vendor"]
    search_fields = [
        "endpoint__label",
        "base_url",
        "tenant__name",
        "=tenant__microsoft_tenant_id",
    ]
    list_select_related = ["endpoint", "tenant", "decided_by"]
    date_hierarchy = "decided_at"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        # The approval history is evidence; it is never edited or deleted.
        return False


@admin.register(IntegrationRecord)
class IntegrationRecordAdmin(SimpleHistoryAdmin):
    list_display = ["endpoint", "tenant", "kind", "config_version", "out_of_date", "generated_at"]
    list_filter = ["kind", "out_of_date", "endpoint__environment"]
    search_fields = ["endpoint__label", "endpoint__base_url", "tenant__name", "=tenant__microsoft_tenant_id"]
    list_select_related = ["endpoint", "tenant"]
    readonly_fields = [f.name for f in IntegrationRecord._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(EhrApprover)
class EhrApproverAdmin(SimpleHistoryAdmin):
    list_display = ["ehr_username", "tenant", "last_matched_as", "last_matched_at", "created_at"]
    list_filter = ["last_matched_as"]
    readonly_fields = ["last_matched_as", "last_matched_at"]
    search_fields = ["ehr_username", "tenant__name", "=tenant__microsoft_tenant_id"]
    list_select_related = ["tenant"]
    autocomplete_fields = ["tenant"]


# --- visits -------------------------------------------------------------------------------


class VisitEventInline(admin.TabularInline):
    model = VisitEvent
    extra = 0
    can_delete = False
    fields = ["occurred_at", "kind", "role", "participant_id", "source", "event_id"]
    readonly_fields = fields
    ordering = ["occurred_at"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class WriteBackInline(admin.TabularInline):
    model = WriteBack
    extra = 0
    can_delete = False
    fields = ["kind", "state", "attempts", "next_attempt_at", "last_error"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Visit)
class VisitAdmin(admin.ModelAdmin):
    list_display = [
        "public_id",
        "tenant",
        "appointment_id",
        "department_id",
        "state",
        "started_at",
        "peak_attendees",
    ]
    list_filter = ["state", "endpoint__environment", "tenant__ehr_vendor"]
    search_fields = [
        "=public_id",
        "=appointment_id",
        "=conference_id",
        "tenant__name",
        "=tenant__microsoft_tenant_id",
    ]
    list_select_related = ["tenant", "endpoint"]
    raw_id_fields = ["endpoint", "meeting", "primary_clinician"]
    readonly_fields = [f.name for f in Visit._meta.fields]
    inlines = [VisitEventInline, WriteBackInline]
    show_full_result_count = False
    date_hierarchy = "created_at"

    def has_add_permission(self, request) -> bool:
        return False


class WriteBackFailedFilter(admin.SimpleListFilter):
    title = "needs attention"
    parameter_name = "attention"

    def lookups(self, request, model_admin):
        return [("failed", "Failed"), ("retrying", "Retrying (attempted, not sent)")]

    def queryset(self, request, queryset):
        if self.value() == "failed":
            return queryset.filter(state=WriteBackState.FAILED)
        if self.value() == "retrying":
            return queryset.filter(state=WriteBackState.PENDING, attempts__gt=0)
        return queryset


@admin.register(WriteBack)
class WriteBackAdmin(admin.ModelAdmin):
    list_display = [
        "created_at",
        "tenant",
        "visit",
        "kind",
        "state",
        "attempts",
        "next_attempt_at",
        "short_error",
    ]
    list_filter = [WriteBackFailedFilter, "state", "kind"]
    search_fields = ["=visit__public_id", "tenant__name", "=tenant__microsoft_tenant_id"]
    list_select_related = ["tenant", "visit"]
    readonly_fields = [f.name for f in WriteBack._meta.fields]
    show_full_result_count = False
    actions = ["retry_now"]

    @admin.display(description="error")
    def short_error(self, obj: WriteBack) -> str:
        return obj.last_error[:120]

    @admin.action(description="Retry now")
    def retry_now(self, request, queryset):
        from connector.services.write_back import write_backs_retry

        queued, busy = write_backs_retry(pks=list(queryset.values_list("pk", flat=True)))
        if busy:
            self.message_user(request, f"{busy} write-back(s) are being sent now and were left alone.")
        self.message_user(request, f"{queued} write-back(s) queued again.", messages.SUCCESS)

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(ClinicianLink)
class ClinicianLinkAdmin(SimpleHistoryAdmin):
    list_display = ["fhir_user", "environment", "user", "tenant", "created_at"]
    list_filter = ["environment"]
    # fhir_user is encrypted: a search term is also looked up as an exact fhirUser URL by its keyed hash.
    search_fields = ["user__username", "tenant__name"]
    search_help_text = "Username, organization, or an exact fhirUser URL."
    list_select_related = ["user", "tenant"]
    raw_id_fields = ["user"]
    autocomplete_fields = ["tenant"]

    def get_search_results(self, request, queryset, search_term):
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        term = search_term.strip()
        if term:
            results |= queryset.filter(fhir_user_hash__in=lookup_hashes(term, purpose=EHR_USER))
        return results, may_have_duplicates


@admin.register(Meeting)
class MeetingAdmin(admin.ModelAdmin):
    list_display = ["meeting_id", "tenant", "backend", "conference_id", "created_at"]
    search_fields = ["=meeting_id", "=conference_id", "tenant__name"]
    list_select_related = ["tenant"]
    readonly_fields = [f.name for f in Meeting._meta.fields]
    show_full_result_count = False
