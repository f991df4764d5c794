"""The organization's cap on texts per patient number (the healthcare exemption: one a day, three a week).

A text that would pass the cap is held back (state "held", with the reason in
its error, shown in the SMS report), not delayed: a reminder sent days late
helps nobody. Answers to STOP, START and HELP and guest invites are never counted nor held.
"""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from sms.models import MessageKind, MessageState, OutboundMessage, SmsConsent

# Answers to keywords, and guest invites a clinician sends on purpose during a visit.
EXEMPT_KINDS = (MessageKind.OPT_OUT, MessageKind.OPT_IN, MessageKind.HELP, MessageKind.GUEST_INVITE)
DAY, WEEK = timedelta(days=1), timedelta(days=7)


def _texts_to_number_since(message: OutboundMessage, since) -> int:
    """Texts to the same number counted against the cap: sent since `since`, or being sent before this one.

    A text another dispatcher is sending counts only when it was claimed for an
    earlier row (lower primary key), so two texts claimed at once never hold
    each other back: the first goes, the second is held.
    """
    return (
        OutboundMessage.objects.filter(tenant=message.tenant, to_hash=message.to_hash)
        .exclude(pk=message.pk)
        .exclude(kind__in=EXEMPT_KINDS)
        .filter(
            Q(state__in=[MessageState.SENT, MessageState.DELIVERED], sent_at__gte=since)
            | Q(state=MessageState.SENDING, pk__lt=message.pk)
            | Q(state=MessageState.UNKNOWN, lease_until__gte=since)
        )
        .count()
    )


def patient_cap_reason(message: OutboundMessage) -> str:
    """Why this text must be held back under its organization's cap, or "" when it may go."""
    consent = SmsConsent.objects.filter(tenant=message.tenant).first()
    per_day = consent.texts_per_day if consent else 1
    per_week = consent.texts_per_week if consent else 3
    now = timezone.now()
    if per_day:
        sent = _texts_to_number_since(message, now - DAY)
        if sent >= per_day:
            return (
                f"Held back: this number already got {sent} text(s) in the last 24 hours; the organization's "
                f"limit is {per_day} a day (SMS consent settings)."
            )
    if per_week:
        sent = _texts_to_number_since(message, now - WEEK)
        if sent >= per_week:
            return (
                f"Held back: this number already got {sent} text(s) in the last 7 days; the organization's "
                f"limit is {per_week} a week (SMS consent settings)."
            )
    return ""
