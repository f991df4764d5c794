"""Presence that matches reality: pages send heartbeats, and whoever stops is marked as left.

Time is moved with time_machine (a fixed clock), never slept through.
"""

from __future__ import annotations

import json
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone

from connector.models import EventKind, EventSource, Heartbeat, ParticipantRole, VisitState, WriteBack
from connector.services.presence import presence_sweep
from connector.sweeper import work_sweep
from tenants.scoping import all_tenants, tenant_scope
from tests.test_visit_pages import (
    CLINICIAN_ID,
    DEMO,
    PATIENT_ID,
    console_path,
    demo_url,
    events,
    join_path,
    make_visit,
    patient_token,
    record,
)


@pytest.fixture
def demo_visit(settings, org_a):
    settings.MEETING_BACKEND = DEMO
    visit = make_visit(org_a, starts_in=timedelta(minutes=-5))
    with tenant_scope(org_a):
        visit.endpoint.write_back_enabled = True
        visit.endpoint.save(update_fields=["write_back_enabled"])
        from connector.services.visits import meeting_ensure

        meeting_ensure(visit=visit)
    visit.refresh_from_db()
    return visit


def heartbeat_url(visit) -> str:
    return reverse("visits:demo-meeting-heartbeat", kwargs={"meeting_id": visit.meeting.meeting_id})


def beat(client, visit, role: str, participant_id: str):
    """What static/js/heartbeat.js POSTs from the demo meeting page."""
    sig = parse_qs(urlsplit(demo_url(visit, role, participant_id)).query)["sig"][0]
    return client.post(
        heartbeat_url(visit),
        data=json.dumps({"role": role, "participant_id": participant_id, "sig": sig}),
        content_type="text/plain;charset=UTF-8",
    )


def both_in_the_meeting(client, visit) -> None:
    """Clinician and patient open the demo meeting page (a heartbeat) and join (the page's beacon)."""
    for role, pid in ((ParticipantRole.CLINICIAN, CLINICIAN_ID), (ParticipantRole.PATIENT, PATIENT_ID)):
        assert client.get(demo_url(visit, role, pid)).status_code == 200
        record(visit, EventKind.JOINED, role, pid, source=EventSource.DEMO)


def console_status(client, visit) -> dict:
    return client.get(console_path(visit, "visits:console-status")).json()


def test_a_patient_who_closes_the_meeting_without_leaving_is_marked_as_left_within_a_minute(
    client, demo_visit
):
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        both_in_the_meeting(client, demo_visit)
        assert {e["participant_id"] for e in console_status(client, demo_visit)["connected"]} == {
            CLINICIAN_ID,
            PATIENT_ID,
        }
        # The patient's browser is closed; only the clinician's page keeps beating.
        for _ in range(3):
            clock.shift(timedelta(seconds=15))
            assert beat(client, demo_visit, "clinician", CLINICIAN_ID).json()["present"] is True
        # 45 s of silence: not yet.
        assert PATIENT_ID in {e["participant_id"] for e in console_status(client, demo_visit)["connected"]}
        clock.shift(timedelta(seconds=15))
        beat(client, demo_visit, "clinician", CLINICIAN_ID)  # 60 s after the patient's last sign of life

        status = console_status(client, demo_visit)
    assert [e["participant_id"] for e in status["connected"]] == [CLINICIAN_ID]
    assert status["summary"] == "1 connected."
    [left] = events(demo_visit, EventKind.LEFT)
    assert (left.participant_id, left.source, left.occurred_at) == (PATIENT_ID, EventSource.CONNECTOR, start)
    assert left.data == {"reason": "heartbeat_stopped"}


def test_when_everyone_is_gone_the_scheduled_sweep_ends_the_visit_and_writes_back(client, demo_visit):
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        both_in_the_meeting(client, demo_visit)
        clock.shift(timedelta(seconds=20))
        beat(client, demo_visit, "clinician", CLINICIAN_ID)
        clock.shift(timedelta(seconds=40))
        assert work_sweep()["presence"] == 1  # the patient (silent 60 s), not the clinician (40 s)
        clock.shift(timedelta(seconds=10))
        assert work_sweep()["presence"] == 1  # now the clinician (50 s)

    demo_visit.refresh_from_db()
    assert demo_visit.state == VisitState.COMPLETED
    assert demo_visit.ended_at == start + timedelta(seconds=20)  # the last heartbeat, not the sweep
    with tenant_scope(demo_visit.tenant):
        kinds = set(WriteBack.objects.filter(visit=demo_visit).values_list("kind", flat=True))
        assert WriteBack.Kind.VISIT_ENDED in kinds
        assert not Heartbeat.objects.filter(visit=demo_visit).exists()
    # Nothing twice: a second sweep finds nothing.
    assert presence_sweep() == 0
    assert len(events(demo_visit, EventKind.LEFT)) == 2


def test_a_participant_whose_heartbeat_comes_back_joins_again(client, demo_visit):
    with time_machine.travel(timezone.now(), tick=False) as clock:
        both_in_the_meeting(client, demo_visit)
        clock.shift(timedelta(seconds=50))
        beat(client, demo_visit, "clinician", CLINICIAN_ID)  # sweeps: the patient was silent
        clock.shift(timedelta(seconds=5))
        reply = beat(client, demo_visit, "patient", PATIENT_ID)  # the patient's laptop wakes up
    assert reply.status_code == 200
    assert reply.json()["present"] is False  # heartbeat.js then sends a new "joined"


def test_after_the_visit_is_ended_the_meeting_pages_are_told_so_and_do_not_join_again(client, demo_visit):
    from connector.services.participants import visit_end

    with time_machine.travel(timezone.now(), tick=False) as clock:
        both_in_the_meeting(client, demo_visit)
        clock.shift(timedelta(seconds=10))
        with tenant_scope(demo_visit.tenant):
            assert visit_end(visit=demo_visit) == 2
        clock.shift(timedelta(seconds=5))
        replies = [
            beat(client, demo_visit, role, pid).json()
            for role, pid in (("patient", PATIENT_ID), ("clinician", CLINICIAN_ID))
        ]
    # heartbeat.js stops on `ended` instead of sending a new "joined" (which would restart the visit).
    assert [(reply["present"], reply["ended"]) for reply in replies] == [(False, True), (False, True)]
    demo_visit.refresh_from_db()
    assert demo_visit.state == VisitState.COMPLETED


def test_a_silenced_participant_is_not_told_the_visit_ended(client, demo_visit):
    with time_machine.travel(timezone.now(), tick=False) as clock:
        both_in_the_meeting(client, demo_visit)
        clock.shift(timedelta(seconds=50))
        beat(client, demo_visit, "clinician", CLINICIAN_ID)
        clock.shift(timedelta(seconds=5))
        reply = beat(client, demo_visit, "patient", PATIENT_ID).json()
    assert (reply["present"], reply["ended"]) == (False, False)


def test_a_lobby_waiter_who_goes_silent_leaves_the_lobby_and_returns_on_the_next_heartbeat(
    client, demo_visit
):
    lobby = join_path(patient_token(demo_visit), "visits:lobby")
    lobby_beat = join_path(patient_token(demo_visit), "visits:lobby-heartbeat")
    with time_machine.travel(timezone.now(), tick=False) as clock:
        client.get(lobby)
        client.get(console_path(demo_visit))  # the console's page load is the clinician's heartbeat
        assert [e["participant_id"] for e in console_status(client, demo_visit)["in_lobby"]] == [PATIENT_ID]
        clock.shift(timedelta(seconds=30))
        client.post(console_path(demo_visit, "visits:console-heartbeat"))
        clock.shift(timedelta(seconds=30))
        status = console_status(client, demo_visit)
        assert status["in_lobby"] == []
        assert status["summary"] == "Nobody is connected."

        reply = client.post(lobby_beat)
        status = console_status(client, demo_visit)
    assert reply.json() == {"present": True, "every_seconds": 15}
    assert [e["participant_id"] for e in status["in_lobby"]] == [PATIENT_ID]
    assert len(events(demo_visit, EventKind.LOBBY_ENTERED)) == 2
    [left] = events(demo_visit, EventKind.LEFT)
    assert left.data == {"reason": "heartbeat_stopped", "from": "lobby"}
    with tenant_scope(demo_visit.tenant):
        # Never connected, so no "disconnected" is written to the EHR for them.
        assert not WriteBack.objects.filter(
            visit=demo_visit, kind=WriteBack.Kind.PARTICIPANT_DISCONNECTED
        ).exists()


def test_a_lobby_waiter_leaving_after_the_visit_does_not_move_its_end(client, demo_visit):
    with time_machine.travel(timezone.now(), tick=False) as clock:
        client.get(join_path(patient_token(demo_visit, "p-guest-2"), "visits:lobby"))
        both_in_the_meeting(client, demo_visit)
        record(demo_visit, EventKind.LEFT, ParticipantRole.PATIENT, PATIENT_ID)
        clock.shift(timedelta(seconds=1))
        record(demo_visit, EventKind.LEFT, ParticipantRole.CLINICIAN, CLINICIAN_ID)
        demo_visit.refresh_from_db()
        ended = demo_visit.ended_at
        clock.shift(timedelta(minutes=2))
        presence_sweep()  # the second waiter's lobby page went quiet long ago
    demo_visit.refresh_from_db()
    assert demo_visit.state == VisitState.COMPLETED and demo_visit.ended_at == ended
    assert any(e.data.get("from") == "lobby" for e in events(demo_visit, EventKind.LEFT))


def test_a_join_reported_by_the_meeting_provider_is_left_to_the_provider(client, demo_visit):
    """Admitted to Teams, the patient closes the lobby tab: the connector must not end their visit."""
    with time_machine.travel(timezone.now(), tick=False) as clock:
        client.get(join_path(patient_token(demo_visit), "visits:lobby"))
        record(demo_visit, EventKind.JOINED, ParticipantRole.PATIENT, PATIENT_ID, source=EventSource.TEAMS)
        clock.shift(timedelta(minutes=5))
        assert presence_sweep() == 0
    assert events(demo_visit, EventKind.LEFT) == []
    assert [e["participant_id"] for e in console_status(client, demo_visit)["connected"]] == [PATIENT_ID]


def test_the_summary_and_the_list_come_from_the_same_presence(client, demo_visit):
    page = client.get(console_path(demo_visit)).content.decode()
    assert "Nobody is connected." in page
    record(demo_visit, EventKind.JOINED, ParticipantRole.PATIENT, PATIENT_ID)
    status = console_status(client, demo_visit)
    assert status["summary"] == f"{len(status['connected'])} connected."


def test_heartbeats_need_the_pages_credential(client, demo_visit, org_b):
    sig = parse_qs(urlsplit(demo_url(demo_visit, "patient", PATIENT_ID)).query)["sig"][0]
    forged = client.post(
        heartbeat_url(demo_visit),
        data=json.dumps({"role": "clinician", "participant_id": PATIENT_ID, "sig": sig}),
        content_type="text/plain",
    )
    extra = client.post(
        heartbeat_url(demo_visit),
        data=json.dumps({"role": "patient", "participant_id": PATIENT_ID, "sig": sig, "x": 1}),
        content_type="text/plain",
    )
    broken = client.post(heartbeat_url(demo_visit), data="{", content_type="text/plain")
    console = client.post(
        reverse("visits:console-heartbeat", kwargs={"public_id": demo_visit.public_id}) + "?t=nope"
    )
    lobby = client.post(join_path("nope", "visits:lobby-heartbeat"))

    assert forged.status_code == 403
    assert extra.status_code == 400 and extra.json()["error"]["code"] == "invalid"
    assert broken.status_code == 400
    assert console.status_code == 403
    assert lobby.status_code == 400
    with all_tenants():
        assert not Heartbeat.objects.exists()


def test_the_pages_load_the_heartbeat_script_without_inline_handlers(client, demo_visit):
    for path in (
        join_path(patient_token(demo_visit), "visits:lobby"),
        console_path(demo_visit),
        demo_url(demo_visit, "patient", PATIENT_ID),
    ):
        page = client.get(path).content.decode()
        assert "/static/js/heartbeat.js" in page
        assert "data-heartbeat-url=" in page
