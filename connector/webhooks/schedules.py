"""Periodic tasks of outbound webhooks, written to django-q2 by `manage.py setup_schedules`.

Retries need no schedule of their own: the sweeper (connector/sweeper.py) queues due deliveries.
"""

from django_q.models import Schedule

SCHEDULES = [
    {
        "name": "forget old webhook deliveries",
        "func": "connector.webhooks.tasks.webhook_deliveries_purge",
        "schedule_type": Schedule.DAILY,
        "repeats": -1,
    },
]
