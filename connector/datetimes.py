"""One way to show a date or a time across the product: "5 Dec 2026, 08:44 CET".

Day, short month, year, 24-hour time and the zone's name, so a reader never has to
guess which zone a time is in. Pages render it in the zone given (the visit's
department, a report's zone) or the active one (UTC), inside a `<time>` element that
connector/static/js/local-time.js rewrites into the reader's own zone, in the same
format. English month names whatever the process locale (like the texts, sms/texts.py).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, tzinfo

from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def zone_name(moment: datetime) -> str:
    """The zone's abbreviation (CET, EST), or its offset when it has none (+04)."""
    name = moment.tzname() or ""
    if not name:
        return "UTC"
    return f"UTC{name}" if name[0] in "+-" else name


def format_day(value: date) -> str:
    return f"{value.day} {MONTHS[value.month - 1]} {value.year}"


def format_when(value: datetime | date | None, zone: tzinfo | None = None, *, day_only: bool = False) -> str:
    """The text: "5 Dec 2026, 08:44 CET" ("5 Dec 2026" for a date, or with day_only)."""
    if value is None or value == "":
        return ""
    if not isinstance(value, datetime):
        return format_day(value)
    if timezone.is_naive(value):
        value = timezone.make_aware(value, UTC)
    local = timezone.localtime(value, zone)
    if day_only:
        return format_day(local.date())
    return f"{format_day(local.date())}, {local:%H:%M} {zone_name(local)}"


def format_time_of_day(value: datetime, zone: tzinfo | None = None) -> str:
    """Only the clock: "08:44 CET" (for a second time on the same day)."""
    local = timezone.localtime(value, zone)
    return f"{local:%H:%M} {zone_name(local)}"


def when_html(
    value: datetime | date | None, zone: tzinfo | None = None, *, day_only: bool = False
) -> SafeString:
    """`<time>` with the machine-readable moment, for local-time.js to show in the reader's zone."""
    text = format_when(value, zone, day_only=day_only)
    if not text or not isinstance(value, datetime):
        return format_html("{}", text)
    moment = (timezone.make_aware(value, UTC) if timezone.is_naive(value) else value).astimezone(UTC)
    return format_html(
        '<time datetime="{}" data-local="{}">{}</time>',
        moment.isoformat().replace("+00:00", "Z"),
        "date" if day_only else "datetime",
        text,
    )
