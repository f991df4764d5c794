"""The HTTPS scheduling feed end to end: signature, parsing, idempotency, ordering, isolation, texts."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import hl7
import pytest
import time_machine

from connector.models import EndpointStatus, FhirEndpoint
from sms.hl7.ingest import MLLP, TlsClientIdentity, ingest_message
from sms.models import (
    Appointment,
    AppointmentStatus,
    MessageKind,
    MessageState,
    OutboundMessage,
    ProcessedMessage,
)
from sms.services.certificates import certificate_upload
from tenants.models import TenantStatus
from tenants.scoping import all_tenants, tenant_scope
from tests.conftest import ORG_A_TID, ORG_B_TID
from tests.support.hl7_feed import fixture, make_certificate, make_key, pem, ready_endpoint, sign

CHICAGO = "America/Chicago"
NEW_YORK = "America/New_York"
# Just after the Epic fixtures' S12 was sent (2027-01-05 08:30:15 in Chicago).
EPIC_DAY = datetime(2027, 1, 5, 14, 31, tzinfo=UTC)


@dataclass
class Feed:
    tenant: object
    key: object
    certificate: object
    endpoint: FhirEndpoint
    url: str


def set_up_feed(tenant, *, environment="test", key_kind="rsa2048", time_zone=CHICAGO) -> Feed:
    key = make_key(key_kind)
    certificate = certificate_upload(
        tenant=tenant, environment=environment, data=pem(make_certificate(key)), uploaded_by=None
    )
    endpoint = ready_endpoint(tenant, environment=environment, time_zone=time_zone)
    return Feed(
        tenant, key, certificate, endpoint, f"/sms/ingest/{tenant.microsoft_tenant_id}/{environment}/"
    )


@pytest.fixture
def feed_a(org_a) -> Feed:
    return set_up_feed(org_a)


@pytest.fixture
def feed_b(org_b) -> Feed:
    return set_up_feed(org_b)


@pytest.fixture
def on_epic_day():
    with time_machine.travel(EPIC_DAY, tick=False) as traveller:
        yield traveller


def post(
    client, feed: Feed, body: bytes, *, key=None, signature: str | None = "sign", url: str | None = None
):
    headers = {}
    if signature == "sign":
        headers["HTTP_X_HL7_SIGNATURE"] = sign(body, key or feed.key)
    elif signature is not None:
        headers["HTTP_X_HL7_SIGNATURE"] = signature
    return client.post(url or feed.url, data=body, content_type="x-application/hl7-v2+er7", **headers)


def msa(response) -> tuple[str, str]:
    ack = hl7.parse(response.content.decode())
    return str(ack.segment("MSA")(1)), str(ack.segment("MSA")(2))


def appointments(tenant):
    with tenant_scope(tenant):
        return list(Appointment.objects.all())


def processed(tenant):
    with tenant_scope(tenant):
        return list(ProcessedMessage.objects.all())


def texts(tenant, **filters):
    with tenant_scope(tenant):
        return list(OutboundMessage.objects.filter(**filters).order_by("send_at"))


# --- the happy path -----------------------------------------------------------------------------


def test_a_signed_new_appointment_is_stored_acknowledged_and_texts_are_scheduled(client, feed_a, on_epic_day):
    response = post(client, feed_a, fixture("epic_siu_s12_v251.hl7"))

    assert response.status_code == 200
    assert response["Content-Type"].startswith("x-application/hl7-v2+er7")
    assert msa(response) == ("AA", "EPC0000100001")
    [appointment] = appointments(feed_a.tenant)
    assert appointment.endpoint == feed_a.endpoint
    assert appointment.external_id == "4000123456" and appointment.sending_facility == "NVH"
    assert appointment.start == datetime(2027, 1, 12, 15, 30, tzinfo=UTC)
    assert appointment.end == datetime(2027, 1, 12, 16, 0, tzinfo=UTC)
    assert appointment.status == AppointmentStatus.BOOKED
    assert appointment.phone == "+14155550123" and appointment.phone_last_four == "0123"
    assert appointment.department == "NVH Cardiology & Vascular"
    assert appointment.time_zone == CHICAGO
    [record] = processed(feed_a.tenant)
    assert (record.sender, record.control_id, record.message_type, record.ack_code) == (
        "EPIC^NVH",
        "EPC0000100001",
        "SIU^S12",
        "AA",
    )
    kinds = [text.kind for text in texts(feed_a.tenant)]
    assert kinds == [MessageKind.CONFIRMATION, MessageKind.REMINDER, MessageKind.REMINDER]


@pytest.mark.parametrize(
    ("key_kind", "raw"), [("p256", False), ("p256", True), ("p384", False), ("p384", True)]
)
def test_ec_certificates_verify_der_and_raw_signatures(client, org_a, key_kind, raw, on_epic_day):
    feed = set_up_feed(org_a, key_kind=key_kind)
    body = fixture("epic_siu_s12_v251.hl7")

    response = post(client, feed, body, signature=sign(body, feed.key, raw_ecdsa=raw))

    assert response.status_code == 200
    assert msa(response)[0] == "AA"


def test_a_url_safe_unpadded_signature_is_accepted(client, feed_a, on_epic_day):
    body = fixture("epic_siu_s12_v251.hl7")
    signature = sign(body, feed_a.key).replace("+", "-").replace("/", "_").rstrip("=")

    assert post(client, feed_a, body, signature=signature).status_code == 200


# --- authentication: nothing is stored without it -------------------------------------------------


def assert_nothing_stored(tenant):
    assert appointments(tenant) == []
    assert processed(tenant) == []
    assert texts(tenant) == []


def test_a_message_without_signature_is_refused_and_nothing_is_stored(client, feed_a):
    response = post(client, feed_a, fixture("epic_siu_s12_v251.hl7"), signature=None)

    assert response.status_code == 401
    assert "X-HL7-Signature header is missing" in response.content.decode()
    assert response["WWW-Authenticate"].startswith("X-HL7-Signature")
    assert_nothing_stored(feed_a.tenant)


def test_a_bad_signature_is_refused_and_nothing_is_stored(client, feed_a):
    body = fixture("epic_siu_s12_v251.hl7")
    tampered = body.replace(b"5550123", b"5550199")

    response = post(client, feed_a, tampered, signature=sign(body, feed_a.key))

    assert response.status_code == 401
    assert "does not match" in response.content.decode()
    assert_nothing_stored(feed_a.tenant)


def test_a_signature_that_is_not_base64_is_refused(client, feed_a):
    response = post(client, feed_a, fixture("epic_siu_s12_v251.hl7"), signature="not base64 at all!")

    assert response.status_code == 401
    assert_nothing_stored(feed_a.tenant)


def test_a_message_signed_with_another_organizations_key_is_refused(client, feed_a, feed_b):
    response = post(client, feed_a, fixture("epic_siu_s12_v251.hl7"), key=feed_b.key)

    assert response.status_code == 401
    assert_nothing_stored(feed_a.tenant)


def test_organization_a_cannot_post_to_organization_b(client, feed_a, feed_b, on_epic_day):
    # Signed with A's key, posted to B's URL.
    response = post(client, feed_a, fixture("epic_siu_s12_v251.hl7"), url=feed_b.url)

    assert response.status_code == 401
    assert_nothing_stored(feed_b.tenant)
    assert_nothing_stored(feed_a.tenant)


def test_each_organization_only_sees_its_own_appointments(client, feed_a, feed_b, on_epic_day):
    post(client, feed_a, fixture("epic_siu_s12_v251.hl7"))
    post(client, feed_b, fixture("cerner_siu_s12_v23.hl7"))

    assert [a.external_id for a in appointments(feed_a.tenant)] == ["4000123456"]
    assert [a.external_id for a in appointments(feed_b.tenant)] == ["77001234"]
    with all_tenants():
        assert {a.tenant_id for a in Appointment.objects.all()} == {feed_a.tenant.pk, feed_b.tenant.pk}


def test_the_test_certificate_does_not_authorize_production(client, feed_a):
    ready_endpoint(feed_a.tenant, environment="production")
    production_url = f"/sms/ingest/{ORG_A_TID}/production/"

    response = post(client, feed_a, fixture("epic_siu_s12_v251.hl7"), url=production_url)

    assert response.status_code == 401
    assert "no signing certificate is set up" in response.content.decode()


def test_a_replaced_certificate_no_longer_verifies(client, feed_a):
    old_key = feed_a.key
    certificate_upload(
        tenant=feed_a.tenant,
        environment="test",
        data=pem(make_certificate(make_key("p256"))),
        uploaded_by=None,
    )

    response = post(client, feed_a, fixture("epic_siu_s12_v251.hl7"), key=old_key)

    assert response.status_code == 401


# --- what is not HL7, too big, or at an unknown address ---------------------------------------------


def test_a_signed_body_that_is_not_hl7_is_a_400(client, feed_a):
    response = post(client, feed_a, b'{"resourceType": "Appointment"}')

    assert response.status_code == 400
    assert response.content.decode().strip() == "not HL7: the body must start with MSH"
    assert response["Content-Type"].startswith("text/plain")
    assert_nothing_stored(feed_a.tenant)


def test_an_unsigned_body_that_is_not_hl7_is_a_401(client, feed_a):
    assert post(client, feed_a, b"hello", signature=None).status_code == 401


def test_an_oversized_body_is_refused_before_anything_else(client, feed_a, settings):
    settings.HL7_MAX_BODY_BYTES = 1024
    body = fixture("epic_siu_s12_v251.hl7") + b"\rNTE|2||" + b"x" * 2000

    response = post(client, feed_a, body)

    assert response.status_code == 413
    assert_nothing_stored(feed_a.tenant)


def test_the_size_is_checked_even_when_the_declared_length_lies(feed_a, settings, rf):
    from sms.hl7.views import ingest

    settings.HL7_MAX_BODY_BYTES = 1024
    body = fixture("epic_siu_s12_v251.hl7") + b"x" * 2000
    request = rf.post(
        feed_a.url, data=body, content_type="text/plain", HTTP_X_HL7_SIGNATURE=sign(body, feed_a.key)
    )
    request.META["CONTENT_LENGTH"] = "10"

    response = ingest(request, ORG_A_TID, "test")

    assert response.status_code == 413


@pytest.mark.parametrize(
    "url",
    [
        "/sms/ingest/99999999-9999-4999-8999-999999999999/test/",  # no such organization
        "/sms/ingest/not-a-guid/test/",
        f"/sms/ingest/{ORG_A_TID}/staging/",  # no such environment
    ],
)
def test_an_unknown_ingest_url_is_a_404(client, feed_a, url):
    response = post(client, feed_a, fixture("epic_siu_s12_v251.hl7"), url=url)

    assert response.status_code == 404
    assert_nothing_stored(feed_a.tenant)


def test_a_suspended_organization_gets_a_404(client, feed_a):
    feed_a.tenant.status = TenantStatus.SUSPENDED
    feed_a.tenant.save()

    assert post(client, feed_a, fixture("epic_siu_s12_v251.hl7")).status_code == 404


def test_only_post_is_allowed(client, feed_a):
    assert client.get(feed_a.url).status_code == 405


def test_the_tenant_id_in_the_url_is_case_insensitive(client, feed_a, on_epic_day):
    url = f"/sms/ingest/{ORG_A_TID.upper()}/test/"

    assert post(client, feed_a, fixture("epic_siu_s12_v251.hl7"), url=url).status_code == 200


# --- idempotency and ordering ------------------------------------------------------------------------


def test_a_repeated_control_id_is_acknowledged_again_and_not_processed_twice(client, feed_a, on_epic_day):
    body = fixture("epic_siu_s12_v251.hl7")
    first = post(client, feed_a, body)
    # Same MSH-3/4/10, different content: a resend is never applied a second time.
    resent = body.replace(b"20270112", b"20270113")

    second = post(client, feed_a, resent)

    assert msa(first) == msa(second) == ("AA", "EPC0000100001")
    [appointment] = appointments(feed_a.tenant)
    assert appointment.start == datetime(2027, 1, 12, 15, 30, tzinfo=UTC)
    assert len(processed(feed_a.tenant)) == 1
    assert len(texts(feed_a.tenant)) == 3


def test_the_same_control_id_from_another_sender_is_another_message(client, feed_a, on_epic_day):
    body = fixture("epic_siu_s12_v251.hl7")
    post(client, feed_a, body)

    other = post(client, feed_a, body.replace(b"|EPIC|NVH|", b"|EPIC|NVH-EAST|", 1))

    assert msa(other)[0] == "AA"
    assert len(processed(feed_a.tenant)) == 2
    # The same appointment ID: the same appointment, whatever the facility (docs: appointment identity).
    assert len(appointments(feed_a.tenant)) == 1


def test_an_older_message_never_undoes_newer_state(client, feed_a, on_epic_day):
    post(client, feed_a, fixture("epic_siu_s12_v251.hl7"))  # booked, sent 01-05
    on_epic_day.move_to(datetime(2027, 1, 9, 22, 11, tzinfo=UTC))
    post(client, feed_a, fixture("epic_siu_s15_v251.hl7"))  # cancelled, sent 01-09

    late = post(client, feed_a, fixture("epic_siu_s13_v251.hl7"))  # rescheduled, sent 01-07, arrives last

    assert msa(late)[0] == "AA"  # accepted (the EHR must not resend it) but not applied
    [appointment] = appointments(feed_a.tenant)
    assert appointment.status == AppointmentStatus.CANCELLED
    assert appointment.start == datetime(2027, 1, 14, 20, 0, tzinfo=UTC)
    assert texts(feed_a.tenant, kind=MessageKind.REMINDER, state=MessageState.SCHEDULED) == []
    record = next(r for r in processed(feed_a.tenant) if r.control_id == "EPC0000100002")
    assert "older than the state already stored" in record.ack_text


def test_a_new_appointment_message_for_a_stored_appointment_updates_it(client, feed_a, on_epic_day):
    # The feed inserts an S12's appointment without looking first; when it exists
    # (the EHR booked it again under a new control ID) the message is applied as an update.
    post(client, feed_a, fixture("epic_siu_s12_v251.hl7"))
    on_epic_day.move_to(datetime(2027, 1, 6, 9, 0, tzinfo=UTC))
    again = (
        fixture("epic_siu_s12_v251.hl7")
        .replace(b"EPC0000100001", b"EPC0000100009")
        .replace(b"20270105083015", b"20270106030000")
        .replace(b"20270112093000", b"20270112110000")
        .replace(b"20270112100000", b"20270112113000")
    )

    response = post(client, feed_a, again)

    assert msa(response) == ("AA", "EPC0000100009")
    [appointment] = appointments(feed_a.tenant)
    assert appointment.start == datetime(2027, 1, 12, 17, 0, tzinfo=UTC)
    assert len(processed(feed_a.tenant)) == 2
    # The reminders for the old time are cancelled, the new time's are scheduled.
    reminders = texts(feed_a.tenant, kind=MessageKind.REMINDER, state=MessageState.SCHEDULED)
    assert [r.send_at for r in reminders] == [
        appointment.start - timedelta(days=1),
        appointment.start - timedelta(hours=1),
    ]


def test_a_new_appointment_message_older_than_the_stored_state_is_not_applied(client, feed_a, on_epic_day):
    on_epic_day.move_to(datetime(2027, 1, 7, 20, 13, tzinfo=UTC))
    post(client, feed_a, fixture("epic_siu_s13_v251.hl7"))  # the reschedule arrives first

    late = post(client, feed_a, fixture("epic_siu_s12_v251.hl7"))  # the booking, sent earlier

    assert msa(late) == ("AA", "EPC0000100001")
    [appointment] = appointments(feed_a.tenant)
    assert appointment.start == datetime(2027, 1, 14, 20, 0, tzinfo=UTC)  # the S13's time
    record = next(r for r in processed(feed_a.tenant) if r.control_id == "EPC0000100001")
    assert "older than the state already stored" in record.ack_text


def test_the_epic_sequence_books_reschedules_modifies_and_cancels(client, feed_a, on_epic_day):
    post(client, feed_a, fixture("epic_siu_s12_v251.hl7"))
    with tenant_scope(feed_a.tenant):  # the confirmation went (a move before it goes replaces it)
        OutboundMessage.objects.filter(kind=MessageKind.CONFIRMATION).update(state=MessageState.SENT)
    on_epic_day.move_to(datetime(2027, 1, 7, 20, 13, tzinfo=UTC))
    post(client, feed_a, fixture("epic_siu_s13_v251.hl7"))
    [appointment] = appointments(feed_a.tenant)
    assert appointment.start == datetime(2027, 1, 14, 20, 0, tzinfo=UTC)
    assert {t.kind for t in texts(feed_a.tenant, state=MessageState.SCHEDULED)} >= {MessageKind.RESCHEDULE}
    reminders = texts(feed_a.tenant, kind=MessageKind.REMINDER, state=MessageState.SCHEDULED)
    assert [r.send_at for r in reminders] == [
        appointment.start - timedelta(days=1),
        appointment.start - timedelta(hours=1),
    ]

    on_epic_day.move_to(datetime(2027, 1, 8, 15, 16, tzinfo=UTC))
    post(client, feed_a, fixture("epic_siu_s14_v251.hl7"))
    [appointment] = appointments(feed_a.tenant)
    assert appointment.phone == "+14155550177"  # the modification changed the mobile number

    on_epic_day.move_to(datetime(2027, 1, 9, 22, 11, tzinfo=UTC))
    response = post(client, feed_a, fixture("epic_siu_s15_v251.hl7"))
    assert msa(response)[0] == "AA"
    [appointment] = appointments(feed_a.tenant)
    assert appointment.status == AppointmentStatus.CANCELLED
    assert texts(feed_a.tenant, kind=MessageKind.REMINDER, state=MessageState.SCHEDULED) == []
    assert texts(feed_a.tenant, kind=MessageKind.CANCELLATION)


def test_the_cerner_sequence_deletes_and_marks_no_shows(client, feed_a):
    with time_machine.travel(datetime(2027, 1, 11, 21, 46, tzinfo=UTC), tick=False) as traveller:
        post(client, feed_a, fixture("cerner_siu_s12_v23.hl7"))
        [appointment] = appointments(feed_a.tenant)
        assert appointment.language == "es" and appointment.phone == "+13125550187"
        assert texts(feed_a.tenant, kind=MessageKind.CONFIRMATION)

        traveller.move_to(datetime(2027, 1, 12, 15, 1, tzinfo=UTC))
        post(client, feed_a, fixture("cerner_siu_s17_v23.hl7"))
        [appointment] = appointments(feed_a.tenant)
        assert appointment.status == AppointmentStatus.DELETED
        assert texts(feed_a.tenant, state=MessageState.SCHEDULED) == []

        traveller.move_to(datetime(2027, 1, 18, 23, 6, tzinfo=UTC))
        post(client, feed_a, fixture("cerner_siu_s26_v28.hl7"))
        [appointment] = appointments(feed_a.tenant)
        assert appointment.status == AppointmentStatus.NO_SHOW


# --- acknowledgements other than AA -----------------------------------------------------------------


def test_an_unsupported_message_type_is_rejected_and_the_answer_is_remembered(client, feed_a):
    first = post(client, feed_a, fixture("adt_a04_v251.hl7"))
    again = post(client, feed_a, fixture("adt_a04_v251.hl7"))

    assert first.status_code == 200
    assert msa(first) == msa(again) == ("AR", "EPC0000900001")
    err = hl7.parse(first.content.decode()).segment("ERR")
    assert str(err(3)).startswith("200^")
    assert [r.ack_code for r in processed(feed_a.tenant)] == ["AR"]
    assert appointments(feed_a.tenant) == []


def test_siu_s18_is_rejected_as_an_unsupported_event(client, feed_a):
    body = fixture("epic_siu_s12_v251.hl7").replace(b"SIU^S12^SIU_S12", b"SIU^S18^SIU_S12")

    response = post(client, feed_a, body)

    assert msa(response)[0] == "AR"
    assert str(hl7.parse(response.content.decode()).segment("ERR")(3)).startswith("201^")


def test_a_message_without_appointment_id_gets_an_error_ack_and_can_be_sent_again(
    client, feed_a, on_epic_day
):
    good = fixture("epic_siu_s12_v251.hl7")
    bad = good.replace(b"SCH|4000123456^EPIC|4000123456^EPIC|", b"SCH|||")

    response = post(client, feed_a, bad)

    assert msa(response) == ("AE", "EPC0000100001")
    err = hl7.parse(response.content.decode()).segment("ERR")
    assert str(err(3)).startswith("101^")
    assert hl7.parse(response.content.decode()).unescape(str(err(8))).startswith(
        "SCH-2 (filler appointment ID) is empty: the appointment has no ID."
    )
    # Recorded for the admin, but not final: the corrected resend is processed.
    assert [record.ack_code for record in processed(feed_a.tenant)] == ["AE"]
    assert msa(post(client, feed_a, good))[0] == "AA"
    assert [record.ack_code for record in processed(feed_a.tenant)] == ["AA"]
    assert len(appointments(feed_a.tenant)) == 1


def test_a_truncated_message_gets_an_error_ack(client, feed_a):
    whole = fixture("epic_siu_s12_v251.hl7")
    truncated = whole[: whole.index(b"\rSCH|") + 12]

    response = post(client, feed_a, truncated)

    assert msa(response) == ("AE", "EPC0000100001")
    assert appointments(feed_a.tenant) == []


def test_an_unusable_date_gets_an_error_ack(client, feed_a):
    body = fixture("epic_siu_s12_v251.hl7").replace(
        b"TQ1|1||||||20270112093000", b"TQ1|1||||||20271399093000"
    )

    response = post(client, feed_a, body)

    assert msa(response)[0] == "AE"
    assert str(hl7.parse(response.content.decode()).segment("ERR")(3)).startswith("102^")


def test_without_a_ready_endpoint_the_message_is_rejected_but_not_remembered(client, org_a, on_epic_day):
    feed = set_up_feed(org_a)
    with tenant_scope(org_a):
        FhirEndpoint.objects.filter(pk=feed.endpoint.pk).update(status=EndpointStatus.DRAFT)

    response = post(client, feed, fixture("epic_siu_s12_v251.hl7"))

    assert msa(response)[0] == "AR"
    assert "no FHIR endpoint of this environment is ready" in response.content.decode()
    assert [record.ack_code for record in processed(org_a)] == ["AR"]  # for the admin; not final
    with tenant_scope(org_a):
        FhirEndpoint.objects.filter(pk=feed.endpoint.pk).update(status=EndpointStatus.APPROVED)
    assert msa(post(client, feed, fixture("epic_siu_s12_v251.hl7")))[0] == "AA"
    assert [record.ack_code for record in processed(org_a)] == ["AA"]


def test_the_endpoint_with_sms_settings_is_preferred(client, org_a, on_epic_day):
    ready_endpoint(org_a, base_url="https://fhir.example.org/first/api/FHIR/R4", sms=False)
    feed = set_up_feed(org_a)

    post(client, feed, fixture("epic_siu_s12_v251.hl7"))

    [appointment] = appointments(org_a)
    assert appointment.endpoint == feed.endpoint


# --- time zones and daylight saving ---------------------------------------------------------------------


def test_reminders_on_the_day_clocks_change_keep_the_wall_clock_time_in_the_departments_zone(client, org_a):
    feed = set_up_feed(org_a, time_zone=NEW_YORK)
    with time_machine.travel(datetime(2027, 3, 10, 15, 16, tzinfo=UTC), tick=False):
        response = post(client, feed, fixture("epic_siu_s12_dst_new_york.hl7"))

    assert msa(response)[0] == "AA"
    [appointment] = appointments(org_a)
    # 09:00 EDT on 2027-03-14, the day New York springs forward.
    assert appointment.start == datetime(2027, 3, 14, 13, 0, tzinfo=UTC)
    assert appointment.time_zone == NEW_YORK
    reminders = texts(org_a, kind=MessageKind.REMINDER)
    assert [r.send_at for r in reminders] == [
        datetime(2027, 3, 13, 14, 0, tzinfo=UTC),  # the day before at the same time: 09:00 EST (23 h)
        datetime(2027, 3, 14, 12, 0, tzinfo=UTC),  # 1 hour before (an exact duration): 08:00 EDT
    ]


def test_a_sender_offset_from_another_zone_keeps_the_departments_zone(client, org_a, on_epic_day):
    feed = set_up_feed(org_a, time_zone=NEW_YORK)
    body = fixture("epic_siu_s12_v251.hl7").replace(
        b"TQ1|1||||||20270112093000|20270112100000", b"TQ1|1||||||20270112093000-0600"
    )

    post(client, feed, body)

    [appointment] = appointments(org_a)
    assert appointment.start == datetime(2027, 1, 12, 15, 30, tzinfo=UTC)
    assert appointment.time_zone == NEW_YORK  # the patient reads the department's time


# --- MLLP's way in: the TLS client certificate instead of the signature --------------------------------


def test_mllp_ingest_needs_the_active_certificates_thumbprint(feed_a, on_epic_day):
    body = fixture("epic_siu_s12_v251.hl7")
    common = dict(tenant=feed_a.tenant, environment="test", body=body, signature=None, via=MLLP)

    assert ingest_message(**common).status_code == 401
    assert ingest_message(**common, peer=TlsClientIdentity("00" * 32)).status_code == 401
    assert_nothing_stored(feed_a.tenant)
    accepted = ingest_message(**common, peer=TlsClientIdentity(feed_a.certificate.thumbprint_sha256))
    assert (accepted.status_code, accepted.ack_code) == (200, "AA")


def test_a_tls_identity_never_replaces_the_signature_over_http(feed_a):
    with pytest.raises(ValueError):
        ingest_message(
            tenant=feed_a.tenant,
            environment="test",
            body=fixture("epic_siu_s12_v251.hl7"),
            signature=None,
            via="http",
            peer=TlsClientIdentity(feed_a.certificate.thumbprint_sha256),
        )


# --- privacy -----------------------------------------------------------------------------------------------


def test_no_patient_data_is_logged_or_kept(client, feed_a, on_epic_day, caplog):
    caplog.set_level(logging.DEBUG)

    post(client, feed_a, fixture("epic_siu_s12_v251.hl7"))
    post(
        client,
        feed_a,
        fixture("epic_siu_s12_v251.hl7").replace(b"SCH|4000123456^EPIC|4000123456^EPIC|", b"SCH|||"),
    )

    for secret in ("QUINN", "HARPER", "5550123", "E1234567", "EXAMPLE ST", "19850314"):
        assert secret not in caplog.text
    assert "EPC0000100001" in caplog.text  # control IDs are what the log shows
    [record] = processed(feed_a.tenant)
    assert "QUINN" not in f"{record.sender}{record.control_id}{record.ack_text}"


def test_ingest_url_is_the_one_the_integration_record_shows(org_a):
    from django.urls import reverse

    assert reverse("sms:hl7-ingest", args=[ORG_A_TID, "test"]) == f"/sms/ingest/{ORG_A_TID}/test/"
    assert ORG_B_TID not in reverse("sms:hl7-ingest", args=[ORG_A_TID, "production"])


@pytest.mark.django_db(transaction=True)
def test_the_same_message_arriving_twice_at_once_is_applied_once(org_a):
    import threading

    from django.db import connections

    feed = set_up_feed(org_a)
    body = fixture("epic_siu_s12_v251.hl7")
    signature = sign(body, feed.key)
    start, results = threading.Barrier(2), []

    def deliver() -> None:
        try:
            start.wait()
            results.append(
                ingest_message(tenant=org_a, environment="test", body=body, signature=signature, via="http")
            )
        finally:
            connections.close_all()

    with time_machine.travel(EPIC_DAY, tick=True):
        threads = [threading.Thread(target=deliver) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    # The second waits on the first's processing record, then is answered as the first was.
    assert sorted((r.ack_code, r.duplicate) for r in results) == [("AA", False), ("AA", True)]
    assert len(appointments(org_a)) == 1
    assert len(processed(org_a)) == 1
    assert len(texts(org_a)) == 3


@pytest.mark.django_db(transaction=True)
def test_two_bookings_of_the_same_appointment_at_once_store_one_appointment(org_a):
    # Two S12s with different control IDs for one new appointment: both inserts race on
    # the unique constraint; the loser is applied again as an update, not refused.
    import threading

    from django.db import connections

    feed = set_up_feed(org_a)
    first = fixture("epic_siu_s12_v251.hl7")
    second = first.replace(b"EPC0000100001", b"EPC0000100002").replace(b"20270105083015", b"20270105083016")
    start, results = threading.Barrier(2), []

    def deliver(body: bytes) -> None:
        try:
            start.wait()
            results.append(
                ingest_message(
                    tenant=org_a, environment="test", body=body, signature=sign(body, feed.key), via="http"
                )
            )
        finally:
            connections.close_all()

    with time_machine.travel(EPIC_DAY, tick=True):
        threads = [threading.Thread(target=deliver, args=(body,)) for body in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert sorted(r.ack_code for r in results) == ["AA", "AA"]
    [appointment] = appointments(org_a)
    assert appointment.state_as_of == datetime(2027, 1, 5, 14, 30, 16, tzinfo=UTC)  # the newer one's
    assert len(processed(org_a)) == 2
