"""Load the sandbox EHR's made-up demo data (clinicians, analysts, patients, visits). Safe to run again."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from connector.sandbox_ehr.seed import seed_sandbox_ehr


class Command(BaseCommand):
    help = "Create or reset the sandbox EHR's demo data; appointments move to today and tomorrow."

    def handle(self, *args, **options):
        count = seed_sandbox_ehr()
        self.stdout.write(self.style.SUCCESS(f"Sandbox EHR demo data is ready ({count} FHIR resources)."))
