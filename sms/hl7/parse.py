"""HL7v2 SIU messages (ER7 text) -> `SchedulingMessage`, with python-hl7 doing the splitting and unescaping.

Versions 2.3 to 2.9 are read the same way: the fields used here kept their
positions. Nothing here logs or keeps a field's content: errors name the field
("TQ1-7"), never its value, because values are PHI.

Field mapping (see docs/scheduling-feed.md for the full table):

- start: TQ1-7, else SCH-11.4, else AIS-4 / AIL-6 / AIP-6 / AIG-8
- duration: TQ1-8 (end), else SCH-9 with SCH-10 units, else SCH-11.5 (end),
  else AIS-7/8, AIL-9/10, AIP-9/10, AIG-11/12, else 30 minutes (flagged);
  an absurd value in the first of TQ1-8, SCH-9, SCH-11.5 present is refused
- identity: the field the endpoint's SMS settings name (SCH-2, the filler ID, by default),
  within the organization and environment; never MSH-4
- mobile number: PID-13, cellular (XTN-3 = CP) first
- language: PID-15; department: AIL-3, else PV1-3
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import timezone as dt_timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import hl7

from sms.hl7.fields import (
    dtm_parse,
    duration_from,
    language_code,
    mobile_number,
    place,
    repetitions,
    value,
)
from sms.services.appointments import SUPPORTED_EVENTS, SchedulingMessage

DEFAULT_DURATION = timedelta(minutes=30)
LONGEST_DURATION = timedelta(hours=24)  # longer is a unit mistake; it would keep the number for weeks
EARLIEST_YEAR, LATEST_YEAR = 1900, 2200  # what a scheduling message's dates may be

# HL7 table 0357 (message error condition codes): the ones this feed answers with.
SEGMENT_SEQUENCE_ERROR = "100"
REQUIRED_FIELD_MISSING = "101"
DATA_TYPE_ERROR = "102"
TABLE_VALUE_NOT_FOUND = "103"
UNSUPPORTED_MESSAGE_TYPE = "200"
UNSUPPORTED_EVENT_CODE = "201"
UNSUPPORTED_VERSION_ID = "203"
APPLICATION_INTERNAL_ERROR = "207"
ERROR_CODE_NAMES = {
    SEGMENT_SEQUENCE_ERROR: "Segment sequence error",
    REQUIRED_FIELD_MISSING: "Required field missing",
    DATA_TYPE_ERROR: "Data type error",
    TABLE_VALUE_NOT_FOUND: "Table value not found",
    UNSUPPORTED_MESSAGE_TYPE: "Unsupported message type",
    UNSUPPORTED_EVENT_CODE: "Unsupported event code",
    UNSUPPORTED_VERSION_ID: "Unsupported version id",
    APPLICATION_INTERNAL_ERROR: "Application internal error",
}

_VERSION = re.compile(r"^2\.[3-9](\.\d{1,2})?$")
_SEGMENT_ID = re.compile(r"^[A-Z][A-Z0-9]{2}$")
# The segments an SIU is read from (see _siu); the others are checked, not parsed.
SCHEDULING_SEGMENTS = frozenset({"MSH", "SCH", "TQ1", "ARQ", "PID", "PV1", "AIS", "AIL", "AIP", "AIG"})
# Where an EHR may put its appointment ID (sms.models.AppointmentIdField), as words for errors.
ID_FIELD_NAMES = {
    "SCH-1": "placer appointment ID",
    "SCH-2": "filler appointment ID",
    "SCH-27": "filler order number",
    "ARQ-2": "filler appointment ID",
    "PV1-19": "visit number",
}
DEFAULT_ID_FIELD = "SCH-2"
# Values senders put in an ID field when they have none: refused like an empty field.
_PLACEHOLDER_ID = re.compile(r"^(?:0+|-+|\.+|N/?A|NONE|NULL|UNKNOWN|TBD|X+)$", re.IGNORECASE)
_SUPPORTED_TEXT = "only SIU scheduling messages S12, S13, S14, S15, S16, S17 and S26 are accepted"


@dataclass(frozen=True)
class Location:
    """Where an error is, for ERR-2 (ERL): segment ID, segment sequence, field position."""

    segment: str
    field: int = 0
    sequence: int = 1


class HL7Error(Exception):
    """A message this feed cannot use. `reason` goes back to the sender in the ACK; it holds no field values."""

    ack_code = "AE"

    def __init__(
        self,
        reason: str,
        *,
        code: str = REQUIRED_FIELD_MISSING,
        location: Location | None = None,
        envelope: Envelope | None = None,
        ack_code: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.location = location
        self.envelope = envelope
        if ack_code:
            self.ack_code = ack_code


class MalformedMessage(HL7Error):
    """Missing or unusable content: answered AE (AR when the header itself is unusable)."""


class NotHL7(MalformedMessage):
    """No MSH segment to answer to: HTTP 400 with the reason, no ACK."""


class UnsupportedMessage(HL7Error):
    """A valid message of a type or version this feed does not take: answered AR."""

    ack_code = "AR"


@dataclass(frozen=True)
class Envelope:
    """The header (MSH) of a message: enough to acknowledge it and recognize a resend. No PHI."""

    message_code: str  # MSH-9.1, e.g. SIU
    trigger: str  # MSH-9.2, e.g. S12
    control_id: str  # MSH-10
    sending_application: str  # MSH-3 (HD.1, else HD.2)
    sending_facility: str  # MSH-4 (HD.1, else HD.2)
    version: str  # MSH-12.1
    processing_id: str = "P"  # MSH-11.1
    field_separator: str = "|"
    encoding_characters: str = "^~\\&"
    # MSH-3 to MSH-12 as received (still escaped), for the ACK's header.
    raw_msh: tuple[str, ...] = field(default=(), repr=False)

    @property
    def message_type(self) -> str:
        return f"{self.message_code}^{self.trigger}" if self.trigger else self.message_code

    @property
    def sender(self) -> str:
        """MSH-3^MSH-4: with the control ID, what makes a message unique."""
        return f"{self.sending_application}^{self.sending_facility}"[:200]


@dataclass(frozen=True)
class ParsedMessage:
    envelope: Envelope
    scheduling: SchedulingMessage
    duration_assumed: bool = False  # no duration anywhere: DEFAULT_DURATION was used
    notes: tuple[str, ...] = ()  # for the processing record; no PHI


# --- reading ER7 -------------------------------------------------------------------------


def _decode(body: bytes | str) -> str:
    if isinstance(body, str):
        return body
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        # MSH-18 "8859/1" is what older interfaces send; Latin-1 never fails to decode.
        return body.decode("latin-1")


def er7_parse(body: bytes | str, *, only: frozenset[str] | None = None) -> hl7.Message:
    """One HL7v2 message: line endings normalised to \\r, blank lines dropped, segment IDs checked.

    With `only`, every segment is checked but only those segment IDs are handed to
    the library (MSH always): real EHR messages carry NTE, OBX, DG1, Z-segments and
    more that nobody reads here, and parsing them is most of the cost.
    """
    text = _decode(body).replace("\r\n", "\r").replace("\n", "\r")
    # Byte order marks, MLLP framing left by a relay and stray blanks at either end.
    text = text.lstrip("\ufeff\x0b \t\r").rstrip("\x1c \t\r")
    if not text.startswith("MSH"):
        if re.match(r"^[A-Z][A-Z0-9]{2}\|", text):
            raise NotHL7("MSH segment missing: an HL7 message starts with its MSH segment", code="100")
        raise NotHL7("not HL7: the body must start with MSH")
    separator = text[3:4]
    if not separator or separator.isalnum() or separator in " \r" or text.find(separator, 4) < 5:
        raise NotHL7(
            "not HL7: MSH must be followed by the field separator and encoding characters (MSH|^~\\&|)"
        )
    segments = [line for line in text.split("\r") if line.strip()]
    _encoding_check(segments[0], separator)
    if sum(1 for line in segments if line.startswith("MSH" + separator)) > 1:
        first = _parse_segments(segments[:1])
        raise MalformedMessage(
            "several messages in one body: send one message per request (or per MLLP frame)",
            code=SEGMENT_SEQUENCE_ERROR,
            envelope=envelope_read(first, check_type=False),
            ack_code="AR",
        )
    for position, line in enumerate(segments, start=1):
        if not _SEGMENT_ID.match(line[:3]) or (len(line) > 3 and line[3] != separator):
            first = _parse_segments(segments[:1])
            raise MalformedMessage(
                f"segment {position} has no valid segment ID (three capital letters or digits)",
                code=SEGMENT_SEQUENCE_ERROR,
                envelope=envelope_read(first, check_type=False),
            )
    if only is not None:
        segments = [line for line in segments if line[:3] in only or line.startswith("MSH")]
    return _parse_segments(segments)


def _encoding_check(msh: str, separator: str) -> None:
    """MSH-2 must be distinct punctuation: python-hl7 fails an assertion on anything else (a repeated ^)."""
    end = msh.find(separator, 4)
    encoding = msh[4:] if end < 0 else msh[4:end]
    characters = separator + encoding
    if (
        2 <= len(encoding) <= 5
        and len(set(characters)) == len(characters)
        and all(not c.isalnum() and not c.isspace() and c.isprintable() for c in encoding)
    ):
        return
    fields = msh.split(separator)
    fields += [""] * (12 - len(fields))

    def plain(text: str, limit: int) -> str:
        return re.sub(r"[^A-Za-z0-9._-]", "", text)[:limit]

    code_and_trigger = [part for part in re.split(r"[^A-Za-z0-9]", fields[8]) if part] + ["", ""]
    raise MalformedMessage(
        "MSH-2 (encoding characters) must be distinct punctuation other than the field separator, "
        "usually ^~\\&",
        code=DATA_TYPE_ERROR,
        location=Location("MSH", 2),
        envelope=Envelope(
            message_code=plain(code_and_trigger[0], 3).upper(),
            trigger=plain(code_and_trigger[1], 3).upper(),
            control_id=plain(fields[9], 200),
            sending_application=plain(fields[2], 100),
            sending_facility=plain(fields[3], 100),
            version=plain(fields[11], 10),
            raw_msh=tuple(plain(field, 100) for field in fields[2:12]),
        ),
        ack_code="AR",
    )


def _parse_segments(segments: list[str]) -> hl7.Message:
    try:
        return hl7.parse("\r".join(segments))
    except (hl7.ParseException, ValueError, IndexError) as error:
        raise NotHL7("not HL7: the message could not be split into segments and fields") from error


def _segments(message: hl7.Message, segment_id: str) -> Iterator[hl7.Segment]:
    return (segment for segment in message if str(segment[0][0]) == segment_id)


def _first(message: hl7.Message, segment_id: str) -> hl7.Segment | None:
    return next(_segments(message, segment_id), None)


def envelope_read(message: hl7.Message, *, check_type: bool = True) -> Envelope:
    """The MSH header; UnsupportedMessage for other message types or versions (when `check_type`)."""
    msh = message[0]
    if str(msh[0][0]) != "MSH":
        raise NotHL7("MSH segment missing: an HL7 message starts with its MSH segment", code="100")

    def hd(field_no: int) -> str:
        return (value(msh, field_no, 1) or value(msh, field_no, 2))[:100]

    envelope = Envelope(
        message_code=value(msh, 9, 1).upper(),
        trigger=value(msh, 9, 2).upper(),
        control_id=value(msh, 10)[:200],
        sending_application=hd(3),
        sending_facility=hd(4),
        version=value(msh, 12, 1),
        processing_id=value(msh, 11, 1),
        field_separator=str(msh[1]),
        encoding_characters=str(msh[2]),
        raw_msh=tuple(str(msh[position]) if position < len(msh) else "" for position in range(3, 13)),
    )
    if not check_type:
        return envelope
    if not envelope.control_id:
        raise MalformedMessage(
            "MSH-10 (message control ID) is empty",
            location=Location("MSH", 10),
            envelope=envelope,
            ack_code="AR",
        )
    if not envelope.message_code:
        raise MalformedMessage(
            "MSH-9 (message type) is empty", location=Location("MSH", 9), envelope=envelope, ack_code="AR"
        )
    if envelope.message_code != "SIU":
        raise UnsupportedMessage(
            f"{_type_text(envelope)} messages are not accepted here: {_SUPPORTED_TEXT}",
            code=UNSUPPORTED_MESSAGE_TYPE,
            location=Location("MSH", 9),
            envelope=envelope,
        )
    if envelope.trigger not in SUPPORTED_EVENTS:
        raise UnsupportedMessage(
            f"{_type_text(envelope)} messages are not handled: {_SUPPORTED_TEXT}",
            code=UNSUPPORTED_EVENT_CODE,
            location=Location("MSH", 9),
            envelope=envelope,
        )
    if not envelope.version:
        raise MalformedMessage(
            "MSH-12 (version ID) is empty", location=Location("MSH", 12), envelope=envelope, ack_code="AR"
        )
    if not _VERSION.match(envelope.version):
        raise UnsupportedMessage(
            f"HL7 version {_safe(envelope.version)} is not supported: send version 2.3 to 2.9",
            code=UNSUPPORTED_VERSION_ID,
            location=Location("MSH", 12),
            envelope=envelope,
        )
    return envelope


def _type_text(envelope: Envelope) -> str:
    """ "ADT A04": the type as words, without a component separator the ACK would have to escape."""
    return " ".join(_safe(part) for part in (envelope.message_code, envelope.trigger) if part)


def _safe(text: str) -> str:
    """A short code from the header, safe to echo: message types and versions are not PHI, but keep them tame."""
    return re.sub(r"[^A-Za-z0-9._-]", "?", text)[:20]


# --- dates and time zones ---------------------------------------------------------------


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _moment(text: str, name: str, location: Location, zone: ZoneInfo) -> tuple[datetime, timedelta | None]:
    """An aware datetime: with the sender's offset when given, else read in the endpoint's zone."""
    try:
        naive, offset = dtm_parse(text)
    except ValueError as error:
        raise MalformedMessage(
            f"{name} is not a usable date and time (YYYYMMDDHHMM[SS][+/-ZZZZ], at least to the minute)",
            code=DATA_TYPE_ERROR,
            location=location,
        ) from error
    if not EARLIEST_YEAR <= naive.year <= LATEST_YEAR:
        # Years 1 and 9999 parse, then overflow when converted to UTC or given a duration.
        raise MalformedMessage(
            f"{name} is out of range: the year must be between {EARLIEST_YEAR} and {LATEST_YEAR}",
            code=DATA_TYPE_ERROR,
            location=location,
        )
    if offset is None:
        return naive.replace(tzinfo=zone), None
    return naive.replace(tzinfo=dt_timezone(offset)), offset


def _zone_for(start: datetime, offset: timedelta | None, endpoint_zone: str, notes: list[str]) -> str:
    """The appointment's zone is the department's (the endpoint's IANA zone), whatever offset the sender used.

    The offset only fixes the instant: interface engines stamp times in their own
    host's zone or in UTC, and the patient must read "5:41 AM EST" for a New York
    department, not the engine's 10:41 UTC. An offset the endpoint's zone does not
    have at that instant is noted, so a wrong endpoint zone shows in the record.
    """
    if offset is not None and start.astimezone(_zone(endpoint_zone)).utcoffset() != offset:
        notes.append(
            "the start time's UTC offset is not the endpoint's time zone's: texts use the endpoint's zone"
        )
    return endpoint_zone


# --- the SIU message -------------------------------------------------------------------


def scheduling_parse(
    body: bytes | str, *, time_zone: str, default_region: str = "", id_field: str = DEFAULT_ID_FIELD
) -> ParsedMessage:
    """Parse one SIU message. `time_zone` is the endpoint's IANA zone: times without an offset are read in it.

    `id_field` is where the appointment ID is read ("SCH-2" by default, see ID_FIELD_NAMES);
    `default_region` is the country of numbers written without a country code (the
    endpoint's, see sms.phones.patient_region); empty: only numbers with one are usable.

    Raises NotHL7 (no MSH: nothing to acknowledge), UnsupportedMessage (another type
    or version: AR) or MalformedMessage (AE, or AR for an unusable header), each
    carrying the envelope when the header could be read.
    """
    message = er7_parse(body, only=SCHEDULING_SEGMENTS)
    envelope = envelope_read(message)
    try:
        return _siu(message, envelope, time_zone, default_region, id_field)
    except HL7Error as error:
        error.envelope = envelope
        raise


def appointment_id_read(message: hl7.Message, envelope: Envelope, id_field: str) -> str:
    """The EHR's appointment ID from `id_field`; AE naming the field when it is empty or a placeholder.

    The sending facility (MSH-4) is never part of it: one EHR's messages about one
    appointment do not always come from the same facility code.
    """
    if id_field not in ID_FIELD_NAMES:
        id_field = DEFAULT_ID_FIELD
    segment_id, position = id_field.split("-")
    name = f"{id_field} ({ID_FIELD_NAMES[id_field]})"
    location = Location(segment_id, int(position))
    found = value(_first(message, segment_id), int(position), 1)
    if not found:
        raise MalformedMessage(
            f"{name} is empty: the appointment has no ID. This feed reads the appointment ID from "
            f"{id_field}; send it there, or change the appointment ID field in the SMS settings",
            location=location,
        )
    if _PLACEHOLDER_ID.match(found) or found.upper() in {
        envelope.sending_application.upper(),
        envelope.sending_facility.upper(),
    }:
        raise MalformedMessage(
            f"{name} holds a placeholder or the sender's name, not an appointment ID: send the ID of "
            f"the appointment there, or change the appointment ID field in the SMS settings",
            code=DATA_TYPE_ERROR,
            location=location,
        )
    return found[:200]


def patient_key_read(pid: hl7.Segment | None) -> str:
    """PID-3's first identifier with its assigning authority (CX-1^CX-4), or ""; hashed by the caller."""
    identifier = value(pid, 3, 1)
    return f"{identifier}^{value(pid, 3, 4)}" if identifier else ""


def _siu(
    message: hl7.Message, envelope: Envelope, time_zone: str, default_region: str, id_field: str
) -> ParsedMessage:
    zone = _zone(time_zone)
    notes: list[str] = []
    msh = message[0]
    if not value(msh, 7):
        raise MalformedMessage(
            "MSH-7 (date/time of message) is empty: it orders updates of one appointment",
            location=Location("MSH", 7),
        )
    message_time, _ = _moment(value(msh, 7), "MSH-7", Location("MSH", 7), zone)

    sch = _first(message, "SCH")
    if sch is None:
        raise MalformedMessage("SCH segment missing", code=SEGMENT_SEQUENCE_ERROR, location=Location("SCH"))
    external_id = appointment_id_read(message, envelope, id_field)

    tq1 = _first(message, "TQ1")
    resources = [
        (segment_id, segment)
        for segment_id in ("AIS", "AIL", "AIP", "AIG")
        for segment in _segments(message, segment_id)
    ]
    # (field name, segment, field, component, ERR location)
    start_sources = [("TQ1-7", tq1, 7, 1, Location("TQ1", 7)), ("SCH-11.4", sch, 11, 4, Location("SCH", 11))]
    start_fields = {"AIS": 4, "AIL": 6, "AIP": 6, "AIG": 8}
    start_sources += [
        (
            f"{segment_id}-{start_fields[segment_id]}",
            segment,
            start_fields[segment_id],
            1,
            Location(segment_id, start_fields[segment_id]),
        )
        for segment_id, segment in resources
    ]
    for name, segment, field_no, component, location in start_sources:
        text = value(segment, field_no, component)
        if text:
            start, offset = _moment(text, name, location, zone)
            break
    else:
        raise MalformedMessage("no start time in TQ1-7, SCH-11 or AIS/AIL/AIP", location=Location("SCH", 11))

    duration, assumed = _duration(sch, tq1, resources, start, zone, notes)
    start_utc = start.astimezone(UTC)
    # In UTC: adding an hour to a wall-clock time on the night clocks change would be off by an hour.
    end_utc = start_utc + duration

    pid = _first(message, "PID")
    phone = mobile_number(pid, default_region=default_region)
    if pid is not None and not phone and repetitions(pid, 13):
        notes.append("PID-13 has no number that can receive texts")
    department = place(_first(message, "AIL"), 3) or place(_first(message, "PV1"), 3)
    scheduling = SchedulingMessage(
        event=envelope.trigger,
        message_time=message_time.astimezone(UTC),
        sending_facility=envelope.sending_facility[:200],
        external_id=external_id,
        patient=patient_key_read(pid),
        id_field=id_field if id_field in ID_FIELD_NAMES else DEFAULT_ID_FIELD,
        start=start_utc,
        end=end_utc,
        phone=phone,
        language=language_code(value(pid, 15, 1), value(pid, 15, 2)),
        department=department,
        time_zone=_zone_for(start, offset, time_zone, notes),
    )
    return ParsedMessage(
        envelope=envelope, scheduling=scheduling, duration_assumed=assumed, notes=tuple(notes)
    )


def _duration(
    sch, tq1, resources, start: datetime, zone: ZoneInfo, notes: list[str]
) -> tuple[timedelta, bool]:
    """(duration, assumed): TQ1-8 (TQ1's end), else SCH-9/10, else SCH-11.5 (end), else the resources',
    else 30 minutes.

    TQ1 is the timing segment of v2.5 and later; SCH-9/10 and SCH-11 stay for older
    senders and often disagree with it (a "60 s" SCH-9/10 next to a one-hour TQ1), so
    TQ1 wins. The first of TQ1-8, SCH-9/10 and SCH-11.5 that has a value is the one
    used, and an absurd value there (an end before the start, a duration that is not a
    positive number, longer than 24 hours, or in an unknown unit) is refused with an
    AE naming it rather than silently replaced. Resource segments (several per message,
    one per person or room) are a fallback: an unusable one is skipped.
    """
    start_utc = start.astimezone(UTC)
    for name, segment, field_no, component, location in (
        ("TQ1-8", tq1, 8, 1, Location("TQ1", 8)),
        ("SCH-9", sch, 9, 1, Location("SCH", 9)),
        ("SCH-11.5", sch, 11, 5, Location("SCH", 11)),
    ):
        text = value(segment, field_no, component)
        if not text:
            continue
        if name == "SCH-9":
            found = duration_from(text, value(sch, 10, 1), value(sch, 10, 2))
            if found is None:
                raise MalformedMessage(
                    "SCH-9/SCH-10 (appointment duration) is not a positive number in a known unit: "
                    "send a number in SCH-9 and s, min, h or d in SCH-10",
                    code=DATA_TYPE_ERROR,
                    location=location,
                )
        else:
            end, _ = _moment(text, name, location, zone)
            found = end.astimezone(UTC) - start_utc
            if found <= timedelta(0):
                raise MalformedMessage(
                    f"{name} (end) is not after the start: send the end of the appointment",
                    code=DATA_TYPE_ERROR,
                    location=location,
                )
        if found > LONGEST_DURATION:
            raise MalformedMessage(
                f"{name} gives an appointment longer than 24 hours: check the end or the unit",
                code=DATA_TYPE_ERROR,
                location=location,
            )
        return found, False
    duration_fields = {"AIS": (7, 8), "AIL": (9, 10), "AIP": (9, 10), "AIG": (11, 12)}
    for segment_id, segment in resources:
        amount_field, unit_field = duration_fields[segment_id]
        amount = value(segment, amount_field)
        if amount:
            found = duration_from(amount, value(segment, unit_field, 1), value(segment, unit_field, 2))
            if found is not None and timedelta(0) < found <= LONGEST_DURATION:
                return found, False
            notes.append(f"{segment_id}-{amount_field} gives no duration between 0 and 24 hours: ignored")
    notes.append("no duration in TQ1-8, SCH-9 or AIS/AIL/AIP: 30 minutes assumed")
    return DEFAULT_DURATION, True
