"""Visit events: idempotent storage, figures derived from them, and the meeting webhooks."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from connector.meetings import locmem
from connector.models import EndpointStatus, FhirEndpoint, Meeting, Visit, VisitEvent, WriteBack
from connector.services.visits import event_record, visit_get_or_create, visit_presence
from tenants.scoping import tenant_scope

pytestmark = pytest.mark.django_db

T0 = timezone.now().replace(microsecond=0) - timedelta(hours=3)


def make_visit(tenant, appointment="A-1", conference="", meeting_id="") -> Visit:
    with tenant_scope(tenant):
        endpoint = FhirEndpoint.objects.filter(tenant=tenant).first() or FhirEndpoint.objects.create(
            tenant=tenant,
            base_url=f"https://fhir.{tenant.pk}.example.org/R4",
            environment="test",
            label="Main",
            status=EndpointStatus.APPROVED,
        )
        visit = visit_get_or_create(
            endpoint=endpoint, appointment_id=appointment, conference_id=conference, encounter_id="enc-1"
        )
        if meeting_id:
            meeting, _ = Meeting.objects.get_or_create(
                backend="connector.meetings.locmem.LocmemMeetingBackend",
                meeting_id=meeting_id,
                defaults={
                    "tenant": tenant,
                    "join_url": f"https://meetings.invalid/{meeting_id}",
                    "conference_id": conference,
                },
            )
            visit.meeting = meeting
            visit.save(update_fields=["meeting"])
    return visit


def record(visit, event_id, kind, role, participant, minutes):
    with tenant_scope(visit.tenant):
        return event_record(
            visit=visit,
            event_id=event_id,
            kind=kind,
            role=role,
            participant_id=participant,
            occurred_at=T0 + timedelta(minutes=minutes),
            source="connector",
        )


def refreshed(visit):
    with tenant_scope(visit.tenant):
        return Visit.objects.get(pk=visit.pk)


def test_a_visit_starts_when_clinician_and_patient_are_both_present_and_ends_when_the_last_leaves(org_a):
    visit = make_visit(org_a)
    record(visit, "1", "lobby_entered", "patient", "p1", 0)
    record(visit, "2", "joined", "clinician", "c1", 5)
    record(visit, "3", "admitted", "patient", "p1", 6)
    record(visit, "4", "joined", "patient", "p1", 6)
    record(visit, "5", "joined", "guest", "g1", 10)
    record(visit, "6", "left", "patient", "p1", 20)
    record(visit, "7", "left", "guest", "g1", 21)
    record(visit, "8", "left", "clinician", "c1", 22)
    visit = refreshed(visit)
    assert visit.started_at == T0 + timedelta(minutes=6)
    assert visit.ended_at == T0 + timedelta(minutes=22)
    assert visit.duration_seconds == 16 * 60
    assert visit.lobby_wait_seconds == 6 * 60
    assert visit.peak_attendees == 3
    assert visit.state == "completed"


def test_the_same_event_twice_is_stored_once(org_a):
    visit = make_visit(org_a)
    _, first = record(visit, "same", "joined", "clinician", "c1", 0)
    _, second = record(visit, "same", "joined", "clinician", "c1", 0)
    assert (first, second) == (True, False)
    with tenant_scope(org_a):
        assert VisitEvent.objects.count() == 1


def test_events_out_of_order_give_the_same_figures(org_a):
    in_order = make_visit(org_a, "A-1")
    shuffled = make_visit(org_a, "A-2")
    events = [
        ("joined", "clinician", "c1", 1),
        ("joined", "patient", "p1", 2),
        ("left", "patient", "p1", 9),
        ("left", "clinician", "c1", 10),
    ]
    for i, e in enumerate(events):
        record(in_order, f"o{i}", *e)
    for i, e in reversed(list(enumerate(events))):
        record(shuffled, f"s{i}", *e)
    a, b = refreshed(in_order), refreshed(shuffled)
    assert (a.started_at, a.ended_at, a.peak_attendees, a.state) == (
        b.started_at,
        b.ended_at,
        b.peak_attendees,
        b.state,
    )
    assert a.state == "completed"


def test_a_late_rejoin_reopens_the_visit_until_the_last_one_leaves(org_a):
    visit = make_visit(org_a)
    for i, e in enumerate(
        [
            ("joined", "clinician", "c1", 0),
            ("joined", "patient", "p1", 1),
            ("left", "patient", "p1", 5),
            ("left", "clinician", "c1", 6),
        ]
    ):
        record(visit, f"e{i}", *e)
    assert refreshed(visit).state == "completed"
    record(visit, "late-join", "joined", "patient", "p1", 7)
    assert refreshed(visit).state == "in_progress"
    record(visit, "late-leave", "left", "patient", "p1", 8)
    assert refreshed(visit).ended_at == T0 + timedelta(minutes=8)


def test_a_visit_whose_time_passed_without_both_present_is_a_no_show(org_a):
    visit = make_visit(org_a)
    with tenant_scope(org_a):
        Visit.objects.filter(pk=visit.pk).update(scheduled_end=T0)
        visit.refresh_from_db()
    record(visit, "c", "joined", "clinician", "c1", 0)
    assert refreshed(visit).state == "no_show"


def test_presence_lists_the_lobby_and_who_is_connected(org_a):
    visit = make_visit(org_a)
    record(visit, "1", "lobby_entered", "patient", "p1", 0)
    record(visit, "2", "joined", "clinician", "c1", 1)
    with tenant_scope(org_a):
        presence = visit_presence(visit=visit)
    assert presence == {
        "in_lobby": [{"participant_id": "p1", "role": "patient"}],
        "connected": [{"participant_id": "c1", "role": "clinician"}],
    }


def test_events_queue_write_backs_only_when_enabled_and_only_once(org_a):
    visit = make_visit(org_a)
    record(visit, "1", "joined", "clinician", "c1", 0)
    with tenant_scope(org_a):
        assert not WriteBack.objects.exists()
        FhirEndpoint.objects.filter(pk=visit.endpoint_id).update(write_back_enabled=True)
    visit = refreshed(visit)
    record(visit, "2", "joined", "patient", "p1", 1)
    record(visit, "2", "joined", "patient", "p1", 1)
    with tenant_scope(org_a):
        kinds = sorted(WriteBack.objects.values_list("kind", flat=True))
    assert kinds == ["participant_connected", "visit_started"]


# --- webhooks ------------------------------------------------------------------------------


@pytest.fixture
def locmem_backend(settings):
    settings.MEETING_BACKEND = "connector.meetings.locmem.LocmemMeetingBackend"
    locmem.reset()


def post_events(client, events, secret=locmem.LocmemMeetingBackend.webhook_secret):
    return client.post(
        "/webhooks/meetings/locmem/",
        data=json.dumps({"events": events}),
        content_type="application/json",
        HTTP_X_LOCMEM_SECRET=secret,
    )


def webhook_event(event_id, kind, role, participant, minutes, meeting_id="m-1"):
    return {
        "event_id": event_id,
        "meeting_id": meeting_id,
        "participant_id": participant,
        "role": role,
        "kind": kind,
        "occurred_at": (T0 + timedelta(minutes=minutes)).isoformat(),
    }


def test_webhook_events_land_on_the_visit_once(client, locmem_backend, org_a):
    visit = make_visit(org_a, meeting_id="m-1")
    events = [
        webhook_event("w1", "joined", "clinician", "c1", 0),
        webhook_event("w2", "joined", "patient", "p1", 1),
    ]
    assert post_events(client, events).json() == {"received": 2, "stored": 2}
    assert post_events(client, events).json() == {"received": 2, "stored": 0}
    assert refreshed(visit).state == "in_progress"


def test_a_webhook_with_a_bad_signature_is_refused_and_nothing_is_stored(client, locmem_backend, org_a):
    make_visit(org_a, meeting_id="m-1")
    response = post_events(client, [webhook_event("w1", "joined", "clinician", "c1", 0)], secret="wrong")
    assert response.status_code == 403
    with tenant_scope(org_a):
        assert not VisitEvent.objects.exists()


def test_the_test_backend_webhook_does_not_exist_in_other_setups(client, settings):
    settings.MEETING_BACKEND = "connector.meetings.demo.DemoMeetingBackend"
    assert post_events(client, []).status_code == 404
    assert client.post("/webhooks/meetings/nope/").status_code == 404


def test_a_group_visit_shares_its_meeting_and_every_visit_gets_the_events(client, locmem_backend, org_a):
    first = make_visit(org_a, "A-1", conference="CONF-9", meeting_id="m-group")
    second = make_visit(org_a, "A-2", conference="CONF-9", meeting_id="m-group")
    post_events(client, [webhook_event("g1", "joined", "clinician", "c1", 0, "m-group")])
    with tenant_scope(org_a):
        assert VisitEvent.objects.filter(visit=first).count() == 1
        assert VisitEvent.objects.filter(visit=second).count() == 1


def test_a_webhook_for_organization_bs_meeting_never_touches_as_visits(client, locmem_backend, org_a, org_b):
    visit_a = make_visit(org_a, meeting_id="m-a")
    make_visit(org_b, meeting_id="m-b")
    post_events(client, [webhook_event("b1", "joined", "clinician", "c1", 0, "m-b")])
    with tenant_scope(org_a):
        assert not VisitEvent.objects.filter(visit=visit_a).exists()
