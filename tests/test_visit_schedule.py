"""What a visit does with its schedule: department time zone, join link lifetime, no-shows, keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.utils import timezone

from connector.models import AppointmentSource, Visit, VisitKey, VisitState
from connector.services.appointment_finder import (
    LaunchFacts,
    launch_facts,
    schedule_from_appointment,
    schedule_from_encounter,
)
from connector.services.visits import (
    JoinLinkError,
    join_token_make,
    join_token_read,
    visit_get_or_create,
    visits_mark_no_show,
)
from connector.tasks import visits_mark_no_show as visits_mark_no_show_task
from connector.visits.pages.common import scheduled_display
from sms.services.appointments import appointment_apply
from tenants.scoping import all_tenants, tenant_scope
from tests.support.sms import siu, sms_ready_endpoint

pytestmark = pytest.mark.django_db

START = datetime(2030, 1, 15, 10, 0, tzinfo=UTC)
END = START + timedelta(minutes=30)


def a_visit(endpoint, appointment_id="appt-1", **fields) -> Visit:
    with tenant_scope(endpoint.tenant):
        return visit_get_or_create(endpoint=endpoint, appointment_id=appointment_id, **fields)


def test_the_schedule_keeps_times_and_identifiers_only():
    appointment = {
        "resourceType": "Appointment",
        "id": "a1",
        "status": "booked",
        "description": "Knee pain follow-up",  # clinical: never kept
        "start": "2030-01-15T10:00:00Z",
        "end": "2030-01-15T10:30:00+00:00",
        "participant": [
            {"actor": {"reference": "Patient/p1", "display": "Adam Everyman"}},
            {"actor": {"reference": "Practitioner/dr1"}},
            {"actor": {"reference": "https://ehr.example.org/fhir/Location/loc-9"}},
        ],
    }
    schedule = schedule_from_appointment(appointment)
    assert (schedule.start, schedule.end) == (START, END)
    assert (schedule.status, schedule.participant_count) == ("booked", 3)
    assert schedule.location_reference == "Location/loc-9"
    assert "Adam" not in repr(schedule) and "Knee" not in repr(schedule)
    # A date without a time, or a time without a zone, is no instant: left empty rather than guessed.
    vague = schedule_from_appointment({"id": "a2", "start": "2030-01-15", "end": "2030-01-15T10:30:00"})
    assert vague.start is None and vague.end is None
    encounter = schedule_from_encounter(
        {"period": {"start": "2030-01-15T10:00:00Z"}, "location": [{"location": {"reference": "Location/x"}}]}
    )
    assert encounter.start == START and encounter.location_reference == "Location/x"


def test_launch_facts_read_smart_and_vendor_context():
    facts = launch_facts(
        token={
            "patient": "p1",
            "encounter": "Encounter/enc1",
            "fhirContext": [{"reference": "Appointment/a7"}, {"reference": "Encounter/enc2"}],
            "csn": 123,
        },
        role="clinician",
        fhir_user="https://ehr/fhir/Practitioner/dr1",
        launch_parameters={"appointment": "CSN-9", "department_id": "D1"},
    )
    assert facts == LaunchFacts(
        role="clinician",
        patient_id="p1",
        encounter_id="enc1",
        fhir_user="https://ehr/fhir/Practitioner/dr1",
        context_appointment_id="a7",
        context_encounter_id="enc2",
        vendor_values=("123", "CSN-9"),
        trusted_vendor_values=("123",),
    )


def test_times_show_in_the_departments_time_zone_from_the_feed(org_a):
    endpoint = sms_ready_endpoint(org_a, time_zone="America/New_York")
    # The feed knows this appointment's department is in Denver; the launch (keyed by the same
    # identifier) makes the visit and takes the feed's time zone and department.
    with tenant_scope(org_a):
        appointment_apply(
            endpoint=endpoint, message=siu(external_id="36996", start=START, time_zone="America/Denver")
        )
    visit = a_visit(
        endpoint, "appt1", keys=["Appointment/appt1", "id:36996"], scheduled_start=START, scheduled_end=END
    )
    assert visit.time_zone == "America/Denver" and visit.department_id == "DEPT-1"
    assert scheduled_display(visit) == "15 Jan 2030, 03:00–03:30 MST"
    # Without the feed, the endpoint's zone.
    other = a_visit(endpoint, "appt2", scheduled_start=START, scheduled_end=END)
    assert scheduled_display(other) == "15 Jan 2030, 05:00–05:30 EST"


def test_an_unscheduled_visit_says_so(org_a):
    endpoint = sms_ready_endpoint(org_a)
    visit = a_visit(
        endpoint,
        "encounter:e1",
        keys=["Encounter/e1"],
        schedule={"unscheduled": True, "found_by": AppointmentSource.UNSCHEDULED},
    )
    assert scheduled_display(visit) == "Unscheduled visit"
    assert (
        scheduled_display(visit, for_clinician=True)
        == "Unscheduled visit (the EHR has no appointment for it)"
    )


def test_a_join_link_lasts_until_the_scheduled_end_plus_the_grace_period(org_a):
    endpoint = sms_ready_endpoint(org_a)
    visit = a_visit(endpoint, scheduled_start=START, scheduled_end=END)
    with time_machine.travel(START - timedelta(days=3), tick=False):
        token = join_token_make(visit=visit, role="patient", participant_id="p-1")
    with time_machine.travel(END + timedelta(hours=1, minutes=59), tick=False):
        assert join_token_read(token)["v"] == visit.public_id
    with time_machine.travel(END + timedelta(hours=2, minutes=1), tick=False), pytest.raises(JoinLinkError):
        join_token_read(token)


def test_visits_nobody_started_become_no_shows_after_their_scheduled_end(org_a, org_b):
    endpoint_a, endpoint_b = sms_ready_endpoint(org_a), sms_ready_endpoint(org_b, number="+18335550143")
    past = timezone.now() - timedelta(hours=1)
    nobody = a_visit(endpoint_a, "a-nobody", scheduled_start=past - timedelta(minutes=30), scheduled_end=past)
    started = a_visit(
        endpoint_a, "a-started", scheduled_start=past - timedelta(minutes=30), scheduled_end=past
    )
    with all_tenants():
        Visit.objects.filter(pk=started.pk).update(
            started_at=past - timedelta(minutes=25), state=VisitState.COMPLETED
        )
    later = a_visit(
        endpoint_a,
        "a-later",
        scheduled_start=timezone.now(),
        scheduled_end=timezone.now() + timedelta(hours=1),
    )
    open_ended = a_visit(endpoint_a, "encounter:e1", keys=["Encounter/e1"], schedule={"unscheduled": True})
    other_org = a_visit(
        endpoint_b, "b-nobody", scheduled_start=past - timedelta(minutes=30), scheduled_end=past
    )
    assert visits_mark_no_show_task() == 2  # the scheduled task, across organizations
    with all_tenants():
        states = dict(Visit.objects.values_list("pk", "state"))
    assert states[nobody.pk] == states[other_org.pk] == VisitState.NO_SHOW
    assert states[started.pk] == VisitState.COMPLETED
    assert states[later.pk] == states[open_ended.pk] == VisitState.SCHEDULED
    with all_tenants():
        assert visits_mark_no_show() == 0  # idempotent


def test_one_visit_per_key_per_organization_and_environment(org_a, org_b):
    endpoint_a = sms_ready_endpoint(org_a)
    endpoint_b = sms_ready_endpoint(org_b, number="+18335550143")
    first = a_visit(endpoint_a, "36996")
    via_fhir = a_visit(endpoint_a, "appt1", keys=["Appointment/appt1", "id:36996", "Encounter/enc1"])
    assert via_fhir.pk == first.pk
    via_encounter = a_visit(endpoint_a, "encounter:enc1", keys=["Encounter/enc1"])
    assert via_encounter.pk == first.pk
    with tenant_scope(org_a):
        assert set(VisitKey.objects.values_list("key", flat=True)) == {
            "id:36996",
            "Appointment/appt1",
            "Encounter/enc1",
        }
    assert a_visit(endpoint_b, "36996").pk != first.pk
