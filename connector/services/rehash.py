"""Moving the keyed hashes of encrypted identifiers to the current PHONE_HASH_KEY (connector/lookup_hash.py).

Unlike an opt-out's hash, each of these sits beside its value (encrypted), so
every one can be recomputed: after a run none is left under an older key.
Run by `manage.py rehash_phone_numbers`, with the phone numbers' hashes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.apps import apps
from django.db import IntegrityError, transaction
from django.db.models import Q

from connector.lookup_hash import LookupHashField, lookup_hash
from tenants.scoping import all_tenants

BATCH = 500


@dataclass
class LookupRehashResult:
    rehashed: dict[str, int] = field(default_factory=dict)  # model label -> rows moved to the current key
    conflicts: int = 0  # rows whose current hash another row already holds (left as they were)


def lookup_hash_fields() -> list[tuple[type, list[LookupHashField]]]:
    """Every model with a LookupHashField (historical copies included), with those fields."""
    found = []
    for model in apps.get_models():
        fields = [f for f in model._meta.concrete_fields if isinstance(f, LookupHashField)]
        if fields:
            found.append((model, fields))
    return found


def lookup_hashes_rehash() -> LookupRehashResult:
    """Recompute every stored lookup hash that the current key would make differently."""
    result = LookupRehashResult()
    with all_tenants():
        for model, fields in lookup_hash_fields():
            moved = 0
            holding = Q()
            for hash_field in fields:
                holding |= ~Q(**{hash_field.source: ""})
            rows = model._base_manager.filter(holding).only(
                "pk", *[f.source for f in fields], *[f.name for f in fields]
            )
            for row in rows.order_by("pk").iterator(chunk_size=BATCH):
                changes = {}
                for hash_field in fields:
                    value = getattr(row, hash_field.source) or ""
                    current = lookup_hash(value, purpose=hash_field.purpose) if value else ""
                    if getattr(row, hash_field.attname) != current:
                        changes[hash_field.attname] = current
                if not changes:
                    continue
                try:
                    with transaction.atomic():
                        # update(), not save(): no history row, no signal, only the hash moves.
                        moved += model._base_manager.filter(pk=row.pk).update(**changes)
                except IntegrityError:
                    result.conflicts += 1
            result.rehashed[model._meta.label] = moved
    return result
