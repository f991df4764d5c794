"""Keyed hashes to find a row by a value the connector keeps only encrypted (or not at all).

Phone numbers (sms/phones.py) and EHR user IDs (fhirUser URLs) are stored
encrypted (connector/encryption.py) or not stored; a lookup needs something
equal for equal values, so beside them sits an HMAC-SHA256 of the value: the
same value gives the same hash, the hash gives no value.

The hashes are keyed by `PHONE_HASH_KEY` (the name predates EHR user IDs), a
key of their own so that rotating `SECRET_KEY` loses no lookup. It lists keys,
the current one first: new hashes use the first, lookups try every one
(`lookup_hashes`), and `manage.py rehash_phone_numbers` moves stored hashes to
the first key so an old key can be dropped. Without it (development only;
production refuses to start) the hashes are keyed by `SECRET_KEY`.

Each kind of value (`purpose`: "phone", "ehr-user") has its own derived key, so
a hash of one kind never matches another kind's.
"""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache

from django.conf import settings
from django.db import models

PHONE = "phone"
EHR_USER = "ehr-user"


def hash_keys() -> tuple[str, ...]:
    """The configured keys, current first (SECRET_KEY when PHONE_HASH_KEY is unset: development)."""
    configured = tuple(key for key in getattr(settings, "PHONE_HASH_KEY", []) if key)
    return configured or (settings.SECRET_KEY,)


@lru_cache(maxsize=16)
def _derived(purpose: str, keys: tuple[str, ...]) -> tuple[bytes, ...]:
    return tuple(hashlib.sha256(f"{purpose}-lookup:{key}".encode()).digest() for key in keys)


def _hash(key: bytes, value: str) -> str:
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def lookup_hash(value: str, *, purpose: str) -> str:
    """HMAC-SHA256 of the value under the current key."""
    return _hash(_derived(purpose, hash_keys())[0], value)


def lookup_hashes(value: str, *, purpose: str) -> tuple[str, ...]:
    """The value's hash under every configured key, the current one first: what a lookup must try."""
    return tuple(_hash(key, value) for key in _derived(purpose, hash_keys()))


def hash_key_id(*, purpose: str) -> str:
    """A fingerprint of the current key: tells which stored hashes a rotation left behind."""
    return hashlib.sha256(b"key-id:" + _derived(purpose, hash_keys())[0]).hexdigest()[:12]


class LookupHashField(models.CharField):
    """The keyed hash of another field of the model, filled in on save.

    `LookupHashField(source="fhir_user", purpose=EHR_USER)`: saving the row
    stores `lookup_hash(row.fhir_user)` ("" when it is empty). A `save(update_fields=[...])` naming
    the source must name this field too (models using it add it in `save`);
    `QuerySet.update()` bypasses it. Query with `lookup_hashes(value)`:
    `Model.objects.filter(fhir_user_hash__in=lookup_hashes(url, purpose=EHR_USER))`.
    """

    def __init__(self, *args, source: str, purpose: str, **kwargs):
        self.source = source
        self.purpose = purpose
        kwargs.setdefault("max_length", 64)
        kwargs.setdefault("blank", True)
        kwargs.setdefault("editable", False)
        super().__init__(*args, **kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        kwargs["source"] = self.source
        kwargs["purpose"] = self.purpose
        for key, default in (("max_length", 64), ("blank", True), ("editable", False)):
            value = getattr(self, key)
            if value == default:
                kwargs.pop(key, None)
            else:
                kwargs[key] = value
        return name, path, args, kwargs

    def pre_save(self, model_instance, add):
        source = getattr(model_instance, self.source) or ""
        value = lookup_hash(source, purpose=self.purpose) if source else ""
        setattr(model_instance, self.attname, value)
        return value


def hash_fields_for(model: type[models.Model], update_fields) -> list[str] | None:
    """`update_fields` plus the lookup hashes of the fields it names (None stays None: every field)."""
    if update_fields is None:
        return None
    names = set(update_fields)
    extra = [
        f.name
        for f in model._meta.concrete_fields
        if isinstance(f, LookupHashField) and f.source in names and f.name not in names
    ]
    return [*update_fields, *extra]
