"""SMS: one row per text, with the number masked to its last four digits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django import forms
from django.db.models import Count

from reports.base import Column, Report, ReportForm
from reports.registry import register
from reports.stats import ratio
from reports.zones import message_time
from sms.models import MessageKind, MessageState, OutboundMessage

KIND_LABELS = dict(MessageKind.choices)
STATE_LABELS = dict(MessageState.choices)


class SmsReportForm(ReportForm):
    state = forms.ChoiceField(
        choices=[("", "All states"), *MessageState.choices], required=False, label="State"
    )
    kind = forms.ChoiceField(choices=[("", "All types"), *MessageKind.choices], required=False, label="Type")


@register
class SmsReport(Report):
    identifier = "sms"
    title = "SMS"
    position = 30
    description = (
        "One row per text: when it was sent (or due), the number's last four digits, its type and what "
        "became of it. Texts tied to no appointment (help, opt-out) count by UTC day."
    )
    form_class = SmsReportForm
    columns = (
        Column("time", "Time (UTC)", ("at", "pk"), "datetime"),
        Column("number", "Number", ("to_last_four", "pk")),
        Column("type", "Type", ("kind", "at", "pk")),
        Column("state", "State", ("state", "at", "pk")),
        Column("error", "Error", ("error", "pk")),
        Column("provider", "Provider", ("provider", "at", "pk")),
        Column("appointment_id", "Appointment ID", ("appointment__external_id", "pk")),
        Column("department", "Department", ("appointment__department", "at", "pk")),
    )
    default_ordering = "-time"

    def filtered(self, *, with_state: bool = True):
        endpoint = "appointment__endpoint_id"
        messages = (
            OutboundMessage.objects.filter(tenant=self.tenant)
            .annotate(at=message_time())
            .filter(self.zones.range_q("at", self.first, self.last, endpoint, endpointless=True))
        )
        if self.params.get("department"):
            messages = messages.filter(appointment__department=self.params["department"])
        if self.params.get("environment"):
            env = self.params["environment"]
            pks = [e.pk for e in self.zones.endpoints.values() if e.environment == env]
            messages = messages.filter(appointment__endpoint_id__in=pks)
        if self.params.get("kind"):
            messages = messages.filter(kind=self.params["kind"])
        if with_state and self.params.get("state"):
            messages = messages.filter(state=self.params["state"])
        return messages

    def rows(self):
        return (
            self.filtered()
            .order_by(*self.ordering())
            .values(
                "at",
                "to_last_four",
                "kind",
                "state",
                "error",
                "provider",
                "appointment__external_id",
                "appointment__department",
            )
        )

    def values(self, batch: Sequence[dict]) -> list[dict[str, Any]]:
        return [
            {
                "time": row["at"],
                "number": f"…{row['to_last_four']}" if row["to_last_four"] else "",
                "type": KIND_LABELS.get(row["kind"], row["kind"]),
                "state": row["state"],
                "error": row["error"],
                "provider": row["provider"],
                "appointment_id": row["appointment__external_id"] or "",
                "department": row["appointment__department"] or "",
            }
            for row in batch
        ]

    def summary(self) -> dict[str, Any]:
        """Totals per state (over every state, whatever the state filter), and the delivery rate."""
        counts = dict(
            self.filtered(with_state=False)
            .order_by()
            .values_list("state")
            .annotate(n=Count("pk"))
            .values_list("state", "n")
        )
        per_state = {state: counts.get(state, 0) for state in MessageState.values}
        attempted = (
            per_state[MessageState.SENT] + per_state[MessageState.DELIVERED] + per_state[MessageState.FAILED]
        )
        return {
            "per_state": per_state,
            "total": sum(per_state.values()),
            "delivery_rate": ratio(per_state[MessageState.DELIVERED], attempted),
        }
