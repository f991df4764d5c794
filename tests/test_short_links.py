"""Short join links in texts: /j/<128-bit code> -> the visit's patient link; one GSM-7 segment."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
import time_machine

from sms.backends import locmem
from sms.models import Appointment, AppointmentStatus, OutboundMessage, SmsSettings
from sms.services.dispatch import messages_dispatch, render_body
from sms.services.links import appointment_join_code, short_link_resolve
from sms.texts import SHIPPED, segment_count
from tenants.scoping import all_tenants, tenant_scope
from tests.support.siu_shapes import EPIC, siu
from tests.test_feed_real_senders import post
from tests.test_hl7_ingest import set_up_feed

NOW = datetime(2027, 1, 5, 14, 31, tzinfo=UTC)
SHORT = re.compile(r"https://connector\.example\.org/j/([A-Za-z0-9_-]{22})$")


@pytest.fixture
def feed(org_a, settings):
    settings.SMS_BACKEND = "sms.backends.locmem.LocmemSmsBackend"
    settings.SMS_RATE_PER_NUMBER = 1000
    settings.PUBLIC_BASE_URL = "https://connector.example.org"
    with time_machine.travel(NOW, tick=False):
        yield set_up_feed(org_a, time_zone="America/Chicago")


def test_the_confirmation_carries_a_short_link_and_fits_one_gsm_7_segment(client, feed):
    post(client, feed, siu(EPIC, control_id="E1"))

    messages_dispatch()

    [text] = locmem.outbox
    assert SHORT.search(text.body), text.body
    assert segment_count(text.body).encoding == "GSM-7"
    assert segment_count(text.body).segments == 1, (len(text.body), text.body)


@pytest.mark.parametrize("kind", ["confirmation", "reschedule", "reminder"])
def test_the_default_english_texts_fit_one_segment_with_long_realistic_values(kind):
    # A 30-character organization, the longest date and time, a 36-character public address.
    text = SHIPPED["en"][kind].format(
        organization="Northwestern Memorial Hospital",
        date="Wed Sep 30",
        time="10:45 AM AKDT",
        link="https://connector.example-health.org/j/" + "x" * 22,
        contact="",
    )

    assert segment_count(text).segments == 1, (len(text), text)


def test_the_code_is_128_random_bits_made_once(feed):
    with tenant_scope(feed.tenant):
        from tests.support.hl7_feed import ready_endpoint  # noqa: F401 - the feed made the endpoint

        appointment = Appointment.objects.create(
            tenant=feed.tenant,
            endpoint=feed.endpoint,
            environment="test",
            external_id="A-1",
            start=datetime(2027, 1, 12, 15, 30, tzinfo=UTC),
            end=datetime(2027, 1, 12, 16, 0, tzinfo=UTC),
            state_as_of=NOW,
        )
        other = Appointment.objects.create(
            tenant=feed.tenant,
            endpoint=feed.endpoint,
            environment="test",
            external_id="A-2",
            start=datetime(2027, 1, 12, 15, 30, tzinfo=UTC),
            end=datetime(2027, 1, 12, 16, 0, tzinfo=UTC),
            state_as_of=NOW,
        )
        code = appointment_join_code(appointment)
        assert len(code) == 22 and re.fullmatch(r"[A-Za-z0-9_-]{22}", code)
        assert appointment_join_code(Appointment.objects.get(pk=appointment.pk)) == code  # kept
        assert appointment_join_code(other) != code


def test_the_short_link_redirects_to_the_visits_patient_link(client, feed):
    post(client, feed, siu(EPIC, control_id="E1"))
    with tenant_scope(feed.tenant):
        message = OutboundMessage.objects.select_related("appointment__endpoint", "tenant").get(
            kind="confirmation"
        )
        body = render_body(message, SmsSettings.objects.get(endpoint=feed.endpoint))
    code = SHORT.search(body).group(1)

    response = client.get(f"/j/{code}")

    assert response.status_code == 302
    assert response["Location"].startswith("/join/")
    assert client.get(response["Location"]).status_code == 200


@pytest.mark.parametrize(
    ("code", "text"),
    [
        ("short", "This link is not complete"),
        ("A" * 22, "This link is not valid (any more)"),
    ],
)
def test_an_unknown_or_cut_code_is_a_clear_404(client, feed, code, text):
    response = client.get(f"/j/{code}")

    assert response.status_code == 404
    assert text in response.content.decode()


def test_a_cancelled_appointments_link_says_so(client, feed):
    post(client, feed, siu(EPIC, control_id="E1"))
    with tenant_scope(feed.tenant):
        appointment = Appointment.objects.get()
        code = appointment_join_code(appointment)
    post(client, feed, siu(EPIC, trigger="S15", control_id="E2", msh7="20270105090000"))

    response = client.get(f"/j/{code}")

    assert response.status_code == 404
    assert "no longer scheduled" in response.content.decode()
    with all_tenants():
        assert Appointment.objects.get().status == AppointmentStatus.CANCELLED
        with pytest.raises(Exception):  # noqa: B017 - ShortLinkInvalid, as the view shows it
            short_link_resolve(code)
