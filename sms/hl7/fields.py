"""Field-level reading of HL7v2 values: dates, durations, telephone numbers, languages, places.

Everything here works on python-hl7 segments or plain strings and knows nothing
of the feed; `parse.py` assembles a message from these pieces.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta

import hl7

from sms.phones import InvalidPhoneNumber, to_e164

_DTM = re.compile(
    r"^(\d{12}(?:\d{2}(?:\.\d{1,4})?)?)([+-])(\d{2})(\d{2})$|^(\d{12}(?:\d{2}(?:\.\d{1,4})?)?)$"
)


def value(
    segment: hl7.Segment | None, field_no: int, component: int = 1, repetition: int = 1, subcomponent: int = 1
) -> str:
    """One unescaped value, "" when absent (or the HL7 null ""), whatever the depth the sender used."""
    if segment is None:
        return ""
    try:
        found = segment.extract_field(1, field_no, repetition, component, subcomponent)
    except (IndexError, TypeError, ValueError):
        return ""
    # An escaped NUL (\X00\) unescapes to a character PostgreSQL cannot store: dropped.
    found = str(found).replace("\x00", "").strip()
    return "" if found == '""' else found


def repetitions(segment: hl7.Segment | None, field_no: int) -> int:
    if segment is None or field_no >= len(segment):
        return 0
    return len(segment(field_no))


def dtm_parse(text: str) -> tuple[datetime, timedelta | None]:
    """(naive local time, UTC offset or None) of an HL7 DTM/TS value with at least minutes.

    python-hl7's parse_datetime reads the digits; the offset is read here because
    it gets the sign of offsets such as -0030 wrong.
    """
    match = _DTM.match(text)
    if not match:
        raise ValueError("not YYYYMMDDHHMM[SS[.S]][+/-ZZZZ]")
    if match.group(5):
        return hl7.parse_datetime(match.group(5)), None
    local, sign, hours, minutes = match.group(1, 2, 3, 4)
    if int(hours) > 14 or int(minutes) >= 60:
        raise ValueError("offset out of range")
    offset = timedelta(hours=int(hours), minutes=int(minutes))
    return hl7.parse_datetime(local), (-offset if sign == "-" else offset)


# --- durations -------------------------------------------------------------------------

_LONGEST_SECONDS = 366 * 86400  # any longer is no appointment; parse.py refuses past 24 hours anyway
# fmt: off
_UNITS = {
    "M": 60, "MIN": 60, "MINS": 60, "MINUTE": 60, "MINUTES": 60,
    "H": 3600, "HR": 3600, "HRS": 3600, "HOUR": 3600, "HOURS": 3600,
    "S": 1, "SEC": 1, "SECS": 1, "SECOND": 1, "SECONDS": 1,
    "D": 86400, "DAY": 86400, "DAYS": 86400,
}
# fmt: on


def duration_from(amount: str, unit_code: str, unit_text: str = "") -> timedelta | None:
    """SCH-9/SCH-10-style amount and unit (M, MIN, min, H, HR, S, SEC, ISO+ s/min/h/d); None if unusable.

    An empty unit is read as minutes: that is what senders mean in practice, although
    HL7's default unit would be seconds (the docs say so).
    """
    try:
        number = float(amount)
    except ValueError:
        return None
    unit = (unit_code or unit_text or "MIN").strip().upper()
    seconds = _UNITS.get(unit)
    # NaN, inf and 1e400 are floats too, and timedelta refuses them (or anything past 999,999,999 days).
    if seconds is None or not math.isfinite(number) or not 0 < number * seconds <= _LONGEST_SECONDS:
        return None
    return timedelta(seconds=number * seconds)


# --- phone numbers and languages ---------------------------------------------------------

# HL7 table 0201 (telecommunication use code) and 0202 (equipment type).
_NOT_A_PATIENT_PHONE_USE = {
    "NET",
    "BPN",
    "EMR",
    "ASN",
}  # e-mail, beeper, emergency contact, answering service
_NOT_A_PHONE_EQUIPMENT = {"FX", "MD", "BP", "INTERNET", "X.400", "TDD", "TTY"}


def _xtn_raw(pid: hl7.Segment, repetition: int) -> str:
    """The number of one XTN repetition: XTN-5/6/7 (country, area, local), else XTN-12, else XTN-1."""
    country = re.sub(r"\D", "", value(pid, 13, 5, repetition))
    area = re.sub(r"\D", "", value(pid, 13, 6, repetition))
    local = re.sub(r"\D", "", value(pid, 13, 7, repetition))
    if local:
        return f"+{country}{area}{local}" if country else f"{area}{local}"
    unformatted = value(pid, 13, 12, repetition)
    if unformatted:
        return unformatted
    formatted = value(pid, 13, 1, repetition)
    # XTN-1 may carry "X123" (extension), "B..." (beeper) and "C..." (comment) parts.
    return re.split(r"[XxBbCc]", formatted, maxsplit=1)[0]


def mobile_number(pid: hl7.Segment | None, *, default_region: str = "") -> str:
    """The patient's best textable number in E.164 from PID-13, or "".

    Rank: cellular (XTN-3 = CP) for the primary residence (XTN-2 = PRN), then any
    other cellular, then numbers of unknown equipment, then plain telephones (PH,
    which may still be mobile). Fax, modem, beeper, e-mail, emergency contacts are skipped.
    """
    ranked: list[tuple[int, int, str]] = []
    for repetition in range(1, repetitions(pid, 13) + 1):
        use = value(pid, 13, 2, repetition).upper()
        equipment = value(pid, 13, 3, repetition).upper()
        if use in _NOT_A_PATIENT_PHONE_USE or equipment in _NOT_A_PHONE_EQUIPMENT:
            continue
        if equipment == "CP":
            rank = 0 if use in ("PRN", "") else 1
        elif equipment == "":
            rank = 2
        else:
            rank = 3
        raw = _xtn_raw(pid, repetition)
        if raw:
            ranked.append((rank, repetition, raw))
    for _rank, _repetition, raw in sorted(ranked):
        try:
            return to_e164(raw, default_region=default_region)
        except InvalidPhoneNumber:
            continue
    return ""


# fmt: off
_LANGUAGES = {
    # ISO 639-2 (B and T codes) and common names -> ISO 639-1.
    "ENG": "en", "ENGLISH": "en", "SPA": "es", "SPANISH": "es", "ESPANOL": "es", "ESPAÑOL": "es", "CHI": "zh",
    "ZHO": "zh", "CHINESE": "zh", "MANDARIN": "zh", "CANTONESE": "zh", "YUE": "zh", "CMN": "zh", "VIE": "vi",
    "VIETNAMESE": "vi", "TGL": "tl", "TAGALOG": "tl", "FIL": "tl", "KOR": "ko", "KOREAN": "ko", "RUS": "ru",
    "RUSSIAN": "ru", "ARA": "ar", "ARABIC": "ar", "FRE": "fr", "FRA": "fr", "FRENCH": "fr", "POR": "pt",
    "PORTUGUESE": "pt", "GER": "de", "DEU": "de", "GERMAN": "de", "HAT": "ht", "HAITIAN CREOLE": "ht",
    "CREOLE": "ht", "ITA": "it", "ITALIAN": "it", "POL": "pl", "POLISH": "pl", "JPN": "ja", "JAPANESE": "ja",
    "HIN": "hi", "HINDI": "hi", "PER": "fa", "FAS": "fa", "FARSI": "fa", "PERSIAN": "fa", "SOM": "so",
    "SOMALI": "so", "URD": "ur", "URDU": "ur", "BEN": "bn", "BENGALI": "bn", "PAN": "pa", "PUNJABI": "pa",
    "ARM": "hy", "HYE": "hy", "ARMENIAN": "hy", "GRE": "el", "ELL": "el", "GREEK": "el", "HEB": "he",
    "HEBREW": "he", "UKR": "uk", "UKRAINIAN": "uk", "NEP": "ne", "NEPALI": "ne", "AMH": "am", "AMHARIC": "am",
    "SWA": "sw", "SWAHILI": "sw", "TUR": "tr", "TURKISH": "tr", "DUT": "nl", "NLD": "nl", "DUTCH": "nl",
    "SWE": "sv", "SWEDISH": "sv", "KHM": "km", "KHMER": "km", "LAO": "lo", "THA": "th", "THAI": "th",
    "BUR": "my", "MYA": "my", "BURMESE": "my",
}
# fmt: on


def language_code(code: str, text: str = "") -> str:
    """ISO 639-1 ("en", "es") from PID-15 (CE-1 such as en, eng, ENG, es-MX, spa; else CE-2 text), or ""."""
    for candidate in (code, text):
        candidate = candidate.strip()
        if not candidate:
            continue
        head = re.split(r"[-_]", candidate, maxsplit=1)[0]
        if len(head) == 2 and head.isalpha():
            return head.lower()
        found = _LANGUAGES.get(candidate.upper()) or _LANGUAGES.get(head.upper())
        if found:
            return found
    return ""


def place(segment: hl7.Segment | None, field_no: int) -> str:
    """PL-1 (point of care), else PL-4 (facility)."""
    return (value(segment, field_no, 1) or value(segment, field_no, 4))[:200]
