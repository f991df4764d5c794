"""The clinician's guest invite, sent by text through the SMS machinery."""

from __future__ import annotations

import pytest

from connector.models import GuestInvite
from connector.services.participants import guest_invite_create
from sms.backends import locmem
from sms.models import OptOut, OutboundMessage, SmsConsent
from sms.phones import number_hash
from sms.services.dispatch import messages_dispatch
from tenants.scoping import tenant_scope
from tests.support.sms import sms_ready_endpoint
from tests.test_visit_pages import console_path, make_visit

pytestmark = pytest.mark.django_db


@pytest.fixture
def sms_visit(org_a, settings):
    settings.SMS_BACKEND = "sms.backends.locmem.LocmemSmsBackend"
    settings.SMS_RATE_PER_NUMBER = 1000
    sms_ready_endpoint(org_a)
    visit = make_visit(org_a)
    with tenant_scope(org_a):
        invite = guest_invite_create(visit=visit, kind=GuestInvite.Kind.INTERPRETER)
    return visit, invite


def text_invite(client, visit, invite, phone):
    return client.post(
        console_path(visit, "visits:console-invite-text"),
        {"participant_id": invite.participant_id, "phone": phone},
    )


def test_a_guest_link_is_texted_through_the_dispatcher(client, sms_visit):
    visit, invite = sms_visit
    response = text_invite(client, visit, invite, "(415) 555-0177")
    assert response.status_code == 200
    assert b"being texted to \xe2\x80\xa60177" in response.content
    messages_dispatch()
    [text] = locmem.outbox
    assert text.to_number == "+14155550177"
    assert "/join/" in text.body and "Org A Health" in text.body


def test_a_bad_number_gets_a_clear_error(client, sms_visit):
    visit, invite = sms_visit
    response = text_invite(client, visit, invite, "12")
    assert response.status_code == 400
    assert b"not a phone number" in response.content


def test_no_text_without_the_sms_setup(client, sms_visit):
    visit, invite = sms_visit
    with tenant_scope(visit.tenant):
        SmsConsent.objects.update(on_behalf_confirmed_at=None)
    response = text_invite(client, visit, invite, "+14155550177")
    assert response.status_code == 400
    assert b"Copy the link instead" in response.content
    with tenant_scope(visit.tenant):
        assert not OutboundMessage.objects.exists()


def test_an_opted_out_number_is_never_texted(client, sms_visit):
    visit, invite = sms_visit
    with tenant_scope(visit.tenant):
        OptOut.objects.create(
            tenant=visit.tenant, number_hash=number_hash("+14155550177"), number_last_four="0177"
        )
    assert text_invite(client, visit, invite, "+14155550177").status_code == 400


def test_a_revoked_link_is_not_texted(client, sms_visit):
    visit, invite = sms_visit
    client.post(console_path(visit, "visits:console-revoke"), {"participant_id": invite.participant_id})
    assert text_invite(client, visit, invite, "+14155550177").status_code == 400
