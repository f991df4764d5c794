"""The feed keeps each organization's setup (and opted-out numbers) in memory between messages.

What that must never cost: a replaced certificate that is refused, a setup
finished in the portal that is not used, a text to an opted-out number, a
number that opted back in and gets nothing. Query-set updates send no
signals; they move the shared setup token themselves. Changes made in a real
second process: tests/test_feed_setup_processes.py.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import hashes

from sms.backends import locmem
from sms.models import MessageState, OptOut, SigningCertificate, SmsConsent
from sms.phones import number_hash
from sms.services.dispatch import messages_dispatch
from tenants.models import Tenant, TenantStatus
from tenants.scoping import all_tenants, tenant_scope
from tests.support.hl7_feed import fixture, make_certificate, make_key, pem
from tests.test_hl7_ingest import appointments, msa, on_epic_day, post, set_up_feed, texts  # noqa: F401

pytestmark = pytest.mark.usefixtures("on_epic_day")

PATIENT = "+14155550123"  # PID-13 of the Epic fixtures
NEW = fixture("epic_siu_s12_v251.hl7")


@pytest.fixture
def feed(org_a):
    return set_up_feed(org_a)


def other_appointment(body: bytes, number: int) -> bytes:
    """The same message for another appointment (SCH-1/SCH-2) with its own control ID (MSH-10)."""
    return body.replace(b"4000123456", f"40001{number:05d}".encode()).replace(
        b"EPC0000100001", f"EPC00009{number:05d}".encode()
    )


def test_a_certificate_replaced_elsewhere_is_used_at_once_and_the_old_one_refused(client, feed):
    assert msa(post(client, feed, NEW)) == ("AA", "EPC0000100001")  # the setup is now kept

    new_key = make_key()
    new_certificate = make_certificate(new_key)
    with tenant_scope(feed.tenant):  # another process swaps the certificate: no signal here
        SigningCertificate.objects.filter(pk=feed.certificate.pk).update(
            pem=pem(new_certificate).decode(),
            thumbprint_sha256=new_certificate.fingerprint(hashes.SHA256()).hex().upper(),
        )

    second = other_appointment(NEW, 2)
    assert msa(post(client, feed, second, key=new_key))[0] == "AA"
    refused = post(client, feed, other_appointment(NEW, 3))  # signed with the replaced key
    assert refused.status_code == 401
    assert len(appointments(feed.tenant)) == 2


def test_an_incomplete_setup_is_read_again_for_every_message(client, feed):
    with tenant_scope(feed.tenant):
        SmsConsent.objects.filter(tenant=feed.tenant).update(patient_consent_confirmed_at=None)
    assert msa(post(client, feed, NEW))[0] == "AA"
    assert texts(feed.tenant) == []  # no consent: nothing scheduled, and nothing kept

    with tenant_scope(feed.tenant):  # the administrator ticks the box, in the portal's process
        SmsConsent.objects.filter(tenant=feed.tenant).update(patient_consent_confirmed_at=datetime.now(UTC))
    assert msa(post(client, feed, other_appointment(NEW, 2)))[0] == "AA"
    assert len(texts(feed.tenant)) == 3  # confirmation and two reminders, at once


def test_a_change_saved_in_this_process_reaches_the_next_message(client, feed):
    assert msa(post(client, feed, NEW))[0] == "AA"
    with all_tenants():
        tenant = Tenant.objects.get(pk=feed.tenant.pk)
    tenant.status = TenantStatus.SUSPENDED
    tenant.save()  # the signal forgets what was kept
    assert post(client, feed, other_appointment(NEW, 2)).status_code == 404


def test_a_query_set_update_reaches_the_next_message(client, feed):
    assert msa(post(client, feed, NEW))[0] == "AA"
    with all_tenants():  # no signal: the query set moves the setup token itself
        Tenant.objects.filter(pk=feed.tenant.pk).update(status=TenantStatus.SUSPENDED)
    assert post(client, feed, other_appointment(NEW, 2)).status_code == 404


def test_nothing_is_scheduled_for_a_number_that_opted_out(client, feed):
    with tenant_scope(feed.tenant):
        OptOut.objects.create(tenant=feed.tenant, number_hash=number_hash(PATIENT), number_last_four="0123")
    assert msa(post(client, feed, NEW))[0] == "AA"
    assert len(appointments(feed.tenant)) == 1
    assert texts(feed.tenant) == []


def test_a_number_that_opted_back_in_elsewhere_gets_its_texts_at_once(client, feed):
    with tenant_scope(feed.tenant):
        OptOut.objects.create(tenant=feed.tenant, number_hash=number_hash(PATIENT), number_last_four="0123")
    assert msa(post(client, feed, NEW))[0] == "AA"  # the opted-out set is now kept, with this number
    assert texts(feed.tenant) == []

    with tenant_scope(feed.tenant):  # START, handled by another process (it updates, no signal)
        OptOut.objects.filter(number_hash=number_hash(PATIENT)).update(active=False)
    assert msa(post(client, feed, other_appointment(NEW, 2)))[0] == "AA"
    assert len(texts(feed.tenant)) == 3


def test_a_number_that_opted_out_elsewhere_is_never_texted(client, feed, settings):
    settings.SMS_BACKEND = "sms.backends.locmem.LocmemSmsBackend"
    assert msa(post(client, feed, NEW))[0] == "AA"  # kept: nobody has opted out
    with tenant_scope(feed.tenant):  # STOP in another process, after this one read the opt-outs
        OptOut.objects.bulk_create(
            [OptOut(tenant=feed.tenant, number_hash=number_hash(PATIENT), number_last_four="0123")]
        )
    # bulk_create moved the setup token: the next message schedules nothing for it, and the
    # dispatcher checks opt-outs when it sends the texts scheduled before.
    assert msa(post(client, feed, other_appointment(NEW, 2)))[0] == "AA"
    assert len(texts(feed.tenant)) == 3
    messages_dispatch()
    assert locmem.outbox == []
    sent_or_due = [text for text in texts(feed.tenant) if text.state != MessageState.SCHEDULED]
    assert sent_or_due and all(text.state == MessageState.CANCELLED for text in sent_or_due)


def test_keeping_can_be_turned_off(client, feed, settings):
    settings.HL7_FEED_SETUP_CACHE_SECONDS = 0
    assert msa(post(client, feed, NEW))[0] == "AA"
    with all_tenants():
        Tenant.objects.filter(pk=feed.tenant.pk).update(status=TenantStatus.SUSPENDED)
    assert post(client, feed, other_appointment(NEW, 2)).status_code == 404


# --- webhook subscriptions are part of the kept setup ---------------------------------------------


def _webhook_queries(queries) -> list[str]:
    return [q["sql"] for q in queries if "webhooks_webhookendpoint" in q["sql"]]


def test_an_appointment_no_webhook_endpoint_wants_costs_no_webhook_query(client, feed):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    assert msa(post(client, feed, NEW))[0] == "AA"  # the setup (and its webhook event types) is now kept
    with CaptureQueriesContext(connection) as queries:
        assert msa(post(client, feed, other_appointment(NEW, 2)))[0] == "AA"

    assert len(appointments(feed.tenant)) == 2
    assert _webhook_queries(queries.captured_queries) == []


def test_an_endpoint_registered_after_the_setup_was_kept_hears_of_the_next_appointment(client, feed):
    from connector.webhooks.models import WebhookDelivery
    from connector.webhooks.services import webhook_endpoint_create

    assert msa(post(client, feed, NEW))[0] == "AA"  # kept: no endpoint wants visit.scheduled
    with tenant_scope(feed.tenant):
        webhook_endpoint_create(
            tenant=feed.tenant, url="https://hooks.example.org/in", event_types=["visit.scheduled"]
        )

    assert msa(post(client, feed, other_appointment(NEW, 2)))[0] == "AA"

    with tenant_scope(feed.tenant):
        [delivery] = WebhookDelivery.objects.all()
    assert delivery.event_type == "visit.scheduled"
    assert delivery.payload["data"]["appointment"]["external_id"] == "4000100002"


def test_an_endpoint_disabled_by_the_sender_costs_only_the_query_that_finds_no_receiver(client, feed):
    from connector.webhooks.models import WebhookDelivery, WebhookEndpoint
    from connector.webhooks.services import webhook_endpoint_create

    with tenant_scope(feed.tenant):
        endpoint, _ = webhook_endpoint_create(
            tenant=feed.tenant, url="https://hooks.example.org/in", event_types=["visit.scheduled"]
        )
    assert msa(post(client, feed, NEW))[0] == "AA"  # kept, with visit.scheduled wanted
    with tenant_scope(feed.tenant):
        # What the sender does after too many failures: a query-set update, no signal.
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(enabled=False)

    assert msa(post(client, feed, other_appointment(NEW, 2)))[0] == "AA"

    with tenant_scope(feed.tenant):
        assert [d.payload["data"]["appointment"]["external_id"] for d in WebhookDelivery.objects.all()] == [
            "4000123456"
        ]
