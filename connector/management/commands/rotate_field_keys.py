"""Re-encrypt every encrypted field with the newest key in FIELD_ENCRYPTION_KEYS.

Rotation: put a new key first in FIELD_ENCRYPTION_KEYS (keep the old ones after
it), restart, run this command, then remove the old keys.
"""

from __future__ import annotations

from django.apps import apps
from django.core.management.base import BaseCommand
from django.db import transaction

from connector.encryption import EncryptedTextField
from tenants.scoping import all_tenants


class Command(BaseCommand):
    help = "Re-encrypt encrypted fields with the newest FIELD_ENCRYPTION_KEYS key."

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=500)

    def handle(self, *args, **options):
        total = 0
        with all_tenants():
            for model in apps.get_models():
                fields = [f.name for f in model._meta.concrete_fields if isinstance(f, EncryptedTextField)]
                if not fields:
                    continue
                count = 0
                # Reading decrypts with whichever key fits; writing encrypts with the newest. update(),
                # not save(): no history row or signal for a change of key (EHR user IDs are history-tracked).
                rows = model._base_manager.only("pk", *fields).order_by("pk")
                for row in rows.iterator(chunk_size=options["batch_size"]):
                    with transaction.atomic():
                        model._base_manager.filter(pk=row.pk).update(**{f: getattr(row, f) for f in fields})
                    count += 1
                total += count
                self.stdout.write(f"{model._meta.label}: {count} row(s) re-encrypted ({', '.join(fields)})")
        self.stdout.write(self.style.SUCCESS(f"{total} row(s) now use the newest key."))
