"""Create or update the django-q2 schedules from code: nobody edits them by hand.

Each app lists its periodic tasks in `SCHEDULES` in its `schedules.py`; this
command makes the Schedule rows match and removes ones no longer listed.
"""

from __future__ import annotations

from importlib import import_module

from django.apps import apps
from django.core.management.base import BaseCommand
from django_q.models import Schedule

MANAGED_PREFIX = "connector:"


def declared_schedules() -> list[dict]:
    declared = []
    for app_config in apps.get_app_configs():
        try:
            module = import_module(f"{app_config.name}.schedules")
        except ModuleNotFoundError:
            continue
        declared.extend(getattr(module, "SCHEDULES", []))
    return declared


class Command(BaseCommand):
    help = "Create or update the periodic task schedules declared in code."

    def handle(self, *args, **options):
        declared = declared_schedules()
        names = set()
        for spec in declared:
            name = MANAGED_PREFIX + spec["name"]
            names.add(name)
            Schedule.objects.update_or_create(
                name=name,
                defaults={k: v for k, v in spec.items() if k != "name"},
            )
        removed, _ = Schedule.objects.filter(name__startswith=MANAGED_PREFIX).exclude(name__in=names).delete()
        self.stdout.write(f"{len(declared)} schedule(s) in place, {removed} removed.")
