"""Support staff's reports: roll-ups, builds and allotment warnings, and every report for any organization.

/admin/reports/dailyrollup/reports/                          every organization's allotment this month
/admin/reports/dailyrollup/reports/<tenant pk>/<report id>/  a report page, as the organization sees it
"""

from __future__ import annotations

from datetime import timedelta

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from reports.models import AllotmentWarning, DailyRollup, ReportBuild, RollupJob
from reports.presentation import build_report, csv_response, report_context
from reports.registry import all_reports, get_report
from reports.selectors import allotment_usage, usage_overview
from tenants.models import Tenant
from tenants.scoping import tenant_scope


@admin.register(DailyRollup)
class DailyRollupAdmin(admin.ModelAdmin):
    list_display = [
        "day",
        "tenant",
        "department",
        "environment",
        "visits",
        "completed",
        "no_shows",
        "minutes",
        "lobby_wait_p90_seconds",
        "sms_sent",
        "sms_delivered",
        "sms_failed",
        "built_at",
    ]
    list_filter = ["environment", "tenant"]
    search_fields = ["department", "tenant__name", "=tenant__microsoft_tenant_id"]
    list_select_related = ["tenant"]
    date_hierarchy = "day"
    show_full_result_count = False
    change_list_template = "admin/reports/dailyrollup/change_list.html"

    @admin.display(description="minutes", ordering="total_seconds")
    def minutes(self, obj: DailyRollup) -> str:
        return f"{obj.total_minutes:,.0f}"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # built from the visits; change the visits and rebuild instead

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("reports/", view(self.reports_index), name="reports_overview"),
            path("reports/<int:tenant_pk>/<slug:report_id>/", view(self.report_page), name="reports_report"),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        extra = {"overview_url": reverse("admin:reports_overview")}
        return super().changelist_view(request, extra_context=(extra_context or {}) | extra)

    def _check(self, request: HttpRequest) -> None:
        if not self.has_view_permission(request):
            raise PermissionDenied

    def reports_index(self, request: HttpRequest) -> HttpResponse:
        """Every organization's allotment this month, warnings first, with links to its reports."""
        self._check(request)
        rows = usage_overview()
        rows.sort(key=lambda r: (-(r["usage"].level or 0), r["tenant"].name))
        warnings = AllotmentWarning.objects.select_related("tenant").order_by("-month", "-threshold")[:20]
        context = {
            **self.admin_site.each_context(request),
            "title": "Reports: this month's allotments",
            "rows": rows,
            "reports": all_reports(),
            "recent_warnings": warnings,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/reports/overview.html", context)

    def report_page(self, request: HttpRequest, tenant_pk: int, report_id: str) -> HttpResponse:
        self._check(request)
        tenant = get_object_or_404(Tenant, pk=tenant_pk)
        report_class = get_report(report_id)
        with tenant_scope(tenant):
            form, valid, built = build_report(request, report_class, tenant)
            if request.GET.get("format") == "csv" and valid:
                return csv_response(built)
            context = report_context(request, form, valid, built)
            usage = allotment_usage(tenant=tenant)
            context |= {
                **self.admin_site.each_context(request),
                "title": f"{report_class.title}: {tenant.name}",
                "tenant": tenant,
                "reports": all_reports(),
                "usage": usage,
                "warnings": list(
                    AllotmentWarning.objects.filter(month=usage.month, sent_at__isnull=False).order_by(
                        "threshold"
                    )
                ),
                "opts": self.model._meta,
            }
            response = TemplateResponse(
                request, "admin/reports/report.html", context, status=200 if valid else 400
            )
            return response.render()


@admin.register(ReportBuild)
class ReportBuildAdmin(admin.ModelAdmin):
    list_display = [
        "tenant",
        "last_built_day",
        "built_at",
        "last_range_start",
        "last_range_end",
        "last_duration_ms",
        "has_error",
    ]
    list_select_related = ["tenant"]
    search_fields = ["tenant__name", "=tenant__microsoft_tenant_id"]
    readonly_fields = [f.name for f in ReportBuild._meta.fields]
    actions = ["build_due", "rebuild_last_30_days"]

    @admin.display(boolean=True, description="error")
    def has_error(self, obj: ReportBuild) -> bool:
        return bool(obj.last_error)

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Build what is due (as the nightly job)")
    def build_due(self, request, queryset):
        from reports.jobs import rollup_days_plan

        days = 0
        for build in queryset.select_related("tenant"):
            with tenant_scope(build.tenant):
                days += len(rollup_days_plan(tenant=build.tenant))
        self.message_user(request, f"{days} day(s) queued for building (see Roll-up jobs).", messages.SUCCESS)

    @admin.action(description="Rebuild the last 30 days")
    def rebuild_last_30_days(self, request, queryset):
        from reports.jobs import rollup_days_mark_due

        last = timezone.now().date() - timedelta(days=1)
        for build in queryset.select_related("tenant"):
            rollup_days_mark_due(tenant=build.tenant, days=[last - timedelta(days=n) for n in range(30)])
            self.message_user(request, f"{build.tenant}: 30 day(s) queued for building.", messages.SUCCESS)


@admin.register(RollupJob)
class RollupJobAdmin(admin.ModelAdmin):
    list_display = ["day", "tenant", "state", "attempts", "lease_until", "built_at", "short_error"]
    list_filter = ["state"]
    list_select_related = ["tenant"]
    search_fields = ["tenant__name", "=tenant__microsoft_tenant_id"]
    readonly_fields = [f.name for f in RollupJob._meta.fields]
    date_hierarchy = "day"
    show_full_result_count = False
    actions = ["retry_now"]

    @admin.display(description="error")
    def short_error(self, obj: RollupJob) -> str:
        return obj.last_error[:120]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Retry now")
    def retry_now(self, request, queryset):
        from reports.jobs import rollup_jobs_retry

        count = rollup_jobs_retry(jobs=queryset.select_related("tenant"))
        self.message_user(
            request,
            f"{count} day(s) queued again; a day being built now is built once more when it ends.",
            messages.SUCCESS,
        )


@admin.register(AllotmentWarning)
class AllotmentWarningAdmin(admin.ModelAdmin):
    list_display = ["tenant", "month", "threshold", "used", "allotment", "recipients", "sent_at"]
    list_filter = ["threshold", "month"]
    list_select_related = ["tenant"]
    search_fields = ["tenant__name", "=tenant__microsoft_tenant_id"]
    readonly_fields = [f.name for f in AllotmentWarning._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
