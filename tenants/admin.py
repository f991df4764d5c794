"""Support staff's view of every organization (the admin runs with the tenant scope lifted)."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Count
from django.shortcuts import render
from django.utils.html import format_html
from simple_history.admin import SimpleHistoryAdmin

from tenants import services
from tenants.models import AccessRequest, ApiToken, Membership, MembershipInvite, Tenant, TenantStatus


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    raw_id_fields = ["user"]
    fields = ["user", "role", "ehr_username", "created_at"]
    readonly_fields = ["created_at"]


@admin.register(Tenant)
class TenantAdmin(SimpleHistoryAdmin):
    list_display = [
        "name",
        "microsoft_tenant_id",
        "ehr_vendor",
        "data_region",
        "status",
        "member_count",
        "created_at",
    ]
    list_filter = ["status", "ehr_vendor", "data_region"]
    # One search box finds an organization by its name or its Microsoft 365 tenant ID.
    search_fields = ["name", "=microsoft_tenant_id"]
    readonly_fields = ["created_at"]
    inlines = [MembershipInline]
    actions = ["enable", "suspend"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(member_count=Count("memberships"))

    @admin.display(ordering="member_count", description="members")
    def member_count(self, obj: Tenant) -> int:
        return obj.member_count

    @admin.action(description="Enable the selected organizations")
    def enable(self, request, queryset):
        for tenant in queryset:
            services.tenant_set_status(tenant=tenant, status=TenantStatus.ENABLED)
        self.message_user(request, f"{queryset.count()} organization(s) enabled.", messages.SUCCESS)

    @admin.action(description="Suspend the selected organizations (their users can no longer sign in)")
    def suspend(self, request, queryset):
        for tenant in queryset:
            services.tenant_set_status(tenant=tenant, status=TenantStatus.SUSPENDED)
        self.message_user(request, f"{queryset.count()} organization(s) suspended.", messages.WARNING)


class RejectionForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea, help_text="The requester reads this.")


@admin.register(AccessRequest)
class AccessRequestAdmin(SimpleHistoryAdmin):
    class Media:
        css = {"all": ["tenants/admin.css"]}  # the state badges' colours

    list_display = [
        "organization_name",
        "microsoft_tenant_id",
        "ehr_vendor",
        "requester_email",
        "requested_at",
        "state_badge",
    ]
    list_filter = ["state", "ehr_vendor", "data_region"]
    search_fields = [
        "organization_name",
        "=microsoft_tenant_id",
        "requester_email",
        "technical_contact_email",
    ]
    list_select_related = ["tenant", "requested_by"]
    raw_id_fields = ["requested_by", "reviewed_by", "tenant"]
    readonly_fields = [
        "state",
        "requested_at",
        "reviewed_by",
        "reviewed_at",
        "rejection_reason",
        "tenant",
        "status_token",
    ]
    actions = ["approve", "reject"]
    date_hierarchy = "requested_at"

    @admin.display(description="state", ordering="state")
    def state_badge(self, obj: AccessRequest) -> str:
        # A class, not a style attribute: the Content-Security-Policy refuses inline styles.
        return format_html('<b class="access-request-{}">{}</b>', obj.state, obj.get_state_display())

    @admin.action(description="Approve: enable the organization and make the requester its administrator")
    def approve(self, request, queryset):
        done, refused = 0, []
        for access_request in queryset:
            try:
                services.access_request_approve(access_request=access_request, reviewed_by=request.user)
                done += 1
            except ValidationError as error:
                refused.append(f"{access_request.organization_name}: {' '.join(error.messages)}")
        if done:
            self.message_user(request, f"{done} request(s) approved.", messages.SUCCESS)
        for line in refused:
            self.message_user(request, line, messages.ERROR)

    @admin.action(description="Reject with a reason")
    def reject(self, request, queryset):
        if "apply" in request.POST:
            form = RejectionForm(request.POST)
            if form.is_valid():
                done, refused = 0, []
                for access_request in queryset:
                    try:
                        services.access_request_reject(
                            access_request=access_request,
                            reviewed_by=request.user,
                            reason=form.cleaned_data["reason"],
                        )
                        done += 1
                    except ValidationError as error:
                        refused.append(f"{access_request.organization_name}: {' '.join(error.messages)}")
                if done:
                    self.message_user(request, f"{done} request(s) rejected.", messages.SUCCESS)
                for line in refused:
                    self.message_user(request, line, messages.ERROR)
                return None
        else:
            form = RejectionForm()
        return render(
            request,
            "admin/tenants/reject_access_requests.html",
            {
                **self.admin_site.each_context(request),
                "title": "Reject access requests",
                "requests": queryset,
                "form": form,
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
                "opts": self.model._meta,
            },
        )

    def has_add_permission(self, request) -> bool:
        # Requests come from organizations, through the request access page or the API.
        return False


@admin.register(Membership)
class MembershipAdmin(SimpleHistoryAdmin):
    list_display = ["user", "tenant", "role", "ehr_username", "created_at"]
    list_filter = ["role", "tenant__status"]
    search_fields = [
        "user__username",
        "user__email",
        "tenant__name",
        "=tenant__microsoft_tenant_id",
        "ehr_username",
    ]
    list_select_related = ["user", "tenant"]
    raw_id_fields = ["user"]
    autocomplete_fields = ["tenant"]


@admin.register(MembershipInvite)
class MembershipInviteAdmin(admin.ModelAdmin):
    """Read-only for support: invitations are made and withdrawn by the organization's administrators."""

    list_display = ["email", "tenant", "role", "created_at", "accepted_at", "withdrawn_at"]
    list_filter = [
        "role",
        ("accepted_at", admin.EmptyFieldListFilter),
        ("withdrawn_at", admin.EmptyFieldListFilter),
    ]
    search_fields = ["email", "tenant__name", "=tenant__microsoft_tenant_id"]
    list_select_related = ["tenant"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ApiToken)
class ApiTokenAdmin(SimpleHistoryAdmin):
    list_display = ["name", "tenant", "prefix", "scope", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["scope", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "prefix", "tenant__name", "=tenant__microsoft_tenant_id"]
    list_select_related = ["tenant", "created_by"]
    readonly_fields = ["prefix", "created_by", "created_at", "last_used_at", "revoked_at"]
    autocomplete_fields = ["tenant"]

    class Media:
        js = ["js/copy-buttons.js"]  # the Copy button of a new token's one-time message

    actions = ["revoke"]

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["tenant", "name", "scope"]
        return ["tenant", "name", "scope", "prefix", "created_by", "created_at", "last_used_at", "revoked_at"]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return ["tenant", "scope", *self.readonly_fields]

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        # New tokens go through the service, which shows the secret exactly once.
        issued = services.api_token_create(
            tenant=obj.tenant, name=obj.name, scope=obj.scope, created_by=request.user
        )
        obj.pk = issued.token.pk
        obj.refresh_from_db()
        self.message_user(
            request,
            format_html(
                "Token created. Copy it now, it is not shown again: <code>{}</code> "
                '<button type="button" class="copy" data-copy="{}">Copy</button>',
                issued.raw,
                issued.raw,
            ),
            messages.WARNING,
        )

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request, queryset):
        for token in queryset:
            services.api_token_revoke(token=token)
        self.message_user(request, f"{queryset.count()} token(s) revoked.", messages.SUCCESS)
