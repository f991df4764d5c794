"""HL7 original-mode acknowledgements (ACK) in ER7, built with python-hl7's `Message.create_ack`.

MSH swaps the sending and receiving application and facility, gets a new control
ID and keeps the version; MSA-1 is AA, AE or AR and MSA-2 the original MSH-10.
When the answer is not AA an ERR segment says why: ERR-2 location, ERR-3 the
code from HL7 table 0357, ERR-4 severity E, ERR-8 the reason for people (v2.5
and later); ERR-1 (ELD) for v2.3 and v2.4 senders, and MSA-3 for those before 2.7.
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from datetime import UTC, datetime

import hl7

from sms.hl7.parse import ERROR_CODE_NAMES, Envelope, Location

ACCEPT, ERROR, REJECT = "AA", "AE", "AR"
FALLBACK_VERSION = "2.5.1"
MAX_REASON_CHARS = 250
STANDARD_ENCODING = "^~\\&"
_ECHO_LIMIT = 200  # MSA-2 and the header fields echoed: long enough for any real control ID

logger = logging.getLogger("sms.hl7")


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3]) or (2, 5, 1)


def _source_message(envelope: Envelope | None) -> hl7.Message:
    """A clean MSH of the original, from which create_ack can build the answer.

    Built from the envelope rather than the received message so that a short or
    oddly shaped MSH (a message type without components, missing MSH-11/12)
    still gets an answer.
    """
    if envelope is None:
        return hl7.parse(f"MSH|^~\\&|||||||ACK^^ACK||P|{FALLBACK_VERSION}")
    separator = envelope.field_separator or "|"
    encoding = envelope.encoding_characters or "^~\\&"
    component = encoding[0]
    raw = list(envelope.raw_msh) + [""] * (10 - len(envelope.raw_msh))
    code_text = re.sub(r"[^A-Za-z0-9]", "", envelope.message_code)[:3]
    trigger_text = re.sub(r"[^A-Za-z0-9]", "", envelope.trigger)[:3]
    raw[6] = f"{code_text}{component}{trigger_text}"  # MSH-9
    raw[8] = raw[8] or "P"  # MSH-11
    raw[9] = raw[9] or FALLBACK_VERSION  # MSH-12
    return hl7.parse("MSH" + separator + encoding + separator + separator.join(raw))


def _usable_separators(envelope: Envelope) -> bool:
    """Separators python-hl7 can build with: five distinct punctuation characters, none a line break."""
    characters = (envelope.field_separator or "") + (envelope.encoding_characters or "")
    return (
        len(envelope.field_separator) == 1
        and len(envelope.encoding_characters) == 4
        and len(set(characters)) == 5
        and all(not c.isalnum() and not c.isspace() and c.isprintable() for c in characters)
    )


def _tame(text: str) -> str:
    """A header value fit to echo with the standard separators: no separators, controls or NUL."""
    return re.sub(r"[|^~\\&\x00-\x1f\x7f]", "", text)[:_ECHO_LIMIT]


def _tamed(envelope: Envelope) -> Envelope:
    """The envelope rewritten with the standard separators, for a header python-hl7 could not answer."""
    return replace(
        envelope,
        field_separator="|",
        encoding_characters=STANDARD_ENCODING,
        control_id=_tame(envelope.control_id),
        version=_tame(envelope.version)[:10],
        raw_msh=tuple(_tame(raw) for raw in envelope.raw_msh),
    )


def _needs_taming(envelope: Envelope) -> bool:
    if not _usable_separators(envelope):
        return True
    values = (envelope.control_id, envelope.version, *envelope.raw_msh)
    return any(len(text) > _ECHO_LIMIT or re.search(r"[\x00-\x1f\x7f]", text) for text in values)


def ack_build(
    envelope: Envelope | None,
    code: str,
    *,
    reason: str = "",
    error_code: str = "",
    location: Location | None = None,
    control_id: str | None = None,
    now: datetime | None = None,
) -> str:
    """The ACK for one message as ER7 text (segments separated by \\r, ending with \\r). Never fails on input.

    `envelope` None answers a message whose header could not be read (MSA-2 empty).
    A header whose separators or fields python-hl7 cannot build an answer with
    (an odd MSH-2, a NUL byte) is answered with the standard separators and its
    header values stripped of anything that would break the answer.
    """
    if code not in (ACCEPT, ERROR, REJECT):
        raise ValueError(f"unknown acknowledgement code {code}")
    arguments = {"reason": reason, "error_code": error_code, "location": location, "control_id": control_id}
    if envelope is not None and _needs_taming(envelope):
        envelope = _tamed(envelope)
    try:
        return _ack_text(envelope, code, now=now, **arguments)
    except Exception as error:  # noqa: BLE001 - the sender must get an answer whatever its header holds
        logger.warning("hl7 ack built without the original header: %s", type(error).__name__)
    try:
        return _ack_text(_tamed(envelope) if envelope else None, code, now=now, **arguments)
    except Exception as error:  # noqa: BLE001
        logger.error("hl7 ack built with an empty header: %s", type(error).__name__)
    return _ack_text(None, code, now=now, **arguments)


def _ack_text(
    envelope: Envelope | None,
    code: str,
    *,
    reason: str,
    error_code: str,
    location: Location | None,
    control_id: str | None,
    now: datetime | None,
) -> str:
    source = _source_message(envelope)
    ack = source.create_ack(ack_code=code, message_id=control_id or hl7.generate_message_control_id())
    msh = ack.segment("MSH")
    msh.assign_field((now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S") + "+0000", 7)
    if code == ACCEPT:
        return str(ack)
    version = _version_tuple(envelope.version if envelope else FALLBACK_VERSION)
    error_code = error_code or "207"
    error_name = ERROR_CODE_NAMES.get(error_code, "Application error")
    text = ack.escape(reason[:MAX_REASON_CHARS]) if reason else ""
    component, subcomponent = source.separators[3], source.separators[4]
    msa = ack.segment("MSA")
    if version < (2, 7) and text:
        msa.assign_field(text, 3)  # MSA-3 text message: withdrawn in 2.7, read by many older engines
    err = ack.create_segment([ack.create_field(["ERR"])])
    where = (
        [location.segment, str(location.sequence), str(location.field) if location.field else ""]
        if location
        else []
    )
    if version < (2, 5):
        # ERR-1 (ELD): segment ID ^ sequence ^ field position ^ code & text & table
        coded = subcomponent.join([error_code, ack.escape(error_name), "HL70357"])
        eld = where + [""] * (3 - len(where)) + [coded]
        err.assign_field(component.join(eld), 1)
    else:
        if where:
            err.assign_field(component.join(part for part in where), 2)  # ERR-2 (ERL)
        err.assign_field(component.join([error_code, ack.escape(error_name), "HL70357"]), 3)
        err.assign_field("E", 4)
        if text:
            err.assign_field(text, 8)
    ack.append(err)
    return str(ack)
