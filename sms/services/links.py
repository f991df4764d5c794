"""Short join links for texts: /j/<code>, so a confirmation fits one SMS segment.

The visit's patient link (`/join/<signed token>/`) is about 150 characters: with it
every text took two segments. A text carries instead `/j/` and a code of 128 random
bits (22 URL-safe characters, all in the GSM-7 alphabet), stored on the appointment;
opening it makes the signed link then and redirects there, so the visit, its expiry
(two hours after the scheduled end) and the join pages are the same as before.

The code names the appointment, not a person: it is as secret as the signed link it
stands for, is unguessable, and stops working with the appointment (cancelled,
deleted, or its number purged after the visit).
"""

from __future__ import annotations

import re
import secrets

from django.conf import settings
from django.db import IntegrityError, transaction

from sms.models import Appointment, AppointmentStatus

CODE_BYTES = 16  # 128 bits
CODE_PATTERN = re.compile(r"^[A-Za-z0-9_-]{22}$")
SHORT_PATH = "/j/"


class ShortLinkInvalid(Exception):
    """The code names no usable appointment; `message` is shown to the patient."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def appointment_join_code(appointment: Appointment) -> str:
    """The appointment's short-link code, made (once, even under concurrent dispatchers) on first use."""
    if appointment.join_code:
        return appointment.join_code
    for _attempt in range(3):
        code = secrets.token_urlsafe(CODE_BYTES)
        try:
            with transaction.atomic():
                made = Appointment.objects.filter(pk=appointment.pk, join_code__isnull=True).update(join_code=code)
        except IntegrityError:  # the same 128 bits twice: never in practice, but not an error
            continue
        if not made:  # another dispatcher made it first
            code = Appointment.objects.filter(pk=appointment.pk).values_list("join_code", flat=True).get()
        appointment.join_code = code
        return code
    raise RuntimeError("no free short-link code")


def short_join_link(appointment: Appointment) -> str:
    return f"{settings.PUBLIC_BASE_URL}{SHORT_PATH}{appointment_join_code(appointment)}"


def patient_join_path(appointment: Appointment) -> str:
    """The visit's signed patient link (path only) for this appointment: what the short link stands for."""
    from connector.services.visits import join_token_make, participant_id_for, visit_get_or_create

    visit = visit_get_or_create(
        endpoint=appointment.endpoint,
        appointment_id=appointment.external_id,
        scheduled_start=appointment.start,
        scheduled_end=appointment.end,
    )
    token = join_token_make(
        visit=visit,
        role="patient",
        participant_id=participant_id_for("patient", f"appointment:{appointment.pk}"),
    )
    return f"/join/{token}/"


def short_link_resolve(code: str) -> str:
    """The signed join path the code stands for, or ShortLinkInvalid. Call with every tenant visible."""
    if not CODE_PATTERN.match(code):
        raise ShortLinkInvalid("This link is not complete: open it from the text message again.")
    appointment = Appointment.objects.select_related("endpoint__tenant").filter(join_code=code).first()
    if appointment is None or appointment.phone_purged_at is not None:
        raise ShortLinkInvalid("This link is not valid (any more). Use the link in your newest text message.")
    if appointment.status != AppointmentStatus.BOOKED:
        raise ShortLinkInvalid("This video visit is no longer scheduled. Contact your care team.")
    appointment.tenant = appointment.endpoint.tenant
    return patient_join_path(appointment)
