"""Virtual appointments: one row per finished visit (completed or no-show), read from the visits."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from functools import cached_property
from typing import Any

from django import forms
from django.db.models import Count, DurationField, ExpressionWrapper, F, IntegerField, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce

from connector.models import Visit, VisitState
from reports.base import Column, Report, ReportForm
from reports.registry import register
from reports.selectors import AllotmentCutoff, allotment_cutoffs, within_allotment
from reports.zones import visit_time, zone
from sms.models import Appointment, MessageState, OutboundMessage
from tenants.scoping import all_tenants

REPORTED_STATES = (VisitState.COMPLETED, VisitState.NO_SHOW)
SENT_STATES = (MessageState.SENT, MessageState.DELIVERED)


class VisitReportForm(ReportForm):
    state = forms.ChoiceField(
        choices=[
            ("", "Completed and no-shows"),
            (VisitState.COMPLETED, "Completed"),
            (VisitState.NO_SHOW, "No show"),
        ],
        required=False,
        label="State",
    )


@register
class VirtualAppointmentsReport(Report):
    identifier = "virtual-appointments"
    title = "Virtual appointments"
    position = 20
    description = (
        "One row per visit that took place or was missed. Times are the visit's start (the scheduled start "
        "for a no-show), in UTC and in the department's time zone."
    )
    form_class = VisitReportForm
    columns = (
        Column("start_utc", "Start (UTC)", ("at", "pk"), "datetime"),
        Column("start_local", "Start (department time)", ("at", "pk"), "datetime"),
        Column("time_zone", "Time zone"),
        Column("duration_seconds", "Duration", ("duration", "pk"), "seconds"),
        Column("clinician", "Primary clinician", ("primary_clinician__username", "pk")),
        # Stored encrypted (docs/security.md): shown, not sortable; sort by the clinician instead.
        Column("clinician_ehr_id", "Clinician EHR user ID"),
        Column("department", "Department", ("department_id", "at", "pk")),
        Column("environment", "Environment", ("endpoint__environment", "at", "pk")),
        Column("attendees", "Attendees (peak)", ("peak_attendees", "pk"), "number"),
        Column("lobby_wait_seconds", "Lobby wait", ("lobby_wait_seconds", "pk"), "seconds"),
        Column("state", "State", ("state", "at", "pk")),
        Column(
            "within_allotment", "Within allotment", None, "bool", help="Counted in start order each month."
        ),
        Column("appointment_id", "Appointment ID", ("appointment_id", "pk")),
        Column("sms_sent", "SMS sent", ("sms_sent", "pk"), "number"),
    )
    default_ordering = "-start_utc"

    def filtered(self):
        """The visits of the range and filters, unordered (for rows and the summary)."""
        visits = (
            Visit.objects.filter(tenant=self.tenant, state__in=REPORTED_STATES)
            .annotate(at=visit_time())
            .filter(self.zones.visit_range_q(self.first, self.last))
        )
        if self.params.get("department"):
            visits = visits.filter(department_id=self.params["department"])
        if self.params.get("environment"):
            env = self.params["environment"]
            visits = visits.filter(
                endpoint_id__in=[e.pk for e in self.zones.endpoints.values() if e.environment == env]
            )
        if self.params.get("state"):
            visits = visits.filter(state=self.params["state"])
        return visits

    def rows(self):
        visits = self.filtered().annotate(
            duration=ExpressionWrapper(F("ended_at") - F("started_at"), output_field=DurationField())
        )
        fields = [
            "pk",
            "at",
            "started_at",
            "duration",
            "primary_clinician__username",
            "primary_clinician_ehr_id",
            "department_id",
            "endpoint_id",
            "peak_attendees",
            "lobby_wait_seconds",
            "state",
            "appointment_id",
        ]
        if self.ordering_key()[0].key == "sms_sent":
            # Sorting by it needs it for every row; otherwise values() counts a batch at once.
            visits = visits.annotate(
                sms_sent=Coalesce(Subquery(self._sent_per_visit(), output_field=IntegerField()), 0)
            )
            fields.append("sms_sent")
        return visits.order_by(*self.ordering()).values(*fields)

    def _sent_per_visit(self):
        """Texts sent for the outer visit's appointment, as a correlated subquery.

        From the appointment (index on endpoint and external ID), then its
        messages. The endpoint is the outer visit's, this organization's: a
        tenant condition here too only leads SQLite to the tenant index and a
        scan of every appointment per row.
        """
        with all_tenants():
            return (
                Appointment.objects.filter(
                    endpoint_id=OuterRef("endpoint_id"), external_id=OuterRef("appointment_id")
                )
                .order_by()
                .values("endpoint_id")
                .annotate(n=Count("messages", filter=Q(messages__state__in=SENT_STATES)))
                .values("n")
            )

    def _sent_counts(self, batch: Sequence[dict]) -> dict[tuple[int, str], int]:
        """Texts sent per (endpoint, appointment ID) for a batch of visits: one query."""
        if not batch or "sms_sent" in batch[0]:
            return {}
        counts = (
            OutboundMessage.objects.filter(
                appointment__endpoint_id__in={row["endpoint_id"] for row in batch},
                appointment__external_id__in={row["appointment_id"] for row in batch},
                state__in=SENT_STATES,
            )
            .order_by()
            .values_list("appointment__endpoint_id", "appointment__external_id")
            .annotate(n=Count("pk"))
        )
        return {(endpoint, external): n for endpoint, external, n in counts}

    @cached_property
    def cutoffs(self) -> dict[date, AllotmentCutoff]:
        return allotment_cutoffs(tenant=self.tenant, zones=self.zones, first=self.first, last=self.last)

    def values(self, batch: Sequence[dict]) -> list[dict[str, Any]]:
        sent = self._sent_counts(batch)
        out = []
        for row in batch:
            info = self.zones.endpoints.get(row["endpoint_id"])
            time_zone = info.time_zone if info else "UTC"
            duration = row["duration"]
            out.append(
                {
                    "start_utc": row["at"],
                    "start_local": row["at"].astimezone(zone(time_zone)),
                    "time_zone": time_zone,
                    "duration_seconds": int(duration.total_seconds()) if duration is not None else None,
                    "clinician": row["primary_clinician__username"] or "",
                    "clinician_ehr_id": row["primary_clinician_ehr_id"],
                    "department": row["department_id"],
                    "environment": info.environment if info else "",
                    "attendees": row["peak_attendees"],
                    "lobby_wait_seconds": row["lobby_wait_seconds"],
                    "state": row["state"],
                    "within_allotment": within_allotment(
                        self.cutoffs,
                        state=row["state"],
                        started_at=row["started_at"],
                        pk=row["pk"],
                        time_zone=time_zone,
                    ),
                    "appointment_id": row["appointment_id"],
                    "sms_sent": row["sms_sent"]
                    if "sms_sent" in row
                    else sent.get((row["endpoint_id"], row["appointment_id"]), 0),
                }
            )
        return out

    def summary(self) -> dict[str, Any]:
        totals = self.filtered().aggregate(
            visits=Count("pk"),
            completed=Count("pk", filter=Q(state=VisitState.COMPLETED)),
            no_shows=Count("pk", filter=Q(state=VisitState.NO_SHOW)),
        )
        return {"totals": totals}
