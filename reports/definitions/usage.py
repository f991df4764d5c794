"""Usage summary: per day from the roll-ups, totals for the range, and this month's allotment."""

from __future__ import annotations

from datetime import date, timedelta
from functools import cached_property
from typing import Any

from django.db.models import Max, Sum

from reports.base import Column, Report, ReportForm
from reports.charts import Series, bar_chart, line_chart
from reports.models import ADDITIVE_FIELDS, BUCKET_FIELDS, AllotmentWarning, DailyRollup, ReportBuild
from reports.registry import register
from reports.selectors import allotment_usage
from reports.stats import average, histogram_percentile, ratio


def derived(sums: dict[str, Any]) -> dict[str, Any]:
    """The report's figures from summed roll-up numbers (one day, or a whole range)."""
    return {
        "visits": sums["visits"],
        "completed": sums["completed"],
        "no_shows": sums["no_shows"],
        "no_show_rate": ratio(sums["no_shows"], sums["visits"]),
        "total_minutes": sums["total_seconds"] / 60,
        "average_duration_minutes": sums["total_seconds"] / sums["completed"] / 60
        if sums["completed"]
        else None,
        "average_attendees": average(sums["attendees_sum"], sums["visits"]),
        "average_lobby_wait_seconds": average(sums["lobby_wait_sum_seconds"], sums["lobby_wait_count"]),
        "p90_lobby_wait_seconds": histogram_percentile(
            [sums[name] for name in BUCKET_FIELDS], 0.9, sums.get("lobby_wait_max_seconds")
        ),
        "sms_sent": sums["sms_sent"],
        "sms_delivered": sums["sms_delivered"],
        "sms_failed": sums["sms_failed"],
        "sms_delivery_rate": ratio(sums["sms_delivered"], sums["sms_sent"] + sums["sms_failed"]),
    }


def _empty() -> dict[str, Any]:
    return dict.fromkeys(ADDITIVE_FIELDS, 0) | {"lobby_wait_max_seconds": None}


@register
class UsageReport(Report):
    identifier = "usage"
    title = "Usage summary"
    position = 10
    description = (
        "Per day, from the nightly roll-ups: visits, minutes, lobby waits, no-shows and text delivery; "
        "and this month's use of the organization's visit allotment."
    )
    form_class = ReportForm
    columns = (
        Column("day", "Day", "day", "date"),
        Column("visits", "Visits", "visits", "number"),
        Column("completed", "Completed", "completed", "number"),
        Column("no_shows", "No-shows", "no_shows", "number"),
        Column("no_show_rate", "No-show rate", "no_show_rate", "percent"),
        Column("total_minutes", "Total minutes", "total_minutes", "decimal"),
        Column("average_duration_minutes", "Average duration (min)", "average_duration_minutes", "decimal"),
        Column(
            "average_lobby_wait_seconds", "Average lobby wait (s)", "average_lobby_wait_seconds", "decimal"
        ),
        Column(
            "p90_lobby_wait_seconds", "90th percentile lobby wait (s)", "p90_lobby_wait_seconds", "number"
        ),
        Column("sms_sent", "SMS sent", "sms_sent", "number"),
        Column("sms_delivered", "SMS delivered", "sms_delivered", "number"),
        Column("sms_failed", "SMS failed", "sms_failed", "number"),
        Column("sms_delivery_rate", "SMS delivery rate", "sms_delivery_rate", "percent"),
    )
    default_ordering = "day"

    def _rollups(self):
        rollups = DailyRollup.objects.filter(tenant=self.tenant, day__gte=self.first, day__lte=self.last)
        if self.params.get("department"):
            rollups = rollups.filter(department=self.params["department"])
        if self.params.get("environment"):
            rollups = rollups.filter(environment=self.params["environment"])
        return rollups

    @cached_property
    def build(self) -> ReportBuild | None:
        return ReportBuild.objects.filter(tenant=self.tenant).first()

    @cached_property
    def day_sums(self) -> list[tuple[date, dict[str, Any]]]:
        """Summed roll-ups per day: ONE grouped query, however many departments."""
        sums = {name: Sum(name) for name in ADDITIVE_FIELDS}
        found = {
            row.pop("day"): row
            for row in self._rollups()
            .order_by()
            .values("day")
            .annotate(lobby_wait_max_seconds=Max("lobby_wait_max_seconds"), **sums)
        }
        # Every day up to the last one built, zeros included, so the series has no holes.
        last = min(self.last, self.build.last_built_day) if self.build and self.build.last_built_day else None
        days: set[date] = set(found)
        if last is not None and self.first <= last:
            days |= {self.first + timedelta(days=i) for i in range((last - self.first).days + 1)}
        return [(day, found.get(day) or _empty()) for day in sorted(days)]

    @cached_property
    def per_day(self) -> list[dict[str, Any]]:
        return [{"day": day, **derived(sums)} for day, sums in self.day_sums]

    def rows(self) -> list[dict[str, Any]]:
        column, descending = self.ordering_key()
        present = [r for r in self.per_day if r[column.key] is not None]
        missing = [r for r in self.per_day if r[column.key] is None]
        return sorted(present, key=lambda r: r[column.key], reverse=descending) + missing

    @cached_property
    def totals(self) -> dict[str, Any]:
        """The range's figures: the sums of its days (the histogram too, for the percentile)."""
        total = _empty()
        for _, sums in self.day_sums:
            for name in ADDITIVE_FIELDS:
                total[name] += sums[name] or 0
            if sums["lobby_wait_max_seconds"] is not None:
                total["lobby_wait_max_seconds"] = max(
                    total["lobby_wait_max_seconds"] or 0, sums["lobby_wait_max_seconds"]
                )
        return derived(total)

    def summary(self) -> dict[str, Any]:
        usage = allotment_usage(tenant=self.tenant, zones=self.zones)
        warnings = list(
            AllotmentWarning.objects.filter(tenant=self.tenant, month=usage.month, sent_at__isnull=False)
            .order_by("threshold")
            .values("threshold", "sent_at", "recipients")
        )
        return {
            "totals": self.totals,
            "allotment": usage.as_dict() | {"warnings_sent": warnings},
            "built_through": self.build.last_built_day if self.build else None,
            "built_at": self.build.built_at if self.build else None,
        }

    def charts(self) -> list[str]:
        days = self.per_day
        if not days:
            return []
        labels = [f"{row['day']:%b %d}" for row in days]
        return [
            bar_chart(
                "Visits per day",
                labels,
                [
                    Series("Completed", [r["completed"] for r in days], "#0b5cad"),
                    Series("No-shows", [r["no_shows"] for r in days], "#b3261e"),
                ],
            ),
            line_chart(
                "Lobby wait (seconds)",
                labels,
                [
                    Series("Average", [r["average_lobby_wait_seconds"] for r in days], "#1d7a3a"),
                    Series("90th percentile", [r["p90_lobby_wait_seconds"] for r in days], "#9a6500"),
                ],
                unit=" s",
            ),
            bar_chart(
                "Texts per day",
                labels,
                [
                    Series("Delivered", [r["sms_delivered"] for r in days], "#1d7a3a"),
                    Series(
                        "Sent, not confirmed", [r["sms_sent"] - r["sms_delivered"] for r in days], "#0b5cad"
                    ),
                    Series("Failed", [r["sms_failed"] for r in days], "#b3261e"),
                ],
            ),
        ]
