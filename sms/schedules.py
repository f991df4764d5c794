"""Periodic tasks of the SMS app, written to django-q2 by `manage.py setup_schedules`."""

from django_q.models import Schedule

SCHEDULES = [
    {
        "name": "refresh toll-free verifications",
        "func": "sms.tasks.phone_number_refresh_verifications",
        "schedule_type": Schedule.HOURLY,
        "repeats": -1,
    },
    {
        "name": "send due texts",
        "func": "sms.tasks.messages_dispatch",
        "schedule_type": Schedule.MINUTES,
        "minutes": 1,
        "repeats": -1,
    },
    {
        "name": "purge patients' numbers after their visit",
        "func": "sms.tasks.appointment_phones_purge",
        "schedule_type": Schedule.HOURLY,
        "repeats": -1,
    },
    {
        "name": "warn about expiring feed certificates",
        "func": "sms.tasks.signing_certificates_warn_expiring",
        "schedule_type": Schedule.DAILY,
        "repeats": -1,
    },
]
