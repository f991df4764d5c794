"""The pages around a visit: join link, device test, lobby, clinician console, demo meeting, device test record.

Every page is reached by a signed token, not an account; these tests check each
token opens exactly its own visit (never another visit, never another
organization's), and that the lobby moves from waiting to admitted.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import time_machine
from django.core import signing
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.utils.crypto import get_random_string

from connector.meetings import locmem
from connector.models import (
    EndpointStatus,
    EventKind,
    EventSource,
    FhirEndpoint,
    GuestInvite,
    IntegrationRecord,
    Meeting,
    ParticipantRole,
    RecordKind,
    Visit,
    VisitEvent,
)
from connector.services.visits import event_record, join_token_make, join_url_for, participant_id_for
from connector.visits.pages import CONSOLE_SALT, console_url_for
from tenants.scoping import all_tenants, tenant_scope

PUBLIC = "https://connector.example.org"
LOCMEM = "connector.meetings.locmem.LocmemMeetingBackend"
DEMO = "connector.meetings.demo.DemoMeetingBackend"
PATIENT_ID = participant_id_for(ParticipantRole.PATIENT, "Patient/eXyz1")
CLINICIAN_ID = participant_id_for(ParticipantRole.CLINICIAN, "Practitioner/dr-1")


@pytest.fixture(autouse=True)
def _visit_settings(settings):
    settings.MEETING_BACKEND = LOCMEM
    settings.PUBLIC_BASE_URL = PUBLIC


def make_visit(
    tenant, *, starts_in: timedelta = timedelta(hours=1), appointment: str = "", **fields
) -> Visit:
    with tenant_scope(tenant):
        endpoint = FhirEndpoint.objects.filter(tenant=tenant).first() or FhirEndpoint.objects.create(
            tenant=tenant,
            base_url=f"https://fhir.{tenant.pk}.example/api/FHIR/R4",
            environment="test",
            label="Virtual clinic",
            time_zone="Europe/Paris",
            status=EndpointStatus.VALIDATED,
        )
        start = timezone.now() + starts_in
        values = {"scheduled_start": start, "scheduled_end": start + timedelta(minutes=30), **fields}
        return Visit.objects.create(
            tenant=tenant,
            public_id=get_random_string(24),
            endpoint=endpoint,
            appointment_id=appointment or get_random_string(8),
            **values,
        )


@pytest.fixture
def visit(org_a) -> Visit:
    return make_visit(org_a)


def patient_token(visit: Visit, participant_id: str = PATIENT_ID) -> str:
    return join_token_make(visit=visit, role=ParticipantRole.PATIENT, participant_id=participant_id)


def join_path(token: str, name: str = "visits:join") -> str:
    return reverse(name, kwargs={"token": token})


def console_path(visit: Visit, name: str = "visits:console", participant_id: str = CLINICIAN_ID) -> str:
    """The path of a console URL (or of its status/admit/invite/revoke sibling), with its token."""
    url = urlsplit(console_url_for(visit, participant_id))
    return f"{reverse(name, kwargs={'public_id': visit.public_id})}?{url.query}"


def events(visit: Visit, kind: str | None = None) -> list[VisitEvent]:
    with tenant_scope(visit.tenant):
        rows = VisitEvent.objects.filter(visit=visit)
        return list(rows.filter(kind=kind) if kind else rows)


def record(visit: Visit, kind: str, role: str, participant_id: str, source: str = EventSource.DEMO) -> None:
    with tenant_scope(visit.tenant):
        event_record(
            visit=visit,
            event_id=f"test:{uuid.uuid4()}",
            kind=kind,
            role=role,
            participant_id=participant_id,
            occurred_at=timezone.now(),
            source=source,
        )


def device_result(**overrides) -> dict:
    return {
        "event_id": str(uuid.uuid4()),
        "camera": "ok",
        "microphone": "ok",
        "speaker": "skipped",
        "connection_ms": 42,
        **overrides,
    }


def post_json(client: Client, path: str, body) -> object:
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(path, data=data, content_type="application/json", HTTP_ACCEPT="application/json")


# --- the join link ---------------------------------------------------------------------------


def test_a_patient_link_opens_the_device_test_in_an_ehr_frame(client, visit):
    response = client.get(join_path(patient_token(visit)))

    assert response.status_code == 200
    page = response.content.decode()
    assert "Check your camera, microphone and speaker" in page
    assert "Continue to the waiting room" in page
    assert "Skip the device test" in page
    assert reverse("visits:ping") in page
    assert "X-Frame-Options" not in response.headers
    assert "no-store" in response["Cache-Control"]


def test_an_expired_join_link_gets_a_friendly_410_page(client, org_a, caplog):
    past = make_visit(org_a, starts_in=timedelta(hours=-4))
    token = patient_token(past)

    with caplog.at_level(logging.INFO):
        response = client.get(join_path(token))
        lobby = client.get(join_path(token, "visits:lobby-status"))

    assert response.status_code == 410
    assert "This link has expired" in response.content.decode()
    assert "Contact your care team for a new link" in response.content.decode()
    assert lobby.status_code == 410
    assert lobby.json()["error"]["code"] == "link_expired"
    assert token not in caplog.text  # Django's "Gone: <path>" line would carry it


def test_a_join_link_expires_two_hours_after_the_visit(client, visit):
    token = patient_token(visit)
    with time_machine.travel(visit.scheduled_end + timedelta(hours=2, minutes=1)):
        assert client.get(join_path(token)).status_code == 410


def test_a_tampered_join_link_answers_400(client, visit, caplog):
    token = patient_token(visit)
    tampered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")

    with caplog.at_level(logging.INFO):
        response = client.get(join_path(tampered))
        posted = post_json(client, join_path(tampered, "visits:join-device-test"), device_result())

    assert response.status_code == 400
    assert "This link does not work" in response.content.decode()
    assert posted.status_code == 400
    assert posted.json()["error"]["code"] == "link_invalid"
    assert events(visit) == []
    assert tampered not in caplog.text


def test_a_clinician_role_join_token_is_not_a_patient_link(client, visit):
    token = join_token_make(visit=visit, role=ParticipantRole.CLINICIAN, participant_id=CLINICIAN_ID)
    assert client.get(join_path(token)).status_code == 400


def test_a_join_link_of_a_deleted_visit_says_it_is_gone(client, visit):
    token = patient_token(visit)
    with all_tenants():
        Visit.objects.filter(pk=visit.pk).delete()
    assert client.get(join_path(token)).status_code == 404


# --- the device test -------------------------------------------------------------------------


def test_device_test_results_are_recorded_once_however_often_the_page_retries(client, visit):
    path = join_path(patient_token(visit), "visits:join-device-test")
    body = device_result(microphone="failed", connection_ms=87)

    first = post_json(client, path, body)
    again = post_json(client, path, body)

    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["created"] is False
    [event] = events(visit, EventKind.DEVICE_TEST)
    assert event.data == {"camera": "ok", "microphone": "failed", "speaker": "skipped", "connection_ms": 87}
    assert event.role == ParticipantRole.PATIENT
    assert event.participant_id == PATIENT_ID
    assert event.source == EventSource.CONNECTOR


def test_device_test_results_are_accepted_without_a_csrf_cookie(visit):
    """The page may run in a patient portal's frame, where our cookies are third-party: the token suffices."""
    client = Client(enforce_csrf_checks=True)
    response = post_json(client, join_path(patient_token(visit), "visits:join-device-test"), device_result())
    assert response.status_code == 201


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (device_result(camera="great"), "camera"),
        (device_result(microphone=None), "microphone"),
        ({k: v for k, v in device_result().items() if k != "speaker"}, "speaker"),
        (device_result(speaker=["ok"]), "speaker"),
        (device_result(connection_ms="42"), "connection_ms"),
        (device_result(connection_ms=True), "connection_ms"),
        (device_result(connection_ms=4.5), "connection_ms"),
        (device_result(connection_ms=-1), "connection_ms"),
        (device_result(connection_ms=600_000), "connection_ms"),
        ({k: v for k, v in device_result().items() if k != "connection_ms"}, "connection_ms"),
        (device_result(event_id="not-a-uuid"), "event_id"),
        (device_result(event_id=None), "event_id"),
        (device_result(name="Jane Doe"), "name"),
        ([device_result()], "body"),
        ("{not json", "body"),
    ],
)
def test_device_test_results_are_validated_strictly(client, visit, body, field):
    response = post_json(client, join_path(patient_token(visit), "visits:join-device-test"), body)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert field in error["fields"]
    assert field in error["message"]
    assert events(visit) == []


def test_device_test_results_only_by_post(client, visit):
    assert client.get(join_path(patient_token(visit), "visits:join-device-test")).status_code == 405


# --- the lobby -------------------------------------------------------------------------------


def test_the_lobby_records_one_entry_per_participant_however_often_it_loads(client, visit):
    token = patient_token(visit)

    first = client.get(join_path(token, "visits:lobby"))
    client.get(join_path(token, "visits:lobby"))

    assert first.status_code == 200
    assert "X-Frame-Options" not in first.headers
    [entry] = events(visit, EventKind.LOBBY_ENTERED)
    assert (entry.role, entry.participant_id) == (ParticipantRole.PATIENT, PATIENT_ID)


def test_the_lobby_shows_the_scheduled_time_in_the_endpoints_time_zone(client, org_a):
    from datetime import datetime
    from zoneinfo import ZoneInfo

    with time_machine.travel(datetime(2031, 3, 4, 12, 0, tzinfo=ZoneInfo("UTC"))):
        visit = make_visit(org_a, scheduled_start=datetime(2031, 3, 4, 13, 30, tzinfo=ZoneInfo("UTC")))
        page = client.get(join_path(patient_token(visit), "visits:lobby")).content.decode()

    # Start (and end, when known) in the clinic's time zone.
    assert re.search(r"4 Mar 2031, 14:30(–\d\d:\d\d)? CET", page)
    assert "Scheduled" in page


def test_the_lobby_status_moves_from_waiting_to_admitted(client, visit):
    token = patient_token(visit)
    client.get(join_path(token, "visits:lobby"))
    status_path = join_path(token, "visits:lobby-status")

    waiting = client.get(status_path).json()
    assert waiting["state"] == "waiting_for_clinician"
    assert "join_url" not in waiting

    record(visit, EventKind.JOINED, ParticipantRole.CLINICIAN, CLINICIAN_ID)
    assert client.get(status_path).json()["state"] == "waiting_for_admission"

    admitted = client.post(console_path(visit, "visits:console-admit"), {"participant_id": PATIENT_ID})
    assert admitted.status_code == 302

    body = client.get(status_path).json()
    assert body["state"] == "admitted"
    query = parse_qs(urlsplit(body["join_url"]).query)
    assert query == {"role": ["patient"], "p": [PATIENT_ID]}
    assert body["join_url"].startswith("https://meetings.invalid/locmem-1")
    [admission] = events(visit, EventKind.ADMITTED)
    assert (admission.role, admission.source) == (ParticipantRole.PATIENT, EventSource.CONNECTOR)


def test_the_lobby_goes_back_to_waiting_when_the_clinician_leaves_before_admitting(client, visit):
    token = patient_token(visit)
    client.get(join_path(token, "visits:lobby"))
    record(visit, EventKind.JOINED, ParticipantRole.CLINICIAN, CLINICIAN_ID)
    record(visit, EventKind.LEFT, ParticipantRole.CLINICIAN, CLINICIAN_ID)
    assert client.get(join_path(token, "visits:lobby-status")).json()["state"] == "waiting_for_clinician"


def test_an_admission_in_another_visit_does_not_open_this_one(client, org_a, visit):
    """The same patient (same participant ID) in two visits: admitted in one, still waiting in the other."""
    other = make_visit(org_a)
    client.get(join_path(patient_token(visit), "visits:lobby"))
    client.get(join_path(patient_token(other), "visits:lobby"))

    response = client.post(
        console_path(other, "visits:console-admit"),
        {"participant_id": PATIENT_ID},
        HTTP_ACCEPT="application/json",
    )

    assert response.status_code == 200
    assert client.get(join_path(patient_token(other), "visits:lobby-status")).json()["state"] == "admitted"
    assert client.get(join_path(patient_token(visit), "visits:lobby-status")).json()["state"] == (
        "waiting_for_clinician"
    )
    assert events(visit, EventKind.ADMITTED) == []


# --- the clinician console -------------------------------------------------------------------


def test_console_url_for_gives_an_absolute_link_valid_for_this_visit(client, visit):
    url = console_url_for(visit, CLINICIAN_ID)
    parts = urlsplit(url)

    assert url.startswith(f"{PUBLIC}/visit/{visit.public_id}/console/?t=")
    payload = signing.loads(parse_qs(parts.query)["t"][0], salt=CONSOLE_SALT, max_age=12 * 3600)
    assert payload == {"v": visit.public_id, "p": CLINICIAN_ID}

    response = client.get(f"{parts.path}?{parts.query}")
    assert response.status_code == 200
    assert "X-Frame-Options" not in response.headers
    page = response.content.decode()
    assert "Live status" in page
    assert "Invite someone" in page


def test_the_console_shows_the_clinicians_organizer_link(client, visit):
    page = client.get(console_path(visit)).content.decode()
    with tenant_scope(visit.tenant):
        visit.refresh_from_db()
        expected = join_url_for(
            visit=visit, role=ParticipantRole.CLINICIAN, participant_id=CLINICIAN_ID, display_name="Clinician"
        )
    assert expected.replace("&", "&amp;") in page
    assert "role=clinician" in expected
    assert len(locmem.outbox) == 1  # one meeting, made on first need and kept


def test_the_console_status_lists_the_lobby_and_who_is_connected(client, visit):
    client.get(join_path(patient_token(visit), "visits:lobby"))
    record(visit, EventKind.JOINED, ParticipantRole.CLINICIAN, CLINICIAN_ID)

    body = client.get(console_path(visit, "visits:console-status")).json()

    assert body["in_lobby"] == [{"participant_id": PATIENT_ID, "role": "patient", "label": "Patient"}]
    assert body["connected"] == [{"participant_id": CLINICIAN_ID, "role": "clinician", "label": "Clinician"}]
    assert body["visit_state"] == "scheduled"


def test_admitting_twice_is_one_admission(client, visit):
    client.get(join_path(patient_token(visit), "visits:lobby"))
    path = console_path(visit, "visits:console-admit")

    for _ in range(2):
        response = client.post(path, {"participant_id": PATIENT_ID}, HTTP_ACCEPT="application/json")
        assert response.status_code == 200

    assert len(events(visit, EventKind.ADMITTED)) == 1


def test_only_someone_in_the_lobby_can_be_admitted(client, visit):
    response = client.post(
        console_path(visit, "visits:console-admit"),
        {"participant_id": PATIENT_ID},
        HTTP_ACCEPT="application/json",
    )
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"participant_id": response.json()["error"]["message"]}
    assert events(visit) == []


def test_the_console_refuses_a_missing_forged_or_expired_token(client, visit):
    base = reverse("visits:console", kwargs={"public_id": visit.public_id})
    forged = signing.dumps({"v": visit.public_id, "p": CLINICIAN_ID}, salt="something-else")
    issued = console_path(visit)

    assert client.get(base).status_code == 403
    assert client.get(f"{base}?t={forged}").status_code == 403
    with time_machine.travel(timezone.now() + timedelta(hours=11, minutes=59)):
        assert client.get(issued).status_code == 200
    with time_machine.travel(timezone.now() + timedelta(hours=12, minutes=1)):
        response = client.get(issued)
    assert response.status_code == 403
    assert "Open the visit from the EHR again" in response.content.decode()


def test_another_visits_console_token_cannot_read_or_admit_here(client, org_a, visit):
    other = make_visit(org_a)
    client.get(join_path(patient_token(visit), "visits:lobby"))
    other_query = urlsplit(console_url_for(other, CLINICIAN_ID)).query

    for name in ("visits:console", "visits:console-status"):
        path = reverse(name, kwargs={"public_id": visit.public_id})
        assert client.get(f"{path}?{other_query}").status_code == 404
    for name in ("visits:console-admit", "visits:console-invite", "visits:console-revoke"):
        path = reverse(name, kwargs={"public_id": visit.public_id})
        response = client.post(f"{path}?{other_query}", {"participant_id": PATIENT_ID, "kind": "family"})
        assert response.status_code == 404
    assert events(visit, EventKind.ADMITTED) == []
    with tenant_scope(visit.tenant):
        assert not GuestInvite.objects.filter(visit=visit).exists()


def test_a_join_token_is_no_console_token(client, visit):
    path = reverse("visits:console", kwargs={"public_id": visit.public_id})
    assert client.get(f"{path}?t={patient_token(visit)}").status_code == 403


# --- guests ----------------------------------------------------------------------------------


def invite(client: Client, visit: Visit, kind: str = "interpreter"):
    return client.post(console_path(visit, "visits:console-invite"), {"kind": kind})


def guest_links(client: Client, visit: Visit) -> list[str]:
    page = client.get(console_path(visit)).content.decode()
    return [
        line.split('value="', 1)[1].split('"', 1)[0]
        for line in page.splitlines()
        if 'class="guest-link"' in line
    ]


def test_a_clinician_invites_an_interpreter_who_joins_through_the_lobby(client, visit):
    response = invite(client, visit, "interpreter")

    assert response.status_code == 302
    with tenant_scope(visit.tenant):
        guest = GuestInvite.objects.get(visit=visit)
    assert guest.kind == "interpreter"
    assert response["Location"].endswith(f"#invite-{guest.participant_id}")
    [link] = guest_links(client, visit)
    assert link.startswith(f"{PUBLIC}/join/")

    path = urlsplit(link).path
    assert client.get(path).status_code == 200
    lobby = client.get(f"{path}lobby/")
    assert "Interpreter" in lobby.content.decode()
    [entry] = events(visit, EventKind.LOBBY_ENTERED)
    assert (entry.role, entry.participant_id) == (ParticipantRole.GUEST, guest.participant_id)
    status = client.get(console_path(visit, "visits:console-status")).json()
    assert status["in_lobby"][0]["label"] == "Interpreter"


def test_a_revoked_guest_link_stops_working(client, visit):
    invite(client, visit, "family")
    [link] = guest_links(client, visit)
    path = urlsplit(link).path
    with tenant_scope(visit.tenant):
        guest = GuestInvite.objects.get(visit=visit)

    revoked = client.post(
        console_path(visit, "visits:console-revoke"), {"participant_id": guest.participant_id}
    )

    assert revoked.status_code == 302
    refused = client.get(path)
    assert refused.status_code == 403
    assert "withdrew this invitation" in refused.content.decode()
    assert client.get(f"{path}lobby/").status_code == 403
    assert client.get(f"{path}lobby/status.json").json()["error"]["code"] == "invite_revoked"
    assert post_json(client, f"{path}device-test/", device_result()).status_code == 403
    assert events(visit) == []
    assert guest_links(client, visit) == []
    assert "the link no longer works" in client.get(console_path(visit)).content.decode()


def test_a_guest_token_without_an_invite_is_refused(client, visit):
    token = join_token_make(visit=visit, role=ParticipantRole.GUEST, participant_id="g-made-up")
    assert client.get(join_path(token)).status_code == 403


def test_a_guest_invite_of_another_visit_does_not_open_this_one(client, org_a, visit):
    other = make_visit(org_a)
    invite(client, other, "family")
    with tenant_scope(org_a):
        guest = GuestInvite.objects.get(visit=other)
    token = join_token_make(visit=visit, role=ParticipantRole.GUEST, participant_id=guest.participant_id)
    assert client.get(join_path(token)).status_code == 403


def test_invites_stop_at_the_organizations_limit_and_revoking_frees_a_place(client, org_a, visit):
    org_a.max_guests_per_visit = 2
    org_a.save()

    assert invite(client, visit, "clinician").status_code == 302
    assert invite(client, visit, "family").status_code == 302
    refused = invite(client, visit, "interpreter")

    assert refused.status_code == 409
    assert "the most your organization allows (2)" in refused.content.decode()
    with tenant_scope(org_a):
        first = GuestInvite.objects.filter(visit=visit).order_by("pk").first()
    client.post(console_path(visit, "visits:console-revoke"), {"participant_id": first.participant_id})
    assert invite(client, visit, "interpreter").status_code == 302
    with tenant_scope(org_a):
        assert GuestInvite.objects.filter(visit=visit, revoked_at__isnull=True).count() == 2


def test_an_invite_needs_a_known_kind(client, visit):
    response = invite(client, visit, "cousin")
    assert response.status_code == 400
    assert "Choose who to invite" in response.content.decode()


# --- organizations stay apart ----------------------------------------------------------------


def test_a_visit_of_org_b_is_never_reachable_with_org_a_tokens(client, org_a, org_b, visit):
    visit_b = make_visit(org_b)
    client.get(join_path(patient_token(visit_b), "visits:lobby"))
    query_a = urlsplit(console_url_for(visit, CLINICIAN_ID)).query

    for name in ("visits:console", "visits:console-status"):
        assert (
            client.get(f"{reverse(name, kwargs={'public_id': visit_b.public_id})}?{query_a}").status_code
            == 404
        )
    admit_b = reverse("visits:console-admit", kwargs={"public_id": visit_b.public_id})
    assert client.post(f"{admit_b}?{query_a}", {"participant_id": PATIENT_ID}).status_code == 404
    # Org A's console cannot admit org B's waiting patient either, though the participant ID is the same.
    response = client.post(
        console_path(visit, "visits:console-admit"),
        {"participant_id": PATIENT_ID},
        HTTP_ACCEPT="application/json",
    )
    assert response.status_code == 400
    assert [e.kind for e in events(visit_b)] == [EventKind.LOBBY_ENTERED]
    assert events(visit) == []
    # A console token made for a visit of B does not open A's visit, and the other way round.
    query_b = urlsplit(console_url_for(visit_b, CLINICIAN_ID)).query
    path_a = reverse("visits:console", kwargs={"public_id": visit.public_id})
    assert client.get(f"{path_a}?{query_b}").status_code == 404


def test_a_suspended_organizations_links_stop_working(client, org_a, visit):
    org_a.status = "suspended"
    org_a.save()
    assert client.get(join_path(patient_token(visit))).status_code == 404
    assert client.get(console_path(visit)).status_code == 404


# --- the demo meeting page -------------------------------------------------------------------


@pytest.fixture
def demo_group(settings, org_a):
    """Two visits sharing one demo meeting (a group visit)."""
    settings.MEETING_BACKEND = DEMO
    first = make_visit(org_a, conference_id="group-1")
    second = make_visit(org_a, conference_id="group-1")
    from connector.services.visits import meeting_ensure

    with tenant_scope(org_a):
        meeting = meeting_ensure(visit=first)
        assert meeting_ensure(visit=second).pk == meeting.pk
    return first, second, meeting


def demo_url(visit: Visit, role: str, participant_id: str) -> str:
    with tenant_scope(visit.tenant):
        url = join_url_for(visit=visit, role=role, participant_id=participant_id, display_name="Patient")
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def demo_event(client: Client, meeting: Meeting, **body):
    return client.post(
        reverse("visits:demo-meeting-event", kwargs={"meeting_id": meeting.meeting_id}),
        data=json.dumps(body),
        content_type="text/plain;charset=UTF-8",  # what navigator.sendBeacon sends for a string
    )


def test_the_demo_meeting_records_joins_on_every_visit_of_the_meeting(client, demo_group):
    first, second, meeting = demo_group
    url = demo_url(first, ParticipantRole.PATIENT, PATIENT_ID)
    sig = parse_qs(urlsplit(url).query)["sig"][0]
    event_id = str(uuid.uuid4())

    response = demo_event(
        client, meeting, kind="joined", participant_id=PATIENT_ID, role="patient", event_id=event_id, sig=sig
    )
    again = demo_event(
        client, meeting, kind="joined", participant_id=PATIENT_ID, role="patient", event_id=event_id, sig=sig
    )

    assert response.status_code == 202
    assert response.json()["created"] == 2
    assert again.json()["created"] == 0
    for visit in (first, second):
        [joined] = events(visit, EventKind.JOINED)
        assert (joined.participant_id, joined.role, joined.source) == (
            PATIENT_ID,
            "patient",
            EventSource.DEMO,
        )


def test_the_demo_meeting_event_endpoint_rejects_a_bad_signature(client, demo_group):
    first, second, meeting = demo_group
    url = demo_url(first, ParticipantRole.PATIENT, PATIENT_ID)
    sig = parse_qs(urlsplit(url).query)["sig"][0]
    base = {"kind": "joined", "event_id": str(uuid.uuid4())}

    attempts = [
        {**base, "participant_id": PATIENT_ID, "role": "patient", "sig": sig[:-2] + "xx"},
        {**base, "participant_id": PATIENT_ID, "role": "patient"},
        # A valid signature, for someone else or another role:
        {**base, "participant_id": "p-someone-else", "role": "patient", "sig": sig},
        {**base, "participant_id": PATIENT_ID, "role": "clinician", "sig": sig},
    ]
    for body in attempts:
        response = demo_event(client, meeting, **body)
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "bad_signature"
    assert events(first) == [] and events(second) == []


def test_the_demo_meeting_event_endpoint_checks_its_fields(client, demo_group):
    first, _, meeting = demo_group
    sig = parse_qs(urlsplit(demo_url(first, "patient", PATIENT_ID)).query)["sig"][0]
    signed = {"participant_id": PATIENT_ID, "role": "patient", "sig": sig}

    assert (
        demo_event(client, meeting, kind="admitted", event_id=str(uuid.uuid4()), **signed).status_code == 400
    )
    assert demo_event(client, meeting, kind="joined", event_id="1", **signed).status_code == 400
    assert (
        demo_event(client, meeting, kind="joined", event_id=str(uuid.uuid4()), name="x", **signed).status_code
        == 400
    )
    assert events(first) == []


def test_the_demo_meeting_page_needs_its_signed_link(client, demo_group):
    first, _, meeting = demo_group
    url = demo_url(first, ParticipantRole.PATIENT, PATIENT_ID)

    assert client.get(url).status_code == 200
    assert client.get(url.replace("role=patient", "role=clinician")).status_code == 403
    assert client.get(url.split("&sig=")[0]).status_code == 403
    other_meeting = url.replace(meeting.meeting_id, "no-such-meeting")
    assert client.get(other_meeting).status_code == 403  # the signature covers the meeting ID


def test_a_demo_link_for_a_meeting_that_is_gone_is_not_found(client, demo_group):
    first, _, meeting = demo_group
    url = demo_url(first, ParticipantRole.PATIENT, PATIENT_ID)
    with all_tenants():
        Visit.objects.filter(meeting=meeting).update(meeting=None)
        Meeting.objects.filter(pk=meeting.pk).delete()
    assert client.get(url).status_code == 404


def test_the_clinicians_demo_meeting_page_embeds_the_lobby_of_each_visit(client, demo_group):
    first, second, _ = demo_group
    client.get(join_path(patient_token(first), "visits:lobby"))

    clinician = client.get(demo_url(first, ParticipantRole.CLINICIAN, CLINICIAN_ID))
    patient = client.get(demo_url(first, ParticipantRole.PATIENT, PATIENT_ID))

    assert clinician.status_code == 200
    assert "X-Frame-Options" not in clinician.headers
    page = clinician.content.decode()
    assert page.count('class="live-panel"') == 2  # one per visit of the group
    assert "Admit" in page
    assert f"/visit/{first.public_id}/console/status.json?t=" in page
    assert f"/visit/{second.public_id}/console/status.json?t=" in page
    assert 'class="live-panel"' not in patient.content.decode()


def test_the_demo_meeting_status_lists_who_is_connected(client, demo_group):
    first, _, meeting = demo_group
    url = demo_url(first, ParticipantRole.CLINICIAN, CLINICIAN_ID)
    record(first, EventKind.JOINED, ParticipantRole.CLINICIAN, CLINICIAN_ID)
    status = reverse("visits:demo-meeting-status", kwargs={"meeting_id": meeting.meeting_id})

    body = client.get(f"{status}?{urlsplit(url).query}").json()

    assert body["participants"] == [
        {"participant_id": CLINICIAN_ID, "role": "clinician", "label": "Clinician", "you": True}
    ]
    assert client.get(f"{status}?role=clinician&p={CLINICIAN_ID}&sig=nope").status_code == 403


def test_a_revoked_guest_cannot_use_the_demo_meeting(client, demo_group):
    first, _, meeting = demo_group
    invite(client, first, "family")
    with tenant_scope(first.tenant):
        guest = GuestInvite.objects.get(visit=first)
    url = demo_url(first, ParticipantRole.GUEST, guest.participant_id)
    assert client.get(url).status_code == 200

    client.post(console_path(first, "visits:console-revoke"), {"participant_id": guest.participant_id})

    assert client.get(url).status_code == 403


# --- stand-alone device test and ping --------------------------------------------------------


@pytest.fixture
def device_test_record(org_a, visit) -> IntegrationRecord:
    with tenant_scope(org_a):
        return IntegrationRecord.objects.create(
            tenant=org_a,
            endpoint=visit.endpoint,
            kind=RecordKind.DEVICE_TEST_CONFIGURATION,
            config_version=1,
            launch_url=f"{PUBLIC}/device-test",
            context_token="ctx-" + get_random_string(32),
        )


def test_the_device_test_record_opens_the_same_checks_without_storing(client, device_test_record, visit):
    response = client.get(reverse("visits:device-test"), {"token": device_test_record.context_token})

    assert response.status_code == 200
    assert "X-Frame-Options" not in response.headers
    page = response.content.decode()
    assert "Check your camera, microphone and speaker" in page
    assert "data-results-url" not in page
    assert "results stay on this page" in page
    assert events(visit) == []


def test_a_rotated_or_out_of_date_device_test_token_gets_a_clear_404(client, org_a, device_test_record):
    old = device_test_record.context_token
    with tenant_scope(org_a):
        device_test_record.context_token = "ctx-rotated"
        device_test_record.save()

    response = client.get(reverse("visits:device-test"), {"token": old})
    assert response.status_code == 404
    assert "no longer" in response.content.decode()
    assert client.get(reverse("visits:device-test")).status_code == 404

    with tenant_scope(org_a):
        IntegrationRecord.objects.filter(pk=device_test_record.pk).update(out_of_date=True)
    assert client.get(reverse("visits:device-test"), {"token": "ctx-rotated"}).status_code == 404


def test_only_the_device_test_record_token_opens_the_device_test(client, org_a, visit):
    with tenant_scope(org_a):
        IntegrationRecord.objects.create(
            tenant=org_a,
            endpoint=visit.endpoint,
            kind=RecordKind.PATIENT_LAUNCH,
            config_version=1,
            context_token="ctx-of-another-kind",
        )
    assert client.get(reverse("visits:device-test"), {"token": "ctx-of-another-kind"}).status_code == 404


def test_ping_answers_204_and_is_never_cached(client):
    response = client.get("/visit/ping")
    assert response.status_code == 204
    assert "no-cache" in response["Cache-Control"]
    assert "no-store" in response["Cache-Control"]
