"""Patients' keywords: every opt-out word, START/UNSTOP, HELP/INFO, in any case and spacing."""

from __future__ import annotations

import pytest

from sms.backends.base import InboundText
from sms.models import MessageKind, OptOut, OutboundMessage
from sms.services.inbound import inbound_handle, keyword_of
from tenants.scoping import tenant_scope
from tests.support.sms import sms_ready_endpoint

pytestmark = pytest.mark.django_db

PATIENT, OURS = "+14155550123", "+18335550142"


@pytest.mark.parametrize(
    "body",
    ["STOP", "stop", " Stop ", "STOPALL", "quit", "END", "Revoke", "OPT OUT", "opt out", "Opt-Out", "optout",
     "  opt   out  ", "CANCEL", "unsubscribe", "Stop.", "STOP!", "stop please"],
)
def test_every_opt_out_word_opts_out(org_a, body):
    sms_ready_endpoint(org_a)

    assert inbound_handle(InboundText(PATIENT, OURS, body, f"in-{body}")) == "opted out"

    with tenant_scope(org_a):
        assert OptOut.objects.get().active
        assert OutboundMessage.objects.get().kind == MessageKind.OPT_OUT


@pytest.mark.parametrize("body", ["START", "start", " Unstop "])
def test_start_and_unstop_opt_back_in(org_a, body):
    sms_ready_endpoint(org_a)
    inbound_handle(InboundText(PATIENT, OURS, "STOP", "in-1"))

    assert inbound_handle(InboundText(PATIENT, OURS, body, "in-2")) == "opted in"

    with tenant_scope(org_a):
        assert not OptOut.objects.get().active


@pytest.mark.parametrize("body", ["HELP", "help", " Info ", "INFO?"])
def test_help_and_info_are_answered(org_a, body):
    sms_ready_endpoint(org_a)

    assert inbound_handle(InboundText(PATIENT, OURS, body, "in-1")) == "help sent"

    with tenant_scope(org_a):
        assert OutboundMessage.objects.get().kind == MessageKind.HELP


@pytest.mark.parametrize("body", ["", "   ", "Thanks!", "stopwatch", "opt", "out", "I cannot make it"])
def test_other_texts_are_not_keywords(body):
    assert keyword_of(body) == ""
