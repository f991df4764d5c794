"""Periodic tasks of the core app, written to django-q2 by `manage.py setup_schedules`."""

from django_q.models import Schedule

SCHEDULES = [
    {
        "name": "write-back retries",
        "func": "connector.tasks.write_back_retry_due",
        "schedule_type": Schedule.MINUTES,
        "minutes": 1,
        "repeats": -1,
    },
    {
        "name": "purge old launch states",
        "func": "connector.tasks.launch_states_purge",
        "schedule_type": Schedule.HOURLY,
        "repeats": -1,
    },
]
