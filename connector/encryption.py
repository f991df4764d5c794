"""Field-level encryption for the few sensitive values the connector must hold.

Values are encrypted with Fernet (AES-128-CBC + HMAC-SHA256) from `cryptography`.
`FIELD_ENCRYPTION_KEYS` lists keys newest first: the first encrypts, every key
decrypts, so a key can be rotated by putting a new one in front and running
`manage.py rotate_field_keys` to re-encrypt old rows before dropping the old key.
"""

from __future__ import annotations

import base64
import hashlib
import json
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import FieldError, ImproperlyConfigured, ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models.lookups import Exact


@lru_cache(maxsize=4)
def _fernet_for(keys: tuple[str, ...], secret_key: str) -> MultiFernet:
    if not keys:
        if not settings.DEBUG:
            raise ImproperlyConfigured("FIELD_ENCRYPTION_KEYS is required in production mode.")
        # Development only: derive a stable key from SECRET_KEY so the demo works
        # without configuration.
        derived = base64.urlsafe_b64encode(hashlib.sha256(secret_key.encode()).digest())
        keys = (derived.decode(),)
    try:
        return MultiFernet([Fernet(key) for key in keys])
    except ValueError as error:
        raise ImproperlyConfigured(
            "FIELD_ENCRYPTION_KEYS holds a value that is not a Fernet key (32 url-safe base64-encoded bytes)."
        ) from error


def fernet() -> MultiFernet:
    return _fernet_for(tuple(settings.FIELD_ENCRYPTION_KEYS), settings.SECRET_KEY)


def encrypt_text(value: str) -> str:
    return fernet().encrypt(value.encode()).decode()


def decrypt_text(token: str) -> str:
    try:
        return fernet().decrypt(token.encode()).decode()
    except InvalidToken as error:
        raise ImproperlyConfigured(
            "An encrypted value could not be decrypted with any key in FIELD_ENCRYPTION_KEYS: "
            "a key was removed before its rows were re-encrypted."
        ) from error


def reencrypt_text(token: str) -> str:
    """The same value encrypted with the newest key."""
    return fernet().rotate(token.encode()).decode()


class EncryptedTextField(models.TextField):
    """A text column stored encrypted; reads give back the plain text.

    Encrypted values cannot be searched or compared in SQL (each encryption of
    a value differs): look rows up by another column, such as a keyed hash
    beside it (connector/lookup_hash.py). Only `isnull` and `=""` (empty is
    stored as is) work in filters; any other raises FieldError instead of
    silently matching nothing.
    """

    def get_lookup(self, lookup_name):
        if lookup_name == "exact":
            return _EmptyOnlyExact
        if lookup_name != "isnull":
            raise _not_searchable(self, lookup_name)
        return super().get_lookup(lookup_name)

    def from_db_value(self, value, expression, connection):
        if value is None or value == "":
            return value
        return decrypt_text(value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if value is None or value == "":
            return value
        return encrypt_text(value)


def _not_searchable(field, lookup_name: str) -> FieldError:
    return FieldError(
        f"{field.model.__name__}.{field.name} is stored encrypted and cannot be filtered with "
        f"'{lookup_name}': filter on its keyed hash (connector/lookup_hash.py) instead."
    )


class _EmptyOnlyExact(Exact):
    """`field=""` on an encrypted column: the one comparison that means what it says."""

    def get_prep_lookup(self):
        if self.rhs not in ("", None):
            raise _not_searchable(self.lhs.output_field, "exact")
        return super().get_prep_lookup()


class EncryptedJSONField(EncryptedTextField):
    """A JSON value stored encrypted in a text column; reads give back the decoded value.

    For small documents that hold identifiers of people (a launch's context):
    nothing inside can be queried in SQL.
    """

    def __init__(self, *args, encoder=None, **kwargs):
        self.encoder = encoder or DjangoJSONEncoder
        super().__init__(*args, **kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        if self.encoder is not DjangoJSONEncoder:
            kwargs["encoder"] = self.encoder
        return name, path, args, kwargs

    def from_db_value(self, value, expression, connection):
        text = super().from_db_value(value, expression, connection)
        if text is None or text == "":
            return text
        return json.loads(text)

    def to_python(self, value):
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError as error:
                raise ValidationError("Not valid JSON.", code="invalid") from error
        return value

    def get_prep_value(self, value):
        if value is None:
            return None
        return encrypt_text(json.dumps(value, cls=self.encoder, separators=(",", ":"), sort_keys=True))

    def value_to_string(self, obj):
        return json.dumps(self.value_from_object(obj), cls=self.encoder)
