"""Move stored lookup hashes (opt-outs, texts, EHR user IDs) to the first key in PHONE_HASH_KEY.

Rotation: put a new key first in PHONE_HASH_KEY (keep the old ones after it;
coming from SECRET_KEY-keyed hashes, the old key is your SECRET_KEY), restart,
run this command, and remove an old key only when it reports 0 opt-outs left.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand

from connector.services.rehash import lookup_hashes_rehash
from sms.phones import phone_hash_keys
from sms.services.rehash import phone_hashes_rehash


class Command(BaseCommand):
    help = (
        "Re-hash stored phone numbers (opt-outs, texts) and EHR user IDs with the first PHONE_HASH_KEY key."
    )

    def handle(self, *args, **options):
        result = phone_hashes_rehash()
        # The same key hashes EHR user IDs (connector/lookup_hash.py): move them too.
        lookups = lookup_hashes_rehash()
        for label, moved in lookups.rehashed.items():
            self.stdout.write(f"{label}: {moved} EHR user ID hash(es) re-hashed")
        if lookups.conflicts:
            self.stdout.write(
                self.style.WARNING(
                    f"{lookups.conflicts} row(s) left under an older key: another row already holds the same "
                    "EHR user ID under the current key (a duplicate to resolve in the admin)."
                )
            )
        self.stdout.write(f"texts: {result.texts_rehashed} re-hashed")
        self.stdout.write(
            f"opt-outs: {result.opt_outs_rehashed} re-hashed, {result.opt_outs_merged} merged into a current row"
        )
        if result.opt_outs_left:
            self.stdout.write(
                self.style.WARNING(
                    f"{result.opt_outs_left} opt-out(s) may still be under an older key (the connector no longer "
                    "holds their number). Keep every older key listed in PHONE_HASH_KEY: they are moved when the "
                    "patient texts again. Dropping a key forgets the opt-outs made under it."
                )
            )
        elif len(phone_hash_keys()) > 1:
            self.stdout.write(
                self.style.SUCCESS("Every opt-out uses the first key: the older keys can be removed.")
            )
        else:
            self.stdout.write(self.style.SUCCESS("Every opt-out uses the current key."))
