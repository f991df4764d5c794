"""Keep phone numbers, tokens and secrets out of the logs, one JSON line per event."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

REDACTED = "[redacted]"

_FHIR_PERSONAL_TYPES = (
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "RelatedPerson",
    "Person",
    "Encounter",
    "Appointment",
)
_FHIR_PERSONAL_PARAMETERS = (
    "patient",
    "subject",
    "practitioner",
    "actor",
    "participant",
    "encounter",
    "identifier",
    "_id",
    "name",
    "family",
    "given",
    "birthdate",
    "telecom",
    "email",
)

# Order matters: secrets that look like numbers go before the phone pattern.
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # Authorization headers and bearer tokens.
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 " + REDACTED),
    # Our own API tokens (see tenants/tokens.py).
    (re.compile(r"\behc_[A-Za-z0-9_-]{10,}"), REDACTED),
    # JSON Web Tokens (three base64url parts).
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), REDACTED),
    # Signed links in paths: patient join links, account-link tokens, clinician consoles (?t=).
    (re.compile(r"(/(?:join|launch/link)/)[^/\s?\"]+"), r"\1" + REDACTED),
    (re.compile(r"([?&](?:t|state|code|launch|token)=)[^&\s\"]+"), r"\1" + REDACTED),
    # FHIR references to people and their records (Patient/123, a fhirUser URL's
    # Practitioner/abc) and FHIR search parameters naming them (Appointment?patient=123).
    (re.compile(r"\b(" + "|".join(_FHIR_PERSONAL_TYPES) + r")/[A-Za-z0-9.-]{1,64}"), r"\1/" + REDACTED),
    (
        re.compile(r"(?i)([?&;](?:" + "|".join(_FHIR_PERSONAL_PARAMETERS) + r")(?::[\w.]+)?=)[^&\s\"]+"),
        r"\1" + REDACTED,
    ),
    # key=value and "key": "value" pairs whose key names a secret.
    (
        re.compile(
            r"(?i)(\"?\b(?:password|passwd|secret|client_secret|token|access_token|"
            r"refresh_token|id_token|api_key|apikey|code_verifier|code|sessionid|csrftoken|"
            r"signature|phone|mobile|msisdn)\b\"?\s*[:=]\s*\"?)([^\s\"&,;]+)"
        ),
        r"\1" + REDACTED,
    ),
    # Phone numbers: E.164 and the usual national formats, with their opening
    # parenthesis; not ISO dates (2026-11-21) nor GUIDs, which look alike. Whether
    # a candidate is a phone number is decided by `_phone_or_not` (digit count).
    (
        re.compile(
            r"(?<![\w/.-])(?!\d{4}-\d\d-\d\d(?!\d)|[\da-fA-F]{8}-[\da-fA-F]{4}-)"
            r"\+?\(?\d[\d\s().-]{6,}\d(?![\w/-])"
        ),
        lambda match: _phone_or_not(match),
    ),
]

_IP_ADDRESS = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")


def _phone_or_not(match: re.Match[str]) -> str:
    """Phone numbers have 8+ digits after a "+", else 10+ (a national number with its
    area code); shorter runs are HTTP status and size, times, or IP addresses."""
    text = match.group(0)
    digits = sum(c.isdigit() for c in text)
    if _IP_ADDRESS.match(text.strip()):
        return text
    if digits >= (8 if text.startswith("+") else 10):
        return "[phone]"
    return text


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites the record's message (and exception text) with secrets removed."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        record.msg = redact(message)
        record.args = ()
        if record.exc_info:
            formatter = logging.Formatter()
            record.exc_text = redact(formatter.formatException(record.exc_info))
            record.exc_info = None
        return True


class OneLineJsonFormatter(logging.Formatter):
    """One JSON object per line, so log shippers never split an event."""

    def format(self, record: logging.LogRecord) -> str:
        event = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        if record.exc_text:
            event["exception"] = record.exc_text
        elif record.exc_info:
            event["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(event, ensure_ascii=False)
