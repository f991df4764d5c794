"""Guest invites sent by text: the clinician's guest link, through the same sending machinery."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from connector.background import queue_after_commit
from connector.models import GuestInvite
from sms.models import OutboundMessage, SmsSettings
from sms.phones import InvalidPhoneNumber, last_four, number_hash, number_hashes, patient_region, to_e164
from sms.selectors import number_is_opted_out, sending_blocker
from sms.texts import render, template_for


def guest_invite_text(*, invite: GuestInvite, phone: str, link: str) -> OutboundMessage:
    """Queue the invite's link by text to `phone`. Refuses when SMS is not set up or the number opted out."""
    visit = invite.visit
    if invite.revoked_at is not None:
        raise ValidationError("This guest link was revoked; create a new one.")
    settings_row = SmsSettings.objects.filter(endpoint=visit.endpoint).select_related("phone_number").first()
    region = patient_region(settings_row)
    try:
        number = to_e164(phone, default_region=region)
    except InvalidPhoneNumber as error:
        hint = "include the area code" if region else "include the country code, e.g. +1 415 555 0100"
        raise ValidationError({"phone": f"That is not a phone number; {hint}."}) from error
    blocker = sending_blocker(visit.tenant, settings_row)
    if blocker:
        raise ValidationError(f"Texts cannot be sent for this visit: {blocker} Copy the link instead.")
    hashed = number_hash(number)
    if number_is_opted_out(visit.tenant, number_hashes(number)):  # every PHONE_HASH_KEY
        raise ValidationError(
            "This number has opted out of texts from your organization. Copy the link instead."
        )
    body = render(
        template_for(settings_row.templates, settings_row.default_language, "guest_invite"),
        organization=visit.tenant.name,
        link=link,
    )
    try:
        with transaction.atomic():
            message = OutboundMessage.objects.create(
                tenant=visit.tenant,
                phone_number=settings_row.phone_number,
                kind="guest_invite",
                to=number,
                to_last_four=last_four(number),
                to_hash=hashed,
                body=body,
                dedupe_key=f"guest_invite:{invite.participant_id}:{hashed}",
            )
    except IntegrityError as error:
        raise ValidationError("This link was already sent to that number.") from error
    queue_after_commit("sms.tasks.messages_dispatch")
    return message
