"""Phone numbers: parse to E.164 with `phonenumbers`, and a keyed hash to find a number without storing it.

The hash is connector/lookup_hash.py's, purpose "phone".

The hash is keyed by `PHONE_HASH_KEY`, its own key, so that rotating
`SECRET_KEY` never forgets an opt-out. Like `FIELD_ENCRYPTION_KEYS` it lists
keys, the current one first: new hashes use the first, lookups try every one
(`number_hashes`), and `manage.py rehash_phone_numbers` moves stored hashes to
the first key so an old key can be dropped. Without it (development only;
production refuses to start) the hash is keyed by `SECRET_KEY`, as before this
setting existed: listing the old `SECRET_KEY` after a new key in
`PHONE_HASH_KEY` keeps the hashes made that way findable.
"""

from __future__ import annotations

import phonenumbers

from connector import lookup_hash


class InvalidPhoneNumber(ValueError):
    pass


def to_e164(raw: str, *, default_region: str | None = None) -> str:
    """The number in E.164 (+14155550100), or InvalidPhoneNumber.

    `default_region` (ISO 3166 two letters) is the country of a number written without
    its country code; without one, only numbers with a country code (+44...) are usable.
    There is no built-in default: a fixed "US" silently lost every other country's patients.
    """
    try:
        parsed = phonenumbers.parse(raw, (default_region or "").upper() or None)
    except phonenumbers.NumberParseException as error:
        raise InvalidPhoneNumber("not a phone number") from error
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidPhoneNumber("not a valid phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def patient_region(sms_settings) -> str:
    """The country of patients' numbers written without a country code, for one endpoint.

    The endpoint's SMS settings say it (`phone_region`), else the country of its sending
    number (a hospital texts patients of its own country); "" when neither is known.
    """
    if sms_settings is None:
        return ""
    number = sms_settings.phone_number if sms_settings.phone_number_id else None
    return (sms_settings.phone_region or (number.country if number else "")).upper()


def is_mobile_capable(e164: str) -> bool:
    """False only for numbers known to be landlines; many regions cannot tell."""
    number_type = phonenumbers.number_type(phonenumbers.parse(e164))
    return number_type not in (
        phonenumbers.PhoneNumberType.FIXED_LINE,
        phonenumbers.PhoneNumberType.TOLL_FREE,
    )


def region_of(e164: str) -> str:
    return phonenumbers.region_code_for_number(phonenumbers.parse(e164)) or ""


def phone_hash_keys() -> tuple[str, ...]:
    """The configured keys, current first (SECRET_KEY when PHONE_HASH_KEY is unset: development)."""
    return lookup_hash.hash_keys()


def number_hash(e164: str) -> str:
    """HMAC-SHA256 of the number under the current key: the same number gives the same hash, the hash no number."""
    return lookup_hash.lookup_hash(e164, purpose=lookup_hash.PHONE)


def phone_hash_key_id() -> str:
    """A fingerprint of the current key, stored with each opt-out: tells which rows a rotation left behind."""
    return lookup_hash.hash_key_id(purpose=lookup_hash.PHONE)


def number_hashes(e164: str) -> tuple[str, ...]:
    """The number's hash under every configured key, the current one first: what a lookup must try."""
    return lookup_hash.lookup_hashes(e164, purpose=lookup_hash.PHONE)


def last_four(e164: str) -> str:
    return e164[-4:]
