"""Texts patients send back (STOP, START, HELP) and providers' delivery reports."""

from __future__ import annotations

import logging
import re

from django.db import IntegrityError, transaction
from django.utils import timezone

from sms.backends.base import DeliveryReport, InboundText
from sms.models import (
    MessageKind,
    MessageState,
    OptOut,
    OutboundMessage,
    PendingDeliveryReport,
    PhoneNumber,
    SmsSettings,
)
from sms.phones import InvalidPhoneNumber, last_four, number_hash, number_hashes, phone_hash_key_id, to_e164
from sms.services.rehash import opt_out_move_to_current_key
from sms.texts import render, template_for
from tenants.scoping import all_tenants, tenant_scope

logger = logging.getLogger(__name__)

# The industry's opt-out, opt-in and help keywords (CTIA; what Twilio and Azure Communication
# Services also act on), matched in any case, with surrounding spaces and trailing punctuation.
STOP_WORDS = {"STOP", "STOPALL", "QUIT", "END", "REVOKE", "OPT OUT", "OPTOUT", "CANCEL", "UNSUBSCRIBE"}
START_WORDS = {"START", "UNSTOP"}
HELP_WORDS = {"HELP", "INFO"}
_KEYWORDS = STOP_WORDS | START_WORDS | HELP_WORDS


def keyword_of(body: str) -> str:
    """The keyword a patient's text starts with ("OPT OUT" for "opt-out", " Opt  out! "), or "".

    The first word decides ("stop please" opts out); "OPT OUT" is the one keyword of
    two words, also written "opt-out" or "optout".
    """
    words = re.sub(r"[^\w\s-]", " ", body).upper().replace("-", " ").split()
    if len(words) >= 2 and " ".join(words[:2]) in _KEYWORDS:
        return " ".join(words[:2])
    return words[0] if words and words[0] in _KEYWORDS else ""


def _answer(number: PhoneNumber, to: str, kind: str, reference: str) -> OutboundMessage | None:
    """Queue the one answer to a keyword (pre-rendered, sent by the dispatcher)."""
    settings_row = SmsSettings.objects.filter(phone_number=number).first()
    templates = settings_row.templates if settings_row else {}
    language = settings_row.default_language if settings_row else "en"
    body = render(
        template_for(templates, language, kind),
        organization=number.tenant.name,
        contact=(settings_row.contact if settings_row else "") or "your care team",
    )
    try:
        with transaction.atomic():
            return OutboundMessage.objects.create(
                tenant=number.tenant,
                phone_number=number,
                kind=kind,
                to=to,
                to_last_four=last_four(to),
                to_hash=number_hash(to),
                body=body,
                dedupe_key=f"{kind}:{reference}",
            )
    except IntegrityError:
        return None  # the provider delivered the same inbound text twice


def inbound_handle(text: InboundText) -> str:
    """Apply a keyword for the organization that owns the receiving number. Returns what was done."""
    try:
        sender = to_e164(text.from_number)
        receiver = to_e164(text.to_number)
    except InvalidPhoneNumber:
        return "ignored: unusable number"
    with all_tenants():
        number = PhoneNumber.objects.select_related("tenant").filter(number=receiver).first()
    if number is None:
        logger.info("inbound text to a number that is not ours")
        return "ignored: unknown receiving number"
    keyword = keyword_of(text.body)
    hashes = number_hashes(sender)  # every PHONE_HASH_KEY: an opt-out made under a rotated key counts
    hashed = hashes[0]
    with tenant_scope(number.tenant):
        if keyword in STOP_WORDS:
            with transaction.atomic():
                opt_out_move_to_current_key(number.tenant, hashes)
                opt_out, created = OptOut.objects.get_or_create(
                    tenant=number.tenant,
                    number_hash=hashed,
                    defaults={"number_last_four": last_four(sender), "hash_key_id": phone_hash_key_id()},
                )
                if not created and not opt_out.active:
                    opt_out.active = True
                    opt_out.opted_out_at = timezone.now()
                    opt_out.opted_in_at = None
                    opt_out.save()
                # Not the answer to an earlier STOP still waiting to go (the provider repeats callbacks).
                OutboundMessage.objects.filter(to_hash__in=hashes, state=MessageState.SCHEDULED).exclude(
                    kind=MessageKind.OPT_OUT
                ).update(
                    state=MessageState.CANCELLED, error="The number opted out (STOP)."
                )
                _answer(number, sender, MessageKind.OPT_OUT, text.provider_message_id)
            return "opted out"
        if keyword in START_WORDS:
            updated = OptOut.objects.filter(number_hash__in=hashes, active=True).update(
                active=False, opted_in_at=timezone.now()
            )
            if updated:
                _answer(number, sender, MessageKind.OPT_IN, text.provider_message_id)
            return "opted in" if updated else "ignored: was not opted out"
        if keyword in HELP_WORDS:
            _answer(number, sender, MessageKind.HELP, text.provider_message_id)
            return "help sent"
    logger.info("inbound text without a keyword ignored")
    return "ignored: no keyword"


_FINAL = {MessageState.DELIVERED, MessageState.FAILED}


def _report_apply(message_pk: int, state: str, report) -> None:
    if report.status == "delivered":
        with transaction.atomic():
            OutboundMessage.objects.filter(pk=message_pk).update(
                state=MessageState.DELIVERED, delivered_at=report.occurred_at or timezone.now()
            )
            if state != MessageState.DELIVERED:
                _emit_text_outcome(message_pk, delivered=True, at=report.occurred_at)
    elif report.status == "failed" and state != MessageState.DELIVERED:
        with transaction.atomic():
            OutboundMessage.objects.filter(pk=message_pk).update(
                state=MessageState.FAILED, error=f"Not delivered: {report.error}"[:1000]
            )
            if state != MessageState.FAILED:
                _emit_text_outcome(message_pk, delivered=False, at=report.occurred_at)
    elif report.status == "sent" and state not in _FINAL:
        OutboundMessage.objects.filter(pk=message_pk).update(state=MessageState.SENT)


def _emit_text_outcome(message_pk: int, *, delivered: bool, at) -> None:
    """The text.delivered / text.failed webhook, committed with the state change (deduplicated per text)."""
    from connector.webhooks.events import emit_text_outcome

    message = (
        OutboundMessage.objects.select_related("tenant")
        .only("pk", "kind", "appointment_id", "tenant")
        .get(pk=message_pk)
    )
    emit_text_outcome(
        tenant=message.tenant,
        message_pk=message.pk,
        kind=message.kind,
        appointment_id=message.appointment_id,
        delivered=delivered,
        at=at,
    )


def _message_for(provider_message_id: str) -> tuple[int, str] | None:
    return (
        OutboundMessage.objects.filter(provider_message_id=provider_message_id).values_list("pk", "state").first()
    )


def delivery_report_apply(report: DeliveryReport) -> bool:
    """Update the message a provider's report is about. A late 'sent' never undoes 'delivered'.

    A report may arrive before the dispatcher has recorded the provider's ID
    (send and record are two steps with no transaction across the call). Such
    a report is kept as a PendingDeliveryReport first and the lookup is made
    again: either this lookup sees the record, or the record (committed after
    our insert) sees the pending report (`pending_reports_apply`). Applying a
    report twice changes nothing. Returns whether the text is known yet.
    """
    with all_tenants():
        found = _message_for(report.provider_message_id)
        if found is not None:
            _report_apply(found[0], found[1], report)
            return True
        pending = PendingDeliveryReport.objects.create(
            provider_message_id=report.provider_message_id[:200],
            status=report.status,
            error=report.error[:1000],
            occurred_at=report.occurred_at,
        )
        found = _message_for(report.provider_message_id)
        if found is None:
            return False  # applied when the send is recorded, or dropped after a day
        _report_apply(found[0], found[1], report)
        pending.delete()
    return True


def pending_reports_apply(*, provider_message_id: str) -> int:
    """Apply the reports that came before the text was recorded (oldest first); returns how many."""
    with all_tenants():
        pending = list(
            PendingDeliveryReport.objects.filter(provider_message_id=provider_message_id).order_by("occurred_at", "pk")
        )
        for report in pending:
            found = _message_for(provider_message_id)
            if found is not None:
                _report_apply(found[0], found[1], report)
                report.delete()
    return len(pending)
