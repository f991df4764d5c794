"""Moving stored number hashes to the current PHONE_HASH_KEY (sms/phones.py).

A hash cannot be recomputed without the number. Texts keep their number
(encrypted) until it is purged, so their hash is recomputed from it. An opt-out
keeps only the hash and the fingerprint of the key that made it (`hash_key_id`):
it is moved when the connector still holds the number somewhere (a text or an
appointment not yet purged), or when the patient texts STOP or START again
(`opt_out_move_to_current_key`). Any other opt-out stays under its old key, and
stays found as long as that key is listed in PHONE_HASH_KEY:
`manage.py rehash_phone_numbers` says how many remain, so an old key is dropped
only once none does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from django.db import IntegrityError, transaction

from sms.models import Appointment, OptOut, OutboundMessage
from sms.phones import number_hash, number_hashes, phone_hash_key_id
from tenants.models import Tenant
from tenants.scoping import all_tenants

BATCH = 500


@dataclass
class RehashResult:
    texts_rehashed: int = 0
    opt_outs_rehashed: int = 0
    opt_outs_merged: int = 0  # an old-key row whose number also had a current-key row
    opt_outs_left: int = 0  # not known to be under the current key: keep the old keys listed


def opt_out_move_to_current_key(tenant: Tenant, hashes: tuple[str, ...]) -> None:
    """Move the number's opt-out made under an older key to the current one (hashes: `number_hashes`)."""
    current, older = hashes[0], hashes[1:]
    if not older or OptOut.objects.filter(tenant=tenant, number_hash=current).exists():
        return
    row = OptOut.objects.filter(tenant=tenant, number_hash__in=older).order_by("-opted_out_at").first()
    if row is not None:
        OptOut.objects.filter(pk=row.pk).update(number_hash=current, hash_key_id=phone_hash_key_id())


def phone_hashes_rehash() -> RehashResult:
    """Recompute every stored hash that the current key would make differently."""
    result = RehashResult()
    key_id = phone_hash_key_id()
    with all_tenants():
        texts = OutboundMessage.objects.exclude(to="").only("pk", "to", "to_hash")
        for text in texts.iterator(chunk_size=BATCH):
            current = number_hash(text.to)
            if text.to_hash != current:
                result.texts_rehashed += OutboundMessage.objects.filter(pk=text.pk).update(to_hash=current)

        behind = OptOut.objects.exclude(hash_key_id=key_id)
        for tenant_id in behind.values_list("tenant_id", flat=True).distinct():
            _opt_outs_rehash(tenant_id, key_id, result)
        result.opt_outs_left = OptOut.objects.exclude(hash_key_id=key_id).count()
    return result


def _numbers_held(tenant_id: int) -> Iterator[str]:
    """Every number the connector still holds for the organization (decrypted one row at a time)."""
    seen = set()
    for model, field in ((OutboundMessage, "to"), (Appointment, "phone")):
        rows = model.objects.filter(tenant_id=tenant_id).exclude(**{field: ""}).only("pk", field)
        for row in rows.iterator(chunk_size=BATCH):
            number = getattr(row, field)
            if number and number not in seen:
                seen.add(number)
                yield number


def _opt_outs_rehash(tenant_id: int, key_id: str, result: RehashResult) -> None:
    rows = OptOut.objects.filter(tenant_id=tenant_id)
    stored = {hashed: (pk, row_key) for hashed, pk, row_key in rows.values_list("number_hash", "pk", "hash_key_id")}
    for number in _numbers_held(tenant_id):
        hashes = number_hashes(number)
        current = hashes[0]
        if current in stored and stored[current][1] != key_id:  # made with this key before keys were recorded
            OptOut.objects.filter(pk=stored[current][0]).update(hash_key_id=key_id)
            stored[current] = (stored[current][0], key_id)
        for old in hashes[1:]:
            if old not in stored:
                continue
            old_pk = stored.pop(old)[0]
            if current in stored:  # both: keep the current row, opted out if either is
                with transaction.atomic():
                    if OptOut.objects.filter(pk=old_pk, active=True).exists():
                        OptOut.objects.filter(pk=stored[current][0]).update(active=True)
                    OptOut.objects.filter(pk=old_pk).delete()
                result.opt_outs_merged += 1
                continue
            try:
                with transaction.atomic():
                    OptOut.objects.filter(pk=old_pk).update(number_hash=current, hash_key_id=key_id)
            except IntegrityError:  # a STOP made the current row meanwhile: the next run merges them
                continue
            stored[current] = (old_pk, key_id)
            result.opt_outs_rehashed += 1
