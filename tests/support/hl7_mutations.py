"""Mutations of valid SIU messages, the way broken interfaces and hostile senders break them.

Shared by tests/test_hl7_fuzz.py (driven by hypothesis) and bench/feed_fuzz.py
(driven by `random`, for 100,000 messages): both hand `mutate` a `random.Random`.
Every mutated message gets a fresh MSH-10 (unless the mutation is of MSH itself),
so that the idempotency record of one example never answers the next.
"""

from __future__ import annotations

import random

from tests.support.hl7_feed import fixture

BASES = (
    "epic_siu_s12_v251.hl7",
    "epic_siu_s13_v251.hl7",
    "epic_siu_s14_v251.hl7",
    "epic_siu_s15_v251.hl7",
    "cerner_siu_s12_v23.hl7",
    "cerner_siu_s17_v23.hl7",
    "cerner_siu_s26_v28.hl7",
    "generic_siu_s12_v28_lf.hl7",
    "epic_siu_s12_dst_new_york.hl7",
)

HUGE_AND_ODD_VALUES = (
    "NaN",
    "nan",
    "inf",
    "-inf",
    "Infinity",
    "1e400",
    "-1e400",
    "1e308",
    "9" * 40,
    "-1",
    "0",
    "-0",
    "0x1F",
    "1_000",
    "٣",
    "１２",
    "",
    '""',
    "\\",
    "^^^^",
    "~~~",
    "&&&",
    "\\X00\\",
    "\\E\\",
    "\\H\\",
    "99999999999999999999999999",
    "2147483648",
    "-9223372036854775809",
    "12.5.7",
    "30 MIN",
)
BAD_DATES = (
    "00010101",
    "000101010000",
    "00010101000000",
    "99991231235959",
    "99991231235959+1400",
    "00010101000000-1400",
    "20271332120000",
    "20270230120000",
    "20270101250000",
    "202701011261",
    "20270101120000+9999",
    "20270101120000-0000",
    "2027010112",
    "20270101120000.99999",
    "19000101000000",
    "21000101000000+0000",
    "20270101120000+1260",
    "20270101120000 +0100",
)
ENCODING_STRINGS = (
    "^~\\&",
    "^~\\",
    "^~",
    "^",
    "",
    "^^^^",
    "~^\\&",
    "^~&\\",
    "\\\\\\\\",
    "^~\\&#",
    "||||",
    "\x00~\\&",
)
JUNK_BYTES = (
    b"\x00",
    b"\x00\x00\x00",
    b"\xff",
    b"\xfe\xff",
    b"\xc3",
    b"\xe2\x82",
    b"\xed\xa0\x80",
    b"\x0b",
    b"\x1c",
)


def _segments(body: bytes) -> list[bytes]:
    return [line for line in body.replace(b"\r\n", b"\r").replace(b"\n", b"\r").split(b"\r") if line]


def _with_control_id(segments: list[bytes], control_id: bytes) -> list[bytes]:
    fields = segments[0].split(b"|")
    if len(fields) > 9:
        fields[9] = control_id
    return [b"|".join(fields)] + segments[1:]


def _set_field(segment: bytes, position: int, text: bytes) -> bytes:
    fields = segment.split(b"|")
    while len(fields) <= position:
        fields.append(b"")
    fields[position] = text
    return b"|".join(fields)


def _truncate(rng: random.Random, body: bytes) -> bytes:
    return body[: rng.randrange(0, len(body) + 1)]


def _encoding(rng: random.Random, body: bytes) -> bytes:
    segments = _segments(body)
    fields = segments[0].split(b"|")
    fields[1] = rng.choice(ENCODING_STRINGS).encode("latin-1")
    return b"\r".join([b"|".join(fields)] + segments[1:])


def _value(rng: random.Random, body: bytes, values) -> bytes:
    segments = _segments(body)
    index = rng.randrange(len(segments))
    position = rng.choice((7, 9, 10, 11, 12)) if index == 0 else rng.randrange(1, 14)
    text = rng.choice(values)
    if rng.random() < 0.3 and index:
        text = "^".join([text] * rng.randrange(2, 6))  # into the components too
    segments[index] = _set_field(segments[index], position, text.encode("utf-8"))
    return b"\r".join(segments)


def _scheduling_value(rng: random.Random, body: bytes, values) -> bytes:
    """A value where the parser reads times and durations: SCH-9/10/11, TQ1-7/8, AIS-4/7."""
    segments = _segments(body)
    targets = {b"SCH": (9, 10, 11), b"TQ1": (7, 8), b"AIS": (4, 7), b"AIL": (6, 9), b"MSH": (7,)}
    candidates = [(i, s) for i, s in enumerate(segments) if s[:3] in targets]
    index, segment = rng.choice(candidates)
    position = rng.choice(targets[segment[:3]])
    text = rng.choice(values)
    if segment[:3] == b"SCH" and position == 11:
        text = f"^^30^{text}^{rng.choice(values)}"
    segments[index] = _set_field(segment, position, text.encode("utf-8"))
    return b"\r".join(segments)


def _junk(rng: random.Random, body: bytes) -> bytes:
    at = rng.randrange(0, len(body) + 1)
    return body[:at] + rng.choice(JUNK_BYTES) * rng.randrange(1, 4) + body[at:]


def _line_endings(rng: random.Random, body: bytes) -> bytes:
    segments = _segments(body)
    out = segments[0]
    for segment in segments[1:]:
        out += rng.choice((b"\r", b"\n", b"\r\n", b"\n\r", b"\r\r", b"\r\n\r\n")) + segment
    return out + rng.choice((b"", b"\r", b"\n", b"\x1c\r"))


def _repeat_segment(rng: random.Random, body: bytes) -> bytes:
    segments = _segments(body)
    index = rng.randrange(len(segments))
    count = rng.choice((2, 3, 50, 500, 3000))
    return b"\r".join(segments[: index + 1] + [segments[index]] * count + segments[index + 1 :])


def _repetitions(rng: random.Random, body: bytes) -> bytes:
    segments = _segments(body)
    index = rng.randrange(1, len(segments)) if len(segments) > 1 else 0
    fields = segments[index].split(b"|")
    position = rng.randrange(1, max(2, len(fields)))
    separator = rng.choice((b"~", b"^", b"&"))
    text = separator.join([b"1"] * rng.choice((10, 1000, 30000)))
    segments[index] = _set_field(segments[index], position, text)
    return b"\r".join(segments)


def _long_field(rng: random.Random, body: bytes) -> bytes:
    segments = _segments(body)
    index = rng.randrange(len(segments))
    position = rng.randrange(3 if index == 0 else 1, 14)
    segments[index] = _set_field(segments[index], position, b"A" * rng.choice((300, 5000, 60000)))
    return b"\r".join(segments)


def _batch(rng: random.Random, body: bytes) -> bytes:
    header = b"FHS|^~\\&|EPIC|NVH|VCONNECT|VIRTUALCARE|20270105083015\rBHS|^~\\&|EPIC|NVH\r"
    trailer = b"\rBTS|1\rFTS|1"
    return header + body.rstrip(b"\r\n") + (trailer if rng.random() < 0.7 else b"")


def _drop_segment(rng: random.Random, body: bytes) -> bytes:
    segments = _segments(body)
    del segments[rng.randrange(len(segments))]
    return b"\r".join(segments)


MUTATIONS = (
    ("truncate", _truncate),
    ("encoding characters", _encoding),
    ("huge or odd value", lambda rng, body: _value(rng, body, HUGE_AND_ODD_VALUES)),
    ("odd time or duration", lambda rng, body: _scheduling_value(rng, body, HUGE_AND_ODD_VALUES + BAD_DATES)),
    ("bad date", lambda rng, body: _value(rng, body, BAD_DATES)),
    ("NUL and non-UTF-8 bytes", _junk),
    ("mixed line endings", _line_endings),
    ("repeated segment", _repeat_segment),
    ("many repetitions", _repetitions),
    ("long field", _long_field),
    ("batch envelope", _batch),
    ("segment dropped", _drop_segment),
)


def mutate(rng: random.Random, serial: int) -> tuple[bytes, list[str]]:
    """(a mutated SIU message, the names of the mutations applied)."""
    body = fixture(rng.choice(BASES))
    segments = _with_control_id(_segments(body), f"FUZZ{serial:08d}".encode())
    body = b"\r".join(segments)
    applied = []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        name, mutation = rng.choice(MUTATIONS)
        try:
            body = mutation(rng, body)
        except (IndexError, ValueError):
            continue  # nothing left to mutate that way (an earlier mutation emptied the message)
        applied.append(name)
    return body, applied
