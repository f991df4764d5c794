"""Periodic tasks of the reports app, written to django-q2 by `manage.py setup_schedules`.

The roll-up job runs every hour at half past. For each organization it does
real work once a day: when a local day has ended in every one of the
organization's time zones (shortly after midnight in its westernmost
department), it builds that day, catches up any day missed, rebuilds the last
seven and folds in late visit events. The other runs find nothing due in a few
queries. So an organization in New York and one in Copenhagen both get
yesterday's figures the same night, not a day late.
"""

from datetime import UTC, datetime, timedelta

from django_q.models import Schedule


def _next_half_past() -> datetime:
    now = datetime.now(UTC)
    candidate = now.replace(minute=30, second=0, microsecond=0)
    return candidate if candidate > now else candidate + timedelta(hours=1)


SCHEDULES = [
    {
        "name": "nightly report roll-ups and allotment warnings",
        "func": "reports.tasks.reports_build_due",
        "schedule_type": Schedule.HOURLY,
        "repeats": -1,
        "next_run": _next_half_past(),
    },
]
