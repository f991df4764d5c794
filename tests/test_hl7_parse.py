"""Reading SIU messages: every fixture, every rule of the field mapping, every refusal, and the ACK."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import hl7
import pytest

from sms.hl7.ack import ack_build
from sms.hl7.fields import dtm_parse, duration_from, language_code, value
from sms.hl7.parse import (
    DATA_TYPE_ERROR,
    REQUIRED_FIELD_MISSING,
    UNSUPPORTED_EVENT_CODE,
    UNSUPPORTED_MESSAGE_TYPE,
    UNSUPPORTED_VERSION_ID,
    Location,
    MalformedMessage,
    NotHL7,
    UnsupportedMessage,
    er7_parse,
    scheduling_parse,
)
from tests.support.hl7_feed import fixture

CHICAGO = "America/Chicago"
NEW_YORK = "America/New_York"


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def parse(text: str, zone: str = CHICAGO, id_field: str = "SCH-1"):
    """`siu()` puts its appointment ID in SCH-1 (placer), so read it there unless a test says otherwise."""
    return scheduling_parse(
        text.replace("\n", "\r").encode(), time_zone=zone, id_field=id_field, default_region="US"
    )


def siu(
    *,
    msh7="20270105083015",
    trigger="S12",
    version="2.5.1",
    sch="SCH|A-1^EPIC||||||||30|MIN",
    tq1="TQ1|1||||||20270112093000",
    pid="PID|1||MRN1^^^H^MR||DOE^JANE||||||||^PRN^CP^^1^415^5550123",
    extra="",
) -> str:
    """A small SIU message whose parts the tests replace one at a time."""
    lines = [
        f"MSH|^~\\&|EPIC|NVH|VCONNECT|VIRTUALCARE|{msh7}||SIU^{trigger}^SIU_S12|CTRL-1|P|{version}",
        sch,
        tq1,
        pid,
        extra,
    ]
    return "\n".join(line for line in lines if line)


# --- the fixtures ------------------------------------------------------------------------------


FIXTURE_EXPECTATIONS = {
    "epic_siu_s12_v251.hl7": dict(
        zone=CHICAGO,
        event="S12",
        version="2.5.1",
        sender="EPIC^NVH",
        control_id="EPC0000100001",
        external_id="4000123456",
        start=utc(2027, 1, 12, 15, 30),
        end=utc(2027, 1, 12, 16, 0),
        phone="+14155550123",
        language="en",
        department="NVH Cardiology & Vascular",
        time_zone=CHICAGO,
    ),
    "epic_siu_s13_v251.hl7": dict(
        zone=CHICAGO,
        event="S13",
        version="2.5.1",
        sender="EPIC^NVH",
        control_id="EPC0000100002",
        external_id="4000123456",
        start=utc(2027, 1, 14, 20, 0),
        end=utc(2027, 1, 14, 20, 45),
        phone="+14155550123",
        language="en",
        department="NVH Cardiology & Vascular",
        time_zone=CHICAGO,
    ),
    "epic_siu_s14_v251.hl7": dict(
        zone=CHICAGO,
        event="S14",
        version="2.5.1",
        sender="EPIC^NVH",
        control_id="EPC0000100003",
        external_id="4000123456",
        start=utc(2027, 1, 14, 20, 0),
        end=utc(2027, 1, 14, 20, 45),
        phone="+14155550177",
        language="en",
        department="NVH VIRTUAL MED",
        time_zone=CHICAGO,
    ),
    "epic_siu_s15_v251.hl7": dict(
        zone=CHICAGO,
        event="S15",
        version="2.5.1",
        sender="EPIC^NVH",
        control_id="EPC0000100004",
        external_id="4000123456",
        start=utc(2027, 1, 14, 20, 0),
        end=utc(2027, 1, 14, 20, 45),
        phone="+14155550177",
        language="en",
        department="NVH VIRTUAL MED",
        time_zone=CHICAGO,
    ),
    "epic_siu_s12_dst_new_york.hl7": dict(
        zone=NEW_YORK,
        event="S12",
        version="2.5.1",
        sender="EPIC^HUDSONMED",
        control_id="EPC0000200001",
        external_id="4000555001",
        start=utc(2027, 3, 14, 13, 0),
        end=utc(2027, 3, 14, 14, 30),
        phone="+16465550112",
        language="en",
        department="HM BEHAVIORAL HEALTH",
        time_zone=NEW_YORK,
    ),
    "cerner_siu_s12_v23.hl7": dict(
        zone=CHICAGO,
        event="S12",
        version="2.3",
        sender="CERNER^SOUTHLAKE",
        control_id="CRN20270111154500123",
        external_id="77001234",
        start=utc(2027, 1, 18, 22, 0),
        end=utc(2027, 1, 18, 22, 20),
        phone="+13125550187",
        language="es",
        department="SLK FAMILY MED",
        time_zone=CHICAGO,
    ),
    "cerner_siu_s17_v23.hl7": dict(
        zone=CHICAGO,
        event="S17",
        version="2.3",
        sender="CERNER^SOUTHLAKE",
        control_id="CRN20270112090000456",
        external_id="77001234",
        start=utc(2027, 1, 18, 22, 0),
        end=utc(2027, 1, 18, 22, 20),
        phone="+13125550187",
        language="es",
        department="",
        time_zone=CHICAGO,
    ),
    "cerner_siu_s26_v28.hl7": dict(
        zone=CHICAGO,
        event="S26",
        version="2.8",
        sender="CERNER^SOUTHLAKE",
        control_id="CRN20270118170500789",
        external_id="77001234",
        start=utc(2027, 1, 18, 22, 0),
        end=utc(2027, 1, 18, 22, 20),
        phone="+13125550164",
        language="es",
        department="SLK FAMILY MED",
        time_zone=CHICAGO,
    ),
    "generic_siu_s12_v28_lf.hl7": dict(
        zone=CHICAGO,
        event="S12",
        version="2.8",
        sender="SCHEDULER^LAKESIDE",
        control_id="LKS-000042",
        external_id="LKS-APPT-9001",
        id_field="SCH-1",  # this scheduler fills only the placer ID
        start=utc(2027, 2, 8, 17, 0),
        end=utc(2027, 2, 8, 18, 0),
        phone="+12125550143",
        language="es",
        department="LKS TELEHEALTH",
        time_zone=CHICAGO,
    ),
}


@pytest.mark.parametrize("name", sorted(FIXTURE_EXPECTATIONS))
def test_it_reads_each_fixture(name):
    expected = FIXTURE_EXPECTATIONS[name]
    line_ending = b"\n" if name.endswith("_lf.hl7") else b"\r"

    parsed = scheduling_parse(
        fixture(name, line_ending=line_ending),
        time_zone=expected["zone"],
        id_field=expected.get("id_field", "SCH-2"),
        default_region="US",
    )

    message = parsed.scheduling
    assert parsed.envelope.message_type == f"SIU^{expected['event']}"
    assert parsed.envelope.version == expected["version"]
    assert parsed.envelope.sender == expected["sender"]
    assert parsed.envelope.control_id == expected["control_id"]
    assert message.event == expected["event"]
    assert message.sending_facility == expected["sender"].split("^")[1]
    assert message.external_id == expected["external_id"]
    assert message.start == expected["start"]
    assert message.end == expected["end"]
    assert message.phone == expected["phone"]
    assert message.language == expected["language"]
    assert message.department == expected["department"]
    assert message.time_zone == expected["time_zone"]
    assert message.message_time.tzinfo is not None
    assert parsed.duration_assumed is False


def test_the_adt_fixture_is_refused_as_unsupported():
    with pytest.raises(UnsupportedMessage) as refused:
        scheduling_parse(fixture("adt_a04_v251.hl7"), time_zone=CHICAGO)

    assert refused.value.ack_code == "AR"
    assert refused.value.code == UNSUPPORTED_MESSAGE_TYPE
    assert refused.value.envelope.control_id == "EPC0000900001"
    assert "ADT A04 messages are not accepted" in refused.value.reason


@pytest.mark.parametrize("line_ending", [b"\r", b"\n", b"\r\n"])
def test_line_endings_do_not_matter(line_ending):
    parsed = scheduling_parse(fixture("epic_siu_s12_v251.hl7", line_ending=line_ending), time_zone=CHICAGO)

    assert parsed.scheduling.phone == "+14155550123"
    assert parsed.scheduling.department == "NVH Cardiology & Vascular"


def test_escape_sequences_are_unescaped_by_the_library():
    message = er7_parse(fixture("epic_siu_s12_v251.hl7"))
    note = next(segment for segment in message if str(segment[0][0]) == "NTE")

    assert (
        value(note, 3) == "Patient prefers texts & e-mail\\ joins from home | video ^ audio ~ phone backup."
    )


def test_blank_lines_and_trailing_empty_fields_are_ignored():
    text = siu(pid="PID|1||MRN1||DOE^JANE||||||||^PRN^CP^^1^415^5550123|||||||||") + "\n\n\nPV1|1|O|||||||||"

    assert parse(text).scheduling.phone == "+14155550123"


def test_a_message_in_latin_1_is_read():
    text = siu(pid="PID|1||MRN1||NÚÑEZ^JOSÉ||||||||^PRN^CP^^1^415^5550123||spa").replace("\n", "\r")

    parsed = scheduling_parse(text.encode("latin-1"), time_zone=CHICAGO, id_field="SCH-1")

    assert parsed.scheduling.language == "es"


# --- start, duration and end -------------------------------------------------------------------


def test_the_start_comes_from_tq1_7_first():
    text = siu(
        sch="SCH|A-1||||||||30|MIN|^^^20270112110000",
        tq1="TQ1|1||||||20270112093000",
        extra="AIS|1|A|X|20270112120000",
    )

    assert parse(text).scheduling.start == utc(2027, 1, 12, 15, 30)


def test_the_start_comes_from_sch_11_4_without_tq1():
    text = siu(sch="SCH|A-1||||||||30|MIN|^^^20270112110000", tq1="", extra="AIS|1|A|X|20270112120000")

    assert parse(text).scheduling.start == utc(2027, 1, 12, 17, 0)


@pytest.mark.parametrize(
    ("segment", "expected_hour"),
    [
        ("AIS|1|A|VIDEO|20270112120000", 18),
        ("AIL|1|A|ROOM 1^^^NVH|||20270112130000", 19),
        ("AIP|1|A|1001^CARTER|||20270112140000", 20),
    ],
)
def test_the_start_comes_from_the_resource_segments_last(segment, expected_hour):
    text = siu(sch="SCH|A-1||||||||30|MIN", tq1="", extra=segment)

    assert parse(text).scheduling.start == utc(2027, 1, 12, expected_hour, 0)


def test_no_start_time_anywhere_is_a_precise_error():
    with pytest.raises(MalformedMessage) as refused:
        parse(siu(tq1="TQ1|1"))

    assert refused.value.reason == "no start time in TQ1-7, SCH-11 or AIS/AIL/AIP"
    assert refused.value.ack_code == "AE"
    assert refused.value.envelope.control_id == "CTRL-1"


def test_an_unusable_start_date_is_a_data_type_error():
    with pytest.raises(MalformedMessage) as refused:
        parse(siu(tq1="TQ1|1||||||20271345250000"))

    assert refused.value.code == DATA_TYPE_ERROR
    assert refused.value.location == Location("TQ1", 7)
    assert "TQ1-7 is not a usable date and time" in refused.value.reason
    assert "2027" not in refused.value.reason  # the value itself is never echoed


def test_a_start_without_a_time_of_day_is_refused():
    with pytest.raises(MalformedMessage):
        parse(siu(tq1="TQ1|1||||||20270112"))


@pytest.mark.parametrize(
    ("amount", "unit", "minutes"),
    [
        ("30", "M", 30),
        ("30", "MIN", 30),
        ("30", "min", 30),
        ("45", "MIN^minutes^ISO+", 45),
        ("1", "H", 60),
        ("2", "HR", 120),
        ("1.5", "h", 90),
        ("1800", "S", 30),
        ("900", "SEC", 15),
        ("20", "", 20),
        ("3600", "s", 60),
        ("0.5", "d", 720),
    ],
)
def test_the_duration_comes_from_sch_9_and_its_unit_without_tq1_end(amount, unit, minutes):
    parsed = parse(siu(sch=f"SCH|A-1||||||||{amount}|{unit}", tq1="TQ1|1||||||20270112093000"))

    assert parsed.scheduling.end - parsed.scheduling.start == timedelta(minutes=minutes)
    assert parsed.duration_assumed is False


def test_the_duration_comes_from_tq1_8_without_sch_9():
    parsed = parse(siu(sch="SCH|A-1", tq1="TQ1|1||||||20270112093000|20270112101500"))

    assert parsed.scheduling.end == utc(2027, 1, 12, 16, 15)


def test_the_duration_comes_from_the_resource_segment():
    parsed = parse(siu(sch="SCH|A-1", tq1="", extra="AIS|1|A|VIDEO|20270112093000|0|MIN|1|H"))

    assert parsed.scheduling.end - parsed.scheduling.start == timedelta(hours=1)


def test_without_any_duration_30_minutes_are_assumed_and_flagged():
    parsed = parse(siu(sch="SCH|A-1"))

    assert parsed.scheduling.end - parsed.scheduling.start == timedelta(minutes=30)
    assert parsed.duration_assumed is True
    assert any("30 minutes assumed" in note for note in parsed.notes)


def test_tq1_start_and_end_win_over_sch_9_10_and_sch_11():
    # A "60 s" SCH-9/10 and a two-hour SCH-11 next to a one-hour TQ1: TQ1 is the appointment.
    parsed = parse(
        siu(
            sch="SCH|A-1||||||||60|s|^^120^20270112080000^20270112100000",
            tq1="TQ1|1||||||20270112093000|20270112103000",
        )
    )

    assert parsed.scheduling.start == utc(2027, 1, 12, 15, 30)
    assert parsed.scheduling.end == utc(2027, 1, 12, 16, 30)


def test_sch_9_wins_over_the_end_in_sch_11_without_tq1():
    parsed = parse(siu(sch="SCH|A-1||||||||45|min|^^^20270112093000^20270112120000", tq1=""))

    assert parsed.scheduling.end - parsed.scheduling.start == timedelta(minutes=45)


@pytest.mark.parametrize(
    ("sch", "tq1", "field", "reason"),
    [
        ("SCH|A-1||||||||90|D", "TQ1|1||||||20270112093000", "SCH-9", "longer than 24 hours"),
        ("SCH|A-1||||||||NaN|MIN", "TQ1|1||||||20270112093000", "SCH-9", "not a positive number"),
        ("SCH|A-1||||||||inf|MIN", "TQ1|1||||||20270112093000", "SCH-9", "not a positive number"),
        ("SCH|A-1||||||||1e400|MIN", "TQ1|1||||||20270112093000", "SCH-9", "not a positive number"),
        ("SCH|A-1||||||||-5|MIN", "TQ1|1||||||20270112093000", "SCH-9", "not a positive number"),
        ("SCH|A-1||||||||30|FORTNIGHT", "TQ1|1||||||20270112093000", "SCH-9", "in a known unit"),
        ("SCH|A-1", "TQ1|1||||||20270112093000|20270112080000", "TQ1-8", "not after the start"),
        ("SCH|A-1", "TQ1|1||||||20270112093000|20270115093000", "TQ1-8", "longer than 24 hours"),
    ],
)
def test_an_absurd_duration_or_end_is_refused_naming_the_field(sch, tq1, field, reason):
    with pytest.raises(MalformedMessage) as refused:
        parse(siu(sch=sch, tq1=tq1))

    assert refused.value.reason.startswith(field)
    assert reason in refused.value.reason
    assert refused.value.code == DATA_TYPE_ERROR
    assert refused.value.location == Location(field[:3], int(field[4:]))


def test_an_unusable_resource_duration_is_skipped_for_the_next_one():
    parsed = parse(
        siu(sch="SCH|A-1", tq1="", extra="AIS|1|A|VIDEO|20270112093000|0|MIN|90|D\nAIP|1|A|DOC||||||20|MIN")
    )

    assert parsed.scheduling.end - parsed.scheduling.start == timedelta(minutes=20)
    assert any("AIS-7" in note for note in parsed.notes)


@pytest.mark.parametrize(
    ("amount", "unit"), [("abc", "MIN"), ("30", "FORTNIGHT"), ("-5", "MIN"), ("0", "MIN")]
)
def test_unusable_durations_are_none(amount, unit):
    assert duration_from(amount, unit) is None


# --- identity ------------------------------------------------------------------------------


def test_the_appointment_id_is_the_filler_id_unless_the_endpoint_chooses_another_field():
    text = siu(
        sch="SCH|P-1^EPIC|F-1^EPIC||||||||30|MIN||||||||||||||||ORD-7",
        extra="ARQ|PQ-1|AQ-1\nPV1|1|O|VIRTUAL||||||||||||||||CSN-9",
    )

    assert parse(text, id_field="SCH-2").scheduling.external_id == "F-1"
    assert parse(text, id_field="SCH-1").scheduling.external_id == "P-1"
    assert parse(text, id_field="SCH-27").scheduling.external_id == "ORD-7"
    assert parse(text, id_field="ARQ-2").scheduling.external_id == "AQ-1"
    assert parse(text, id_field="PV1-19").scheduling.external_id == "CSN-9"
    assert scheduling_parse(text.replace("\n", "\r"), time_zone=CHICAGO).scheduling.external_id == "F-1"


def test_the_sending_facility_is_not_part_of_the_identity():
    east = parse(siu().replace("|NVH|", "|NVH-EAST|", 1)).scheduling

    assert east.external_id == parse(siu()).scheduling.external_id == "A-1"
    assert east.sending_facility == "NVH-EAST"


@pytest.mark.parametrize(
    ("id_field", "sch", "reason"),
    [
        (
            "SCH-2",
            "SCH|P-1^EPIC|||||||||30|MIN",
            "SCH-2 (filler appointment ID) is empty: the appointment has no ID. This feed reads the "
            "appointment ID from SCH-2; send it there, or change the appointment ID field in the SMS settings",
        ),
        (
            "SCH-1",
            "SCH||F-1||||||||30|MIN",
            "SCH-1 (placer appointment ID) is empty: the appointment has no ID. This feed reads the "
            "appointment ID from SCH-1; send it there, or change the appointment ID field in the SMS settings",
        ),
    ],
)
def test_an_appointment_without_id_is_an_error_naming_the_chosen_field(id_field, sch, reason):
    with pytest.raises(MalformedMessage) as refused:
        parse(siu(sch=sch), id_field=id_field)

    assert refused.value.reason == reason
    assert refused.value.code == REQUIRED_FIELD_MISSING
    assert refused.value.location == Location("SCH", int(id_field[-1]))


@pytest.mark.parametrize("constant", ["0", "000", "NA", "N/A", "null", "---", "NVH", "EPIC"])
def test_a_placeholder_or_the_senders_name_is_not_an_appointment_id(constant):
    with pytest.raises(MalformedMessage) as refused:
        parse(siu(sch=f"SCH|{constant}^EPIC||||||||30|MIN"))

    assert refused.value.reason.startswith("SCH-1 (placer appointment ID) holds a placeholder")
    assert refused.value.code == DATA_TYPE_ERROR
    assert refused.value.location == Location("SCH", 1)


def test_the_sending_facility_scopes_the_id():
    parsed = parse(siu().replace("|NVH|", "|NVH^2.16.840.1.113883.3.999^ISO|", 1))

    assert parsed.scheduling.sending_facility == "NVH"
    assert parsed.envelope.sender == "EPIC^NVH"


# --- the mobile number ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pid13", "expected"),
    [
        # A home landline and a cell phone: the cell phone.
        ("^PRN^PH^^1^217^5550142~^PRN^CP^^1^415^5550123", "+14155550123"),
        # A cell phone for another use still beats a plain telephone.
        ("^PRN^PH^^1^217^5550142~^ORN^CP^^1^415^5550124", "+14155550124"),
        # Only a telephone: used (PH may be a mobile).
        ("^PRN^PH^^1^217^5550142", "+12175550142"),
        # E-mail, fax and beeper entries are skipped.
        ("^NET^Internet^pat@example.org~^PRN^FX^^1^217^5550150~^BPN^BP^^1^217^5550151", ""),
        # XTN-1 formatted, with an extension.
        ("(415)555-0125X12^PRN^CP", "+14155550125"),
        # XTN-12 unformatted (v2.5+).
        ("^PRN^CP^^^^^^^^^+14155550126", "+14155550126"),
        # Country, area and local number with punctuation.
        ("^PRN^CP^^+1^(415)^555-0127", "+14155550127"),
        # Not a valid number: no phone rather than a wrong one.
        ("^PRN^CP^^1^415^555", ""),
        # A bad cell phone falls back to the next candidate.
        ("^PRN^CP^^1^415^555~^PRN^PH^^1^217^5550142", "+12175550142"),
        ("", ""),
    ],
)
def test_the_mobile_number_comes_from_pid_13(pid13, expected):
    parsed = parse(siu(pid=f"PID|1||MRN1||DOE^JANE||||||||{pid13}"))

    assert parsed.scheduling.phone == expected


def test_no_pid_segment_means_no_phone():
    assert parse(siu(pid="")).scheduling.phone == ""


# --- language and department -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        ("en", "", "en"),
        ("eng", "", "en"),
        ("ENG", "English", "en"),
        ("es", "", "es"),
        ("spa", "", "es"),
        ("SPA", "Spanish", "es"),
        ("es-MX", "", "es"),
        ("", "Spanish", "es"),
        ("1^x", "Vietnamese", "vi"),
        ("ZZZ", "Klingon", ""),
        ("", "", ""),
    ],
)
def test_languages_become_iso_639_1(code, text, expected):
    assert language_code(code, text) == expected


def test_the_language_comes_from_pid_15():
    parsed = parse(siu(pid="PID|1||MRN1||DOE^JANE||||||||^PRN^CP^^1^415^5550123||SPA^Spanish^HL70296"))

    assert parsed.scheduling.language == "es"


def test_the_department_comes_from_ail_3_then_pv1_3():
    both = siu(extra="AIL|1|A|TELEHEALTH A^^^NVH\nPV1|1|O|CLINIC B^^^NVH")
    facility_only = siu(extra="AIL|1|A|^^^NVH EAST")
    pv1_only = siu(extra="PV1|1|O|CLINIC B^^^NVH")

    assert parse(both).scheduling.department == "TELEHEALTH A"
    assert parse(facility_only).scheduling.department == "NVH EAST"
    assert parse(pv1_only).scheduling.department == "CLINIC B"


# --- time zones --------------------------------------------------------------------------------


def test_times_without_an_offset_are_read_in_the_endpoints_zone():
    parsed = parse(siu(tq1="TQ1|1||||||20270712093000"), zone=NEW_YORK)

    assert parsed.scheduling.start == utc(2027, 7, 12, 13, 30)  # EDT
    assert parsed.scheduling.time_zone == NEW_YORK


def test_an_offset_matching_the_endpoints_zone_keeps_the_iana_zone():
    parsed = parse(siu(tq1="TQ1|1||||||20270112093000-0500"), zone=NEW_YORK)

    assert parsed.scheduling.start == utc(2027, 1, 12, 14, 30)
    assert parsed.scheduling.time_zone == NEW_YORK  # daylight saving keeps working for reminders


def test_an_offset_from_another_zone_fixes_the_instant_and_the_department_keeps_its_zone():
    # An engine stamping in its own host's zone (or UTC): the patient still reads New York time.
    parsed = parse(siu(tq1="TQ1|1||||||20270112093000-0600"), zone=NEW_YORK)

    assert parsed.scheduling.start == utc(2027, 1, 12, 15, 30)
    assert parsed.scheduling.time_zone == NEW_YORK
    assert any("not the endpoint's time zone" in note for note in parsed.notes)


def test_a_half_hour_offset_keeps_the_endpoints_zone_with_a_note():
    parsed = parse(siu(tq1="TQ1|1||||||20270112093000+0530"), zone=NEW_YORK)

    assert parsed.scheduling.start == utc(2027, 1, 12, 4, 0)
    assert parsed.scheduling.time_zone == NEW_YORK
    assert parsed.notes


def test_negative_offsets_under_an_hour_keep_their_sign():
    # python-hl7's parse_datetime reads -0030 as +00:30.
    naive, offset = dtm_parse("202701120930-0030")

    assert offset == timedelta(minutes=-30)
    assert naive == datetime(2027, 1, 12, 9, 30)


def test_the_ambiguous_hour_of_the_autumn_change_follows_the_offset_when_given():
    # 2027-11-07 01:30 happens twice in New York: EDT (-0400) and then EST (-0500).
    first = parse(siu(tq1="TQ1|1||||||20271107013000-0400"), zone=NEW_YORK)
    second = parse(siu(tq1="TQ1|1||||||20271107013000-0500"), zone=NEW_YORK)
    unspecified = parse(siu(tq1="TQ1|1||||||20271107013000"), zone=NEW_YORK)

    assert first.scheduling.start == utc(2027, 11, 7, 5, 30)
    assert second.scheduling.start == utc(2027, 11, 7, 6, 30)
    assert first.scheduling.time_zone == second.scheduling.time_zone == NEW_YORK
    assert unspecified.scheduling.start == utc(2027, 11, 7, 5, 30)  # the first occurrence


def test_a_visit_across_the_spring_change_lasts_its_real_duration():
    # 01:30 EST + 60 minutes is 03:30 EDT (02:00-03:00 does not exist that night).
    parsed = parse(siu(sch="SCH|A-1||||||||60|MIN", tq1="TQ1|1||||||20270314013000"), zone=NEW_YORK)

    assert parsed.scheduling.start == utc(2027, 3, 14, 6, 30)
    assert parsed.scheduling.end == utc(2027, 3, 14, 7, 30)
    assert parsed.scheduling.end.astimezone(ZoneInfo(NEW_YORK)).hour == 3


def test_the_message_time_orders_updates_and_honours_its_offset():
    parsed = parse(siu(msh7="20270105083015-0800"), zone=NEW_YORK)

    assert parsed.scheduling.message_time == utc(2027, 1, 5, 16, 30, 15)


# --- refusals ------------------------------------------------------------------------------------


def test_other_siu_events_are_unsupported():
    with pytest.raises(UnsupportedMessage) as refused:
        parse(siu(trigger="S18"))

    assert refused.value.code == UNSUPPORTED_EVENT_CODE
    assert "SIU S18" in refused.value.reason


@pytest.mark.parametrize("version", ["2.1", "2.2", "3.0"])
def test_old_or_unknown_versions_are_unsupported(version):
    with pytest.raises(UnsupportedMessage) as refused:
        parse(siu(version=version))

    assert refused.value.code == UNSUPPORTED_VERSION_ID


@pytest.mark.parametrize(
    "version", ["2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.2"]
)
def test_versions_from_2_3_to_2_8_are_read(version):
    assert parse(siu(version=version)).envelope.version == version


def test_a_body_that_is_not_hl7():
    with pytest.raises(NotHL7) as refused:
        scheduling_parse(b'{"resourceType": "Appointment"}', time_zone=CHICAGO)

    assert refused.value.reason == "not HL7: the body must start with MSH"


def test_segments_without_msh():
    with pytest.raises(NotHL7) as refused:
        scheduling_parse(b"SCH|A-1\rPID|1", time_zone=CHICAGO)

    assert refused.value.reason.startswith("MSH segment missing")


def test_msh_without_encoding_characters_is_not_hl7():
    with pytest.raises(NotHL7):
        scheduling_parse(b"MSH", time_zone=CHICAGO)


def test_a_truncated_message_is_malformed_with_its_header():
    whole = fixture("epic_siu_s12_v251.hl7")
    truncated = whole[: whole.index(b"\rSCH|") + 12]  # cut inside SCH: no start time anywhere

    with pytest.raises(MalformedMessage) as refused:
        scheduling_parse(truncated, time_zone=CHICAGO, id_field="SCH-1")

    assert refused.value.envelope.control_id == "EPC0000100001"
    assert refused.value.reason == "no start time in TQ1-7, SCH-11 or AIS/AIL/AIP"


def test_a_message_cut_inside_msh_is_rejected():
    with pytest.raises(MalformedMessage) as refused:
        scheduling_parse(b"MSH|^~\\&|EPIC|NVH|VCONNECT|VIRTUALCARE|2027010508", time_zone=CHICAGO)

    assert refused.value.ack_code == "AR"
    assert "MSH-10" in refused.value.reason


def test_a_missing_sch_segment_is_malformed():
    with pytest.raises(MalformedMessage) as refused:
        parse(siu(sch=""))

    assert refused.value.reason == "SCH segment missing"


def test_an_empty_message_time_is_malformed():
    with pytest.raises(MalformedMessage) as refused:
        parse(siu(msh7=""))

    assert "MSH-7" in refused.value.reason


def test_two_messages_in_one_body_are_rejected():
    with pytest.raises(MalformedMessage) as refused:
        parse(siu() + "\n" + siu())

    assert refused.value.ack_code == "AR"
    assert "one message per request" in refused.value.reason


def test_a_segment_with_a_broken_id_is_malformed():
    with pytest.raises(MalformedMessage) as refused:
        parse(siu(extra="pv1|1|O"))

    assert "segment 5" in refused.value.reason


def test_segments_the_feed_does_not_read_are_checked_but_do_not_change_the_result():
    plain = parse(siu())
    noisy = siu(
        extra="PV2|||^Follow-up\nNTE|1||A note with \\T\\ escapes ~ and | separators\n"
        "OBX|1|ST|8302-2^Height^LN||180|cm\nDG1|1||I10^Hypertension^I10\nZVC|1|VIDEO^^^|x^y~z"
    )

    assert parse(noisy).scheduling == plain.scheduling


def test_nothing_of_the_patient_reaches_the_logs(caplog):
    caplog.set_level(logging.DEBUG)
    # An escape sequence python-hl7 does not know makes it log the whole field.
    text = siu(pid="PID|1||MRN1||ZEPHYRINE\\Zq\\^JANE||||||||^PRN^CP^^1^415^5550123\\Zq\\")
    message = er7_parse(text.replace("\n", "\r"))
    value(next(segment for segment in message if str(segment[0][0]) == "PID"), 5)
    parse(text)

    assert "ZEPHYRINE" not in caplog.text
    assert "5550123" not in caplog.text


def test_the_librarys_loggers_stay_silent_when_logging_is_set_up_again(settings):
    import logging.config

    import hl7.containers
    import hl7.util

    # As django.setup() does a second time when runserver loads connector.wsgi.
    logging.config.dictConfig(settings.LOGGING)

    for logger in (hl7.util.logger, hl7.containers.logger):
        assert not logger.isEnabledFor(logging.CRITICAL)


# --- the ACK -----------------------------------------------------------------------------------


def test_an_accept_ack_swaps_sender_and_receiver_and_echoes_the_control_id():
    parsed = scheduling_parse(fixture("epic_siu_s12_v251.hl7"), time_zone=CHICAGO)

    ack = hl7.parse(ack_build(parsed.envelope, "AA", control_id="ACK-1"))

    msh = ack.segment("MSH")
    assert str(msh(3)) == "VCONNECT" and str(msh(4)) == "VIRTUALCARE"
    assert str(msh(5)) == "EPIC" and str(msh(6)) == "NVH"
    assert str(msh(9)) == "ACK^S12^ACK"
    assert str(msh(10)) == "ACK-1"
    assert str(msh(12)) == "2.5.1"
    assert str(ack.segment("MSA")) == "MSA|AA|EPC0000100001"
    assert "ERR" not in [str(segment[0]) for segment in ack]


def test_an_error_ack_has_an_err_segment_with_the_escaped_reason():
    parsed = scheduling_parse(fixture("epic_siu_s12_v251.hl7"), time_zone=CHICAGO)
    reason = "SCH-1 | SCH-2 ^ empty & more ~ text \\ end"

    text = ack_build(parsed.envelope, "AE", reason=reason, error_code="101", location=Location("SCH", 1))

    ack = hl7.parse(text)
    err = ack.segment("ERR")
    assert str(ack.segment("MSA")(1)) == "AE"
    assert str(err(2)) == "SCH^1^1"
    assert str(err(3)) == "101^Required field missing^HL70357"
    assert str(err(4)) == "E"
    assert ack.unescape(str(err(8))) == reason
    assert len(text.split("\r")) == 4  # MSH, MSA, ERR and the final empty string


def test_a_v23_error_ack_uses_err_1():
    parsed = scheduling_parse(fixture("cerner_siu_s12_v23.hl7"), time_zone=CHICAGO)

    text = ack_build(parsed.envelope, "AR", reason="nope", error_code="200", location=Location("MSH", 9))

    assert "\rERR|MSH^1^9^200&Unsupported message type&HL70357\r" in text
    assert "\rMSA|AR|CRN20270111154500123|nope\r" in text
    assert "|ACK^S12^ACK|" in text and text.split("\r")[0].endswith("|P|2.3")


def test_an_ack_for_an_unreadable_header_still_parses():
    ack = hl7.parse(ack_build(None, "AR", reason="not HL7"))

    assert str(ack.segment("MSA")(1)) == "AR"
    assert str(ack.segment("MSA")(2)) == ""
