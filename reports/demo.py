"""A realistic month of made-up visit activity and texts for the demo organizations. No PHI.

Every ID is invented (appointments `DEMO-YYYYMMDD-NNN`, departments like
`CARD-VV-101`, clinicians `Practitioner/demo-dr-03`), numbers are the last
four digits only, and the same seed gives the same month. Running it again
adds only what is missing.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from django.utils.crypto import get_random_string

from connector.models import (
    EventKind,
    EventSource,
    ParticipantRole,
    Visit,
    VisitEvent,
    VisitState,
)
from connector.services.visit_feed import visit_feed_take
from reports.services import rollup_build
from reports.zones import local_today, zone, zones_for_tenant
from sms.models import Appointment, AppointmentStatus, MessageKind, MessageState, OutboundMessage, PhoneNumber
from sms.models.setup import NumberState
from tenants.models import Tenant
from tenants.scoping import all_tenants, tenant_scope

FACILITY = "DEMO"
DEPARTMENTS = {
    "America/New_York": ["CARD-VV-101", "PEDS-VV-205", "PSYCH-VV-310", "DERM-VV-120"],
    "Europe/Copenhagen": ["KBH-ORTO-01", "KBH-NEURO-02"],
}
FAILURES = [
    "30003: Unreachable destination handset",
    "30005: Unknown destination handset",
    "30007: Message filtered by the carrier",
]


@dataclass
class DemoActivityResult:
    visits: int = 0
    events: int = 0
    appointments: int = 0
    messages: int = 0
    per_tenant: dict[str, int] = field(default_factory=dict)


def _clinicians(count: int) -> list:
    """Organization users for the clinicians (no memberships: they only launch visits)."""
    users = []
    for n in range(1, count + 1):
        user, created = get_user_model().objects.get_or_create(
            username=f"demo-clinician-{n:02d}", defaults={"email": f"clinician{n:02d}@demo.invalid"}
        )
        if created:
            user.set_unusable_password()
            user.save(update_fields=["password"])
        users.append(user)
    return users


def _sending_number(tenant: Tenant) -> PhoneNumber:
    number = PhoneNumber.objects.filter(tenant=tenant).order_by("pk").first()
    if number is None:
        # A released, fictional (555-01xx) number, only so demo texts have a sender on record.
        number = PhoneNumber.objects.create(
            tenant=tenant,
            number=f"+1202555{100 + tenant.pk % 100:04d}",
            state=NumberState.RELEASED,
            provider="demo",
            toll_free=False,
        )
    return number


def _lobby_wait(rng: random.Random) -> int:
    # Mostly a few minutes, now and then a long wait.
    wait = rng.lognormvariate(5.1, 0.75)
    return int(min(wait, 3 * 3600))


def _day_plan(rng: random.Random, day: date, busy: int) -> int:
    weekend = day.weekday() >= 5
    return rng.randint(max(1, busy // 8), max(2, busy // 5)) if weekend else rng.randint(busy - 6, busy + 6)


def demo_activity_generate(
    *, days: int = 30, seed: int = 7, now: datetime | None = None
) -> DemoActivityResult:
    """Visits, visit events, appointments and texts for the last `days` local days, then their roll-ups."""
    from connector.demo import DEMO_TENANT_IDS, configure_demo_endpoints, demo_endpoint

    now = now or timezone.now()
    with all_tenants():
        tenants = list(Tenant.objects.filter(microsoft_tenant_id__in=DEMO_TENANT_IDS).order_by("name"))
    if not tenants:
        raise LookupError("No demo organizations: run `manage.py seed_demo` first.")
    if any(demo_endpoint(t) is None for t in tenants):
        configure_demo_endpoints()
    result = DemoActivityResult()
    clinicians = _clinicians(8)
    for index, tenant in enumerate(tenants):
        busy = 34 if index == 0 else 12
        rng = random.Random(f"{seed}:{tenant.microsoft_tenant_id}")  # noqa: S311 - demo data, not secrets
        with tenant_scope(tenant), transaction.atomic():
            zones = zones_for_tenant()
            # Only the demo's own endpoint: endpoints people add while trying the demo stay empty.
            endpoints = [demo_endpoint(tenant)]
            number = _sending_number(tenant)
            yesterday = local_today(zones, now) - timedelta(days=1)
            first = yesterday - timedelta(days=days - 1)
            made = _generate_tenant(rng, tenant, endpoints, number, clinicians, first, yesterday, busy, now)
            for name in ("visits", "events", "appointments", "messages"):
                setattr(result, name, getattr(result, name) + made[name])
            result.per_tenant[tenant.name] = made["visits"]
        # Stamped after the rows above exist, so the schedule does not take them for late data.
        rollup_build(tenant=tenant, first=first, last=yesterday, scheduled=True)
    return result


def _generate_tenant(rng, tenant, endpoints, number, clinicians, first, last, busy, now) -> dict[str, int]:
    made = {"visits": 0, "events": 0, "appointments": 0, "messages": 0}
    existing = set(
        Visit.objects.filter(appointment_id__startswith="DEMO-").values_list("endpoint_id", "appointment_id")
    )
    visits, plans = [], []
    day = first
    while day <= last:
        for endpoint in endpoints:
            tz = zone(endpoint.time_zone)
            departments = DEPARTMENTS.get(endpoint.time_zone) or ["VV-CLINIC-01", "VV-CLINIC-02"]
            for n in range(_day_plan(rng, day, busy)):
                plan = _visit_plan(rng, day, n, tz, departments, clinicians, now)
                if plan is None or (endpoint.pk, plan["appointment_id"]) in existing:
                    continue
                visits.append(
                    Visit(
                        tenant=tenant,
                        public_id=get_random_string(24),
                        endpoint=endpoint,
                        appointment_id=plan["appointment_id"],
                        department_id=plan["department"],
                        scheduled_start=plan["start"],
                        scheduled_end=plan["start"] + timedelta(minutes=30),
                        primary_clinician=plan["clinician"],
                        primary_clinician_ehr_id=plan["clinician_ehr_id"],
                        state=plan["state"],
                        started_at=plan["started_at"],
                        ended_at=plan["ended_at"],
                        lobby_wait_seconds=plan["lobby_wait"],
                        peak_attendees=plan["peak"],
                    )
                )
                plans.append(plan)
        day += timedelta(days=1)
    created = Visit.objects.bulk_create(visits, batch_size=500)
    events, appointments = [], []
    for visit, plan in zip(created, plans, strict=True):
        for i, (kind, role, who, at) in enumerate(plan["events"]):
            events.append(
                VisitEvent(
                    tenant=tenant,
                    visit=visit,
                    event_id=f"demo:{visit.public_id}:{i}",
                    kind=kind,
                    role=role,
                    participant_id=who,
                    occurred_at=at,
                    source=EventSource.DEMO,
                )
            )
        if plan["texts"]:
            appointments.append(
                Appointment(
                    tenant=tenant,
                    endpoint=visit.endpoint,
                    environment=visit.endpoint.environment,
                    sending_facility=FACILITY,
                    external_id=visit.appointment_id,
                    start=plan["start"],
                    end=plan["start"] + timedelta(minutes=30),
                    time_zone=visit.endpoint.time_zone,
                    department=plan["department"],
                    status=AppointmentStatus.NO_SHOW
                    if plan["state"] == VisitState.NO_SHOW
                    else AppointmentStatus.BOOKED,
                    phone="",
                    phone_last_four=f"{rng.randint(0, 9999):04d}",
                    phone_purged_at=min(plan["start"] + timedelta(days=1), now),
                    state_as_of=plan["start"] - timedelta(days=7),
                )
            )
    if events:
        # Feed positions for the API's event feed (connector/services/visit_feed.py).
        last = visit_feed_take(tenant_id=tenant.pk, count=len(events))
        for position, event in enumerate(events, start=last - len(events) + 1):
            event.seq = position
    VisitEvent.objects.bulk_create(events, batch_size=1000, ignore_conflicts=True)
    Appointment.objects.bulk_create(appointments, batch_size=500, ignore_conflicts=True)
    made["visits"], made["events"] = len(created), len(events)
    by_id = {
        a.external_id: a
        for a in Appointment.objects.filter(
            sending_facility=FACILITY, external_id__in=[a.external_id for a in appointments]
        )
    }
    messages = []
    for appointment in by_id.values():
        messages += _texts_for(rng, tenant, number, appointment, now)
    messages += _inbound_replies(rng, tenant, number, made, appointments, now)
    OutboundMessage.objects.bulk_create(messages, batch_size=1000, ignore_conflicts=True)
    made["appointments"], made["messages"] = len(appointments), len(messages)
    return made


def _visit_plan(rng, day, n, tz, departments, clinicians, now) -> dict | None:
    # Office hours, with an evening clinic now and then (some of its visits end after midnight).
    if rng.random() < 0.06:
        start_time = time(22, rng.choice([0, 15, 30, 45]))
    else:
        start_time = time(rng.randint(8, 17), rng.choice([0, 15, 30, 45]))
    start = datetime.combine(day, start_time, tzinfo=tz)
    if start + timedelta(hours=3) > now:
        return None
    doctor = rng.randrange(len(clinicians))
    plan = {
        "appointment_id": f"DEMO-{day:%Y%m%d}-{n:03d}",
        "department": rng.choice(departments),
        "start": start,
        "clinician": clinicians[doctor] if rng.random() < 0.85 else None,
        "clinician_ehr_id": f"Practitioner/demo-dr-{doctor + 1:02d}",
        "texts": rng.random() < 0.7,
        "events": [],
    }
    patient, clinician = f"patient-{day:%m%d}{n:03d}", f"clinician-{doctor + 1:02d}"
    if rng.random() < 0.09:  # no-show: sometimes the patient checked the device, never the clinician met them
        plan |= {
            "state": VisitState.NO_SHOW,
            "started_at": None,
            "ended_at": None,
            "lobby_wait": None,
            "peak": 0,
        }
        return plan
    entered = start - timedelta(seconds=rng.randint(0, 420))
    wait = _lobby_wait(rng)
    admitted = entered + timedelta(seconds=wait)
    started = admitted + timedelta(seconds=rng.randint(2, 20))
    duration = int(max(240, min(rng.gauss(17 * 60, 7 * 60), 75 * 60)))
    ended = started + timedelta(seconds=duration)
    peak = 3 if rng.random() < 0.12 else 2
    events = [
        (EventKind.LOBBY_ENTERED, ParticipantRole.PATIENT, patient, entered),
        (EventKind.JOINED, ParticipantRole.CLINICIAN, clinician, admitted - timedelta(seconds=5)),
        (EventKind.ADMITTED, ParticipantRole.PATIENT, patient, admitted),
        (EventKind.JOINED, ParticipantRole.PATIENT, patient, started),
    ]
    if peak == 3:
        events.append(
            (
                EventKind.JOINED,
                ParticipantRole.GUEST,
                f"guest-{day:%m%d}{n:03d}",
                started + timedelta(minutes=2),
            )
        )
        events.append(
            (EventKind.LEFT, ParticipantRole.GUEST, f"guest-{day:%m%d}{n:03d}", ended - timedelta(minutes=1))
        )
    events += [
        (EventKind.LEFT, ParticipantRole.PATIENT, patient, ended - timedelta(seconds=3)),
        (EventKind.LEFT, ParticipantRole.CLINICIAN, clinician, ended),
    ]
    plan |= {
        "state": VisitState.COMPLETED,
        "started_at": started,
        "ended_at": ended,
        "lobby_wait": wait,
        "peak": peak,
        "events": events,
    }
    return plan


def _message(tenant, number, kind, key, send_at, rng, appointment=None, last_four="") -> OutboundMessage:
    roll = rng.random()
    state = (
        MessageState.DELIVERED if roll < 0.9 else MessageState.SENT if roll < 0.95 else MessageState.FAILED
    )
    sent_at = send_at + timedelta(seconds=rng.randint(1, 40))
    last_four = last_four or (appointment.phone_last_four if appointment else f"{rng.randint(0, 9999):04d}")
    return OutboundMessage(
        tenant=tenant,
        appointment=appointment,
        phone_number=number,
        kind=kind,
        to="",
        to_last_four=last_four,
        to_hash=hashlib.sha256(f"demo:{key}".encode()).hexdigest(),
        body="",
        send_at=send_at,
        state=state,
        attempts=1,
        provider="demo",
        provider_message_id=f"demo-{hashlib.md5(key.encode(), usedforsecurity=False).hexdigest()[:16]}",
        error=rng.choice(FAILURES) if state == MessageState.FAILED else "",
        dedupe_key=key,
        sent_at=sent_at if state != MessageState.FAILED else None,
        delivered_at=sent_at + timedelta(seconds=rng.randint(1, 30))
        if state == MessageState.DELIVERED
        else None,
    )


def _texts_for(rng, tenant, number, appointment, now) -> list[OutboundMessage]:
    start = appointment.start
    plan = [
        (MessageKind.CONFIRMATION, start - timedelta(days=rng.randint(2, 10), hours=rng.randint(0, 8))),
        (MessageKind.REMINDER, start - timedelta(hours=24)),
        (MessageKind.REMINDER, start - timedelta(hours=1)),
    ]
    return [
        _message(tenant, number, kind, f"demo:{appointment.external_id}:{kind}:{i}", when, rng, appointment)
        for i, (kind, when) in enumerate(plan)
        if when < now
    ]


def _inbound_replies(rng, tenant, number, made, appointments, now) -> list[OutboundMessage]:
    """Answers to HELP and STOP, which belong to no appointment."""
    replies = []
    for i, appointment in enumerate(appointments):
        if rng.random() < 0.03:
            kind = rng.choice([MessageKind.HELP, MessageKind.OPT_OUT])
            when = appointment.start - timedelta(hours=rng.randint(2, 20))
            if when < now:
                key = f"demo:reply:{appointment.external_id}:{i}"
                replies.append(
                    _message(tenant, number, kind, key, when, rng, last_four=appointment.phone_last_four)
                )
    return replies


def demo_activity_exists() -> bool:
    """Whether the demo organizations already have generated activity (a restart adds none)."""
    from connector.demo import DEMO_TENANT_IDS

    with all_tenants():
        return Visit.objects.filter(
            tenant__microsoft_tenant_id__in=DEMO_TENANT_IDS, appointment_id__startswith="DEMO-"
        ).exists()


def demo_activity_remove() -> int:
    """Delete what `demo_activity_generate` made (demo organizations only)."""
    from connector.demo import DEMO_TENANT_IDS

    removed = 0
    with all_tenants():
        tenants = list(Tenant.objects.filter(microsoft_tenant_id__in=DEMO_TENANT_IDS))
    for tenant in tenants:
        with tenant_scope(tenant), transaction.atomic():
            removed += OutboundMessage.objects.filter(dedupe_key__startswith="demo:").delete()[0]
            removed += Appointment.objects.filter(
                sending_facility=FACILITY, external_id__startswith="DEMO-"
            ).delete()[0]
            removed += Visit.objects.filter(appointment_id__startswith="DEMO-").delete()[0]
    return removed
