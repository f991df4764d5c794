"""Message texts: shipped templates per language, placeholders, previews and segment counts."""

from __future__ import annotations

import math
import string
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

# Placeholders: {organization}, {date}, {time}, {link}, {contact}
# The English texts with a link fit one GSM-7 segment (160 characters) with a 30-character
# organization name, "Wed Sep 30", "10:45 AM AKDT" and a short link on a 36-character address
# (tests/test_short_links.py): keep them that short.
SHIPPED: dict[str, dict[str, str]] = {
    "en": {
        "confirmation": "{organization}: video visit booked for {date} at {time}. Join: {link}",
        "reschedule": "{organization}: your video visit moved to {date} at {time}. Join: {link}",
        "cancellation": "{organization}: your video visit on {date} at {time} was cancelled.",
        "reminder": "{organization}: reminder: video visit on {date} at {time}. Join: {link}",
        "help": "{organization} video visit texts. For help call {contact}. Reply STOP to opt out.",
        "opt_out": "{organization}: you will get no more texts from us. Reply START to opt back in.",
        "opt_in": "{organization}: you will get video visit texts again. Reply STOP to opt out.",
        "guest_invite": "{organization}: you are invited to join a video visit. Join: {link}",
    },
    "es": {
        "confirmation": "{organization}: su cita por video es el {date} a las {time}. Únase aquí: {link}",
        "reschedule": "{organization}: su cita por video cambió al {date} a las {time}. Únase aquí: {link}",
        "cancellation": "{organization}: su cita por video del {date} a las {time} fue cancelada.",
        "reminder": "{organization}: recordatorio, su cita por video es el {date} a las {time}. Únase aquí: {link}",
        "help": "{organization} mensajes de citas por video. Ayuda: {contact}. Responda STOP para no recibir más.",
        "opt_out": "{organization}: no recibirá más mensajes. Responda START para volver a recibirlos.",
        "opt_in": "{organization}: volverá a recibir mensajes de citas por video. Responda STOP para cancelar.",
        "guest_invite": "{organization}: está invitado a una cita por video. Únase aquí: {link}",
    },
}
PLACEHOLDERS = {"organization", "date", "time", "link", "contact"}
# Dates and times as patients read them, in the appointment's (department's) zone:
# "Sat Dec 6" and "5:41 AM EST"; Spanish "sáb 6 dic" and "17:41 EST". Written here, not
# with strftime's %a/%b, which follow the process locale.
_WEEKDAYS = {
    "en": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"],
    "es": ["lun", "mar", "mié", "jue", "vie", "sáb", "dom"],
}
_MONTHS = {
    "en": ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"],
    "es": ["ene", "feb", "mar", "abr", "may", "jun", "jul", "ago", "sep", "oct", "nov", "dic"],
}
TEXT_LANGUAGES = set(_MONTHS)

# The GSM 03.38 basic character set and its extension table (extension chars count twice).
GSM_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENDED = set("^{}\\[~]|€\f")


def zone_abbreviation(local: datetime) -> str:
    """"EST", "CET"; "UTC-3" or "UTC+5:30" for zones without a letter abbreviation (tzdata writes "-03")."""
    name = local.tzname() or ""
    if name and name[0] not in "+-":
        return name
    offset = local.utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    hours, rest = divmod(abs(minutes), 60)
    return f"UTC{sign}{hours}" + (f":{rest:02d}" if rest else "") if minutes else "UTC"


def patient_date(moment: datetime, zone: ZoneInfo, language: str) -> str:
    """The date of `moment` in `zone` as patients read it: "Sat Dec 6" (English), "sáb 6 dic" (Spanish)."""
    lang = language if language in TEXT_LANGUAGES else "en"
    local = moment.astimezone(zone)
    weekday, month = _WEEKDAYS[lang][local.weekday()], _MONTHS[lang][local.month - 1]
    return f"{weekday} {month} {local.day}" if lang == "en" else f"{weekday} {local.day} {month}"


def patient_time(moment: datetime, zone: ZoneInfo, language: str) -> str:
    """The time of `moment` in `zone` with the zone: "5:41 AM EST" (English), "17:41 EST" (Spanish)."""
    lang = language if language in TEXT_LANGUAGES else "en"
    local = moment.astimezone(zone)
    if lang == "en":
        clock = f"{(local.hour % 12) or 12}:{local.minute:02d} {'AM' if local.hour < 12 else 'PM'}"
    else:
        clock = f"{local.hour}:{local.minute:02d}"
    return f"{clock} {zone_abbreviation(local)}"


def template_for(templates: dict, language: str, kind: str) -> str:
    """The organization's text for this language and kind, else the shipped one (English as a last resort)."""
    for lang in (language, "en"):
        custom = (templates.get(lang) or {}).get(kind)
        if custom:
            return custom
        shipped = SHIPPED.get(lang, {}).get(kind)
        if shipped:
            return shipped
    raise KeyError(kind)


def template_problems(text: str) -> list[str]:
    """What is wrong with a template an administrator typed (unknown or broken placeholders)."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as error:
        return [f"Braces do not match: {error}. Write placeholders like {{date}}."]
    unknown = sorted(names - PLACEHOLDERS)
    if unknown:
        return [
            f"Unknown placeholder {{{n}}}: use {', '.join('{' + p + '}' for p in sorted(PLACEHOLDERS))}."
            for n in unknown
        ]
    return []


def render(text: str, **values: str) -> str:
    return text.format(**{name: values.get(name, "") for name in PLACEHOLDERS})


@dataclass(frozen=True)
class Segments:
    encoding: str  # "GSM-7" or "UCS-2"
    characters: int
    segments: int


def segment_count(text: str) -> Segments:
    """How many SMS segments a text takes (160/153 GSM-7 characters, 70/67 UCS-2 code units)."""
    if all(c in GSM_BASIC or c in GSM_EXTENDED for c in text):
        units = sum(2 if c in GSM_EXTENDED else 1 for c in text)
        single, multi, encoding = 160, 153, "GSM-7"
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, multi, encoding = 70, 67, "UCS-2"
    count = 1 if units <= single else math.ceil(units / multi)
    return Segments(encoding=encoding, characters=units, segments=count)
