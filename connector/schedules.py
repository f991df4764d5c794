"""Periodic tasks of the core app, written to django-q2 by `manage.py setup_schedules`."""

from django_q.models import Schedule

SCHEDULES = [
    {
        # Queues again whatever a lost task left in progress, and due write-backs (connector/sweeper.py).
        "name": "sweep work whose lease ended",
        "func": "connector.tasks.work_sweep",
        "schedule_type": Schedule.MINUTES,
        "minutes": 1,
        "repeats": -1,
    },
    {
        "name": "mark visits nobody started as no-shows",
        "func": "connector.tasks.visits_mark_no_show",
        "schedule_type": Schedule.MINUTES,
        "minutes": 15,
        "repeats": -1,
    },
    {
        "name": "purge old launch states",
        "func": "connector.tasks.launch_states_purge",
        "schedule_type": Schedule.HOURLY,
        "repeats": -1,
    },
    {
        "name": "purge stored Idempotency-Key answers after a day",
        "func": "connector.tasks.idempotent_requests_purge",
        "schedule_type": Schedule.HOURLY,
        "repeats": -1,
    },
]
