"""Opt-outs survive key rotation: the number hash has its own rotatable key, PHONE_HASH_KEY."""

from __future__ import annotations

import io

import pytest
import time_machine
from django.core.management import call_command

from connector.checks import check_phone_hash_key
from sms.backends import locmem
from sms.backends.base import InboundText
from sms.models import OptOut, OutboundMessage
from sms.phones import number_hash, number_hashes, phone_hash_key_id
from sms.selectors import number_is_opted_out
from sms.services.dispatch import messages_dispatch
from sms.services.inbound import inbound_handle
from tenants.scoping import tenant_scope
from tests.support.sms import at, siu, sms_ready_endpoint
from tests.test_sms_sending import NY, apply

pytestmark = pytest.mark.django_db

PATIENT = "+14155550123"  # the number tests.support.sms's SIU messages carry
OUR_NUMBER = "+18335550142"
KEY_1 = "first-phone-hash-key-0123456789abcdefghij"
KEY_2 = "second-phone-hash-key-0123456789abcdefghi"


@pytest.fixture(autouse=True)
def _locmem_sms(settings):
    settings.SMS_BACKEND = "sms.backends.locmem.LocmemSmsBackend"
    settings.SMS_RATE_PER_NUMBER = 1000
    locmem.reset()


def text_in(body: str, message_id: str) -> str:
    return inbound_handle(
        InboundText(from_number=PATIENT, to_number=OUR_NUMBER, body=body, provider_message_id=message_id)
    )


def opted_out(tenant) -> bool:
    with tenant_scope(tenant):
        return number_is_opted_out(tenant, number_hashes(PATIENT))


def test_rotating_the_secret_key_forgets_no_opt_out(org_a, settings):
    settings.PHONE_HASH_KEY = [KEY_1]
    sms_ready_endpoint(org_a)
    assert text_in("STOP", "in-1") == "opted out"
    settings.SECRET_KEY = "a-brand-new-secret-key-" + "x" * 40
    assert opted_out(org_a)


def test_an_opt_out_under_the_old_key_is_found_after_a_rotation_and_blocks_sending(org_a, settings):
    settings.PHONE_HASH_KEY = [KEY_1]
    endpoint = sms_ready_endpoint(org_a)
    assert text_in("STOP", "in-1") == "opted out"
    settings.PHONE_HASH_KEY = [KEY_2, KEY_1]  # rotated: new key first, old one kept
    assert opted_out(org_a)
    with time_machine.travel(at("2026-12-01 10:00", NY), tick=False):
        assert apply(endpoint, siu(start=at("2026-12-03 14:00", NY))).scheduled == []
        messages_dispatch()
    assert [t for t in locmem.outbox if "no more texts" not in t.body] == []


def test_a_text_hashed_under_the_old_key_is_not_sent_after_a_stop_under_the_new_one(org_a, settings):
    settings.PHONE_HASH_KEY = [KEY_1]
    endpoint = sms_ready_endpoint(org_a)
    with time_machine.travel(at("2026-12-01 10:00", NY), tick=False):
        apply(endpoint, siu(start=at("2026-12-03 14:00", NY)))  # texts keyed by KEY_1
        settings.PHONE_HASH_KEY = [KEY_2, KEY_1]
        assert text_in("STOP", "in-1") == "opted out"  # cancels the KEY_1 texts too
        with tenant_scope(org_a):
            assert not OutboundMessage.objects.filter(kind="reminder", state="scheduled").exists()


def test_stop_and_start_move_an_old_key_opt_out_to_the_current_key(org_a, settings):
    settings.PHONE_HASH_KEY = [KEY_1]
    sms_ready_endpoint(org_a)
    text_in("STOP", "in-1")
    settings.PHONE_HASH_KEY = [KEY_2, KEY_1]
    text_in("STOP", "in-2")
    with tenant_scope(org_a):
        [row] = OptOut.objects.all()
    assert row.number_hash == number_hash(PATIENT) and row.hash_key_id == phone_hash_key_id()
    assert text_in("START", "in-3") == "opted in"
    assert not opted_out(org_a)


def test_without_the_setting_the_secret_key_keys_it_and_listing_it_second_keeps_opt_outs(org_a, settings):
    settings.PHONE_HASH_KEY = []  # an installation from before the setting
    sms_ready_endpoint(org_a)
    text_in("STOP", "in-1")
    settings.PHONE_HASH_KEY = [KEY_1, settings.SECRET_KEY]  # the documented upgrade
    assert opted_out(org_a)


def test_the_rehash_command_moves_what_it_can_and_says_what_is_left(org_a, settings):
    settings.PHONE_HASH_KEY = [KEY_1]
    endpoint = sms_ready_endpoint(org_a)
    with time_machine.travel(at("2026-12-01 10:00", NY), tick=False):
        apply(endpoint, siu(start=at("2026-12-03 14:00", NY)))  # the connector holds PATIENT's number
    text_in("STOP", "in-1")
    with tenant_scope(org_a):  # an opt-out whose number the connector no longer holds
        OptOut.objects.create(
            tenant=org_a, number_hash=number_hash("+14155550999"), number_last_four="0999",
            hash_key_id=phone_hash_key_id(),
        )
    settings.PHONE_HASH_KEY = [KEY_2, KEY_1]

    out = io.StringIO()
    call_command("rehash_phone_numbers", stdout=out)
    report = out.getvalue()
    assert "opt-outs: 1 re-hashed" in report
    assert "1 opt-out(s) may still be under an older key" in report
    with tenant_scope(org_a):
        assert not OutboundMessage.objects.exclude(to="").exclude(to_hash=number_hash(PATIENT)).exists()

    settings.PHONE_HASH_KEY = [KEY_2]  # the moved opt-out no longer needs the old key
    assert opted_out(org_a)
    out = io.StringIO()
    call_command("rehash_phone_numbers", stdout=out)
    assert "opt-outs: 0 re-hashed" in out.getvalue()


def test_the_system_check_requires_a_long_enough_key(settings):
    settings.PHONE_HASH_KEY = []
    assert [e.id for e in check_phone_hash_key(None)] == ["connector.E006"]
    settings.PHONE_HASH_KEY = ["short"]
    assert [e.id for e in check_phone_hash_key(None)] == ["connector.E007"]
    settings.PHONE_HASH_KEY = [KEY_1]
    assert check_phone_hash_key(None) == []
