"""What a message must not contain before it is parsed: NUL bytes, and more pieces than any real SIU has.

python-hl7 builds an object for every segment, field, repetition and component,
so a 64 KiB message of 60,000 repetitions cost 1.5 s of CPU. These checks count
separators with `bytes.count` and split on line breaks only (microseconds for
64 KiB) and refuse a message over a cap before the library sees it. The caps are
far above what EHRs send (an Epic or Oracle Health SIU has 10 to 40 segments, PID-13
a handful of numbers, the longest field a note of a few hundred characters):

- HL7_MAX_SEGMENTS (500) segments;
- HL7_MAX_FIELD_CHARS (8,192) characters between two separators;
- HL7_MAX_REPETITIONS (100) repetitions of one field, and
  HL7_MAX_SEPARATORS (20,000) component, repetition and subcomponent separators in all.

NUL bytes are refused (AE: the sender can remove them) rather than stripped:
PostgreSQL cannot store them in text, and a byte the EHR did not mean to send
may hide others that change the meaning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.conf import settings

from sms.hl7.parse import DATA_TYPE_ERROR, SEGMENT_SEQUENCE_ERROR, Location

DEFAULT_MAX_SEGMENTS = 500
DEFAULT_MAX_FIELD_CHARS = 8192
DEFAULT_MAX_REPETITIONS = 100
DEFAULT_MAX_SEPARATORS = 20_000
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
_SEGMENT_ID = re.compile(rb"^[A-Z][A-Z0-9]{2}$")


@dataclass(frozen=True)
class LimitExceeded:
    """Why a message is refused before parsing: an ACK code, an HL7 table 0357 code and the reason."""

    ack_code: str
    code: str
    reason: str
    location: Location | None = None


def _setting(name: str, default: int) -> int:
    return int(getattr(settings, name, default))


def limits_check(body: bytes) -> LimitExceeded | None:
    """None when `body` may be parsed; else what is wrong with it (no content of the message)."""
    if b"\x00" in body:
        return LimitExceeded(
            "AE",
            DATA_TYPE_ERROR,
            "the message contains NUL bytes (0x00): remove them and send the message again",
        )
    max_segments = _setting("HL7_MAX_SEGMENTS", DEFAULT_MAX_SEGMENTS)
    segments = [line for line in _LINE_BREAK.split(body) if line.strip()]
    if len(segments) > max_segments:
        return LimitExceeded(
            "AR",
            SEGMENT_SEQUENCE_ERROR,
            f"the message has {len(segments)} segments; at most {max_segments} are accepted",
        )
    # The MSH says which characters separate: MSH|^~\&| (field, component, repetition, escape, subcomponent).
    first = segments[0] if segments else b""
    field_separator = first[3:4] or b"|"
    encoding = first[4:8]
    component = encoding[0:1] or b"^"
    repetition = encoding[1:2] or b"~"
    subcomponent = encoding[3:4] or b"&"
    total = sum(body.count(separator) for separator in {component, repetition, subcomponent})
    max_separators = _setting("HL7_MAX_SEPARATORS", DEFAULT_MAX_SEPARATORS)
    if total > max_separators:
        return LimitExceeded(
            "AR",
            DATA_TYPE_ERROR,
            f"the message has more than {max_separators} components, repetitions and subcomponents",
        )
    max_field = _setting("HL7_MAX_FIELD_CHARS", DEFAULT_MAX_FIELD_CHARS)
    max_repetitions = _setting("HL7_MAX_REPETITIONS", DEFAULT_MAX_REPETITIONS)
    for number, segment in enumerate(segments, start=1):
        if len(segment) <= max_field and segment.count(repetition) < max_repetitions:
            continue  # the common case: nothing in this segment can be over a cap
        # Echoed in the reason only when it is a real segment ID (three capitals or digits).
        segment_id = segment[:3].decode("latin-1") if _SEGMENT_ID.match(segment[:3]) else "???"
        occurrence = sum(1 for earlier in segments[:number] if earlier[:3] == segment[:3])
        for position, field in enumerate(segment.split(field_separator)):
            # MSH-1 is the separator itself, so MSH's fields are numbered one higher than the split.
            field_number = position + 1 if segment_id == "MSH" else position
            where = Location(segment_id, field_number, occurrence)
            if len(field) > max_field:
                return LimitExceeded(
                    "AR",
                    DATA_TYPE_ERROR,
                    f"{segment_id}-{field_number} (segment {number}) is longer than {max_field} characters",
                    where,
                )
            if field.count(repetition) >= max_repetitions:
                return LimitExceeded(
                    "AR",
                    DATA_TYPE_ERROR,
                    f"{segment_id}-{field_number} (segment {number}) has more than {max_repetitions} repetitions",
                    where,
                )
    return None
