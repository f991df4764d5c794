"""Phone numbers: parse to E.164 with `phonenumbers`, and a keyed hash to find a number without storing it."""

from __future__ import annotations

import hashlib
import hmac

import phonenumbers
from django.conf import settings


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


def number_hash(e164: str) -> str:
    """HMAC-SHA256 of the number: the same number gives the same hash, the hash gives no number."""
    key = hashlib.sha256(f"phone-lookup:{settings.SECRET_KEY}".encode()).digest()
    return hmac.new(key, e164.encode(), hashlib.sha256).hexdigest()


def last_four(e164: str) -> str:
    return e164[-4:]
