"""Visits in the API: list, detail, events, the organization's feed, live status and actions."""

from __future__ import annotations

import hashlib
import threading
import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from connector.api.throttles import ApiRateThrottle
from connector.models import (
    EndpointStatus,
    EventKind,
    FhirEndpoint,
    GuestInvite,
    IdempotentRequest,
    ParticipantRole,
    Visit,
    VisitEvent,
    WriteBack,
)
from connector.services.participants import participant_admit
from connector.services.visits import event_record, participant_id_for, visit_get_or_create
from connector.visits import selectors
from tenants.scoping import all_tenants, tenant_scope
from tests.conftest import ORG_A_TID, ORG_B_TID, make_member

pytestmark = pytest.mark.django_db

A = f"/api/v1/tenants/{ORG_A_TID}"
B = f"/api/v1/tenants/{ORG_B_TID}"
NOW = timezone.now().replace(microsecond=0)
CLINICIAN_FHIR_USER = "https://fhir.example.org/R4/Practitioner/77"


def endpoint_for(tenant, environment="production", label="Main") -> FhirEndpoint:
    with tenant_scope(tenant):
        endpoint, _ = FhirEndpoint.objects.get_or_create(
            tenant=tenant,
            base_url=f"https://fhir.{tenant.pk}.{environment}.{label.lower()}.example.org/R4",
            defaults={
                "environment": environment,
                "label": label,
                "status": EndpointStatus.APPROVED,
                "time_zone": "America/Chicago",
            },
        )
    return endpoint


def make_visit(
    tenant, appointment, start=None, department="CARDIO", environment="production", **fields
) -> Visit:
    endpoint = endpoint_for(tenant, environment)
    start = start or NOW + timedelta(hours=1)
    with tenant_scope(tenant):
        visit = visit_get_or_create(
            endpoint=endpoint,
            appointment_id=appointment,
            department_id=department,
            encounter_id=f"enc-{appointment}",
            scheduled_start=start,
            scheduled_end=start + timedelta(minutes=30),
        )
        if fields:
            Visit.objects.filter(pk=visit.pk).update(**fields)
            visit.refresh_from_db()
    return visit


def record(visit, kind, role, participant, minutes=0, data=None):
    with tenant_scope(visit.tenant):
        return event_record(
            visit=visit,
            event_id=f"t:{uuid.uuid4()}",
            kind=kind,
            role=role,
            participant_id=participant,
            occurred_at=NOW - timedelta(minutes=30) + timedelta(minutes=minutes),
            source="connector",
            data=data,
        )[0]


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error", "request_id"}
    return body["error"]


# --- list -----------------------------------------------------------------------------------------


def test_a_read_only_token_lists_the_organizations_visits_without_names_or_phone_numbers(org_a, token_client):
    make_visit(org_a, "A-1")
    make_visit(org_a, "A-2")
    response = token_client(org_a, "read").get(f"{A}/visits/")
    assert response.status_code == 200
    rows = response.json()["results"]
    assert {row["appointment_id"] for row in rows} == {"A-1", "A-2"}
    row = rows[0]
    assert row["state"] == "scheduled"
    assert row["environment"] == "production"
    assert row["time_zone"] == "America/Chicago"
    text = response.content.decode().lower()
    assert "phone" not in text and "name" not in text


def test_the_date_range_is_read_in_the_given_time_zone(org_a, token_client):
    chicago = ZoneInfo("America/Chicago")
    # 23:30 in Chicago on 3 March is 05:30 UTC on 4 March.
    late = datetime(2026, 3, 3, 23, 30, tzinfo=chicago)
    make_visit(org_a, "LATE", start=late)
    make_visit(org_a, "NEXT", start=datetime(2026, 3, 4, 12, 0, tzinfo=chicago))
    client = token_client(org_a)
    local = client.get(f"{A}/visits/", {"from": "2026-03-03", "to": "2026-03-03", "tz": "America/Chicago"})
    assert [r["appointment_id"] for r in local.json()["results"]] == ["LATE"]
    utc = client.get(f"{A}/visits/", {"from": "2026-03-04", "to": "2026-03-04", "tz": "UTC"})
    assert [r["appointment_id"] for r in utc.json()["results"]] == ["LATE", "NEXT"]


def test_visits_are_filtered_by_state_including_waiting(org_a, token_client):
    scheduled = make_visit(org_a, "S")
    waiting = make_visit(org_a, "W")
    record(waiting, EventKind.LOBBY_ENTERED, ParticipantRole.PATIENT, "p-w")
    started = make_visit(org_a, "I")
    record(started, EventKind.JOINED, ParticipantRole.CLINICIAN, "c-i")
    record(started, EventKind.JOINED, ParticipantRole.PATIENT, "p-i", minutes=1)
    make_visit(org_a, "N", start=NOW - timedelta(days=1))  # created after its end: no show on recompute
    missed = make_visit(org_a, "N2", start=NOW - timedelta(days=1), state="no_show")
    client = token_client(org_a)

    def ids(state):
        return {r["appointment_id"] for r in client.get(f"{A}/visits/", {"state": state}).json()["results"]}

    assert ids("scheduled") == {scheduled.appointment_id, "N"}
    assert ids("waiting") == {"W"}
    assert ids("in_progress") == {"I"}
    assert ids("no_show") == {missed.appointment_id}
    assert ids("completed") == set()
    detail = client.get(f"{A}/visits/{waiting.public_id}/").json()
    assert detail["state"] == "waiting"


def test_visits_are_filtered_by_environment_department_and_endpoint(org_a, token_client):
    make_visit(org_a, "P", department="CARDIO")
    make_visit(org_a, "D", department="DERM")
    test_visit = make_visit(org_a, "T", environment="test")
    client = token_client(org_a)

    def ids(**params):
        return {r["appointment_id"] for r in client.get(f"{A}/visits/", params).json()["results"]}

    assert ids(environment="test") == {"T"}
    assert ids(department="DERM") == {"D"}
    assert ids(endpoint=test_visit.endpoint_id) == {"T"}
    assert ids(environment="production", department="CARDIO") == {"P"}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"tz": "Mars/Olympus"}, "tz"),
        ({"from": "yesterday"}, "from"),
        ({"from": "2026-03-05", "to": "2026-03-01"}, "to"),
        ({"state": "asleep"}, "state"),
        ({"ordering": "name"}, "ordering"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"endpoint": "x"}, "endpoint"),
    ],
)
def test_bad_list_parameters_get_a_400_naming_the_field(org_a, token_client, params, field):
    error = error_of(token_client(org_a).get(f"{A}/visits/", params), 400)
    assert error["code"] == "invalid"
    assert field in error["fields"]


def test_the_cursor_walks_every_visit_once_in_order_even_with_equal_times(org_a, token_client):
    for n in range(7):
        make_visit(org_a, f"C-{n}", start=NOW + timedelta(hours=n // 2))  # pairs share a start
    client = token_client(org_a)
    seen, url = [], f"{A}/visits/?page_size=2&ordering=-time"
    while url:
        page = client.get(url).json()
        seen += [r["appointment_id"] for r in page["results"]]
        url = page["next"]
    assert sorted(seen) == sorted(f"C-{n}" for n in range(7))
    assert len(seen) == 7
    starts = [int(s.split("-")[1]) // 2 for s in seen]
    assert starts == sorted(starts, reverse=True)


def test_the_list_costs_the_same_number_of_queries_for_many_visits(org_a, token_client):
    client = token_client(org_a)
    make_visit(org_a, "Q-0")
    client.get(f"{A}/visits/")  # the token's first use is recorded once
    with CaptureQueriesContext(connection) as few:
        assert client.get(f"{A}/visits/").status_code == 200
    for n in range(1, 30):
        make_visit(org_a, f"Q-{n}")
    with CaptureQueriesContext(connection) as many:
        assert len(client.get(f"{A}/visits/").json()["results"]) == 30
    assert len(many) == len(few)


# --- detail ---------------------------------------------------------------------------------------


def test_the_detail_has_participants_by_role_device_tests_and_write_back(org_a, token_client):
    visit = make_visit(org_a, "DET", primary_clinician_ehr_id=CLINICIAN_FHIR_USER)
    clinician = participant_id_for(ParticipantRole.CLINICIAN, CLINICIAN_FHIR_USER)
    record(
        visit, EventKind.DEVICE_TEST, ParticipantRole.PATIENT, "p-1", 0, {"camera": "ok", "connection_ms": 80}
    )
    record(visit, EventKind.LOBBY_ENTERED, ParticipantRole.PATIENT, "p-1", 1)
    record(visit, EventKind.JOINED, ParticipantRole.CLINICIAN, clinician, 3)
    record(visit, EventKind.ADMITTED, ParticipantRole.PATIENT, "p-1", 4)
    record(visit, EventKind.JOINED, ParticipantRole.PATIENT, "p-1", 4)
    record(visit, EventKind.LEFT, ParticipantRole.PATIENT, "p-1", 10)
    record(visit, EventKind.LEFT, ParticipantRole.CLINICIAN, clinician, 11)
    with tenant_scope(org_a):
        WriteBack.objects.create(
            tenant=org_a, visit=visit, kind="visit_ended", dedupe_key="x", state="failed"
        )
    body = token_client(org_a).get(f"{A}/visits/{visit.public_id}/").json()
    assert body["state"] == "completed"
    assert body["lobby_wait_seconds"] == 180
    by_id = {p["participant_id"]: p for p in body["participants"]}
    assert by_id[clinician]["role"] == "clinician"
    assert by_id[clinician]["ehr_user_id"] == CLINICIAN_FHIR_USER
    assert by_id["p-1"]["ehr_user_id"] == ""
    assert by_id["p-1"]["lobby_entered_at"] is not None
    assert len(by_id["p-1"]["sessions"]) == 1 and by_id["p-1"]["sessions"][0]["left_at"] is not None
    assert body["device_tests"] == [
        {
            "participant_id": "p-1",
            "role": "patient",
            "tested_at": body["device_tests"][0]["tested_at"],
            "result": {"camera": "ok", "connection_ms": 80},
        }
    ]
    assert body["write_back"]["counts"]["failed"] == 1
    assert body["appointment_id"] == "DET" and body["encounter_id"] == "enc-DET"


# --- isolation ------------------------------------------------------------------------------------


def test_organization_b_sees_nothing_of_organization_a(org_a, org_b, token_client):
    visit = make_visit(org_a, "SECRET")
    record(visit, EventKind.LOBBY_ENTERED, ParticipantRole.PATIENT, "p-a")
    make_visit(org_b, "B-1")
    b_client = token_client(org_b, "read_write")
    for path in ("visits/", f"visits/{visit.public_id}/", "visit-events/", "live-status/"):
        error_of(b_client.get(f"{A}/{path}"), 404)
    # Under its own organization, B's token does not reach A's visit either.
    error_of(b_client.get(f"{B}/visits/{visit.public_id}/"), 404)
    error_of(b_client.post(f"{B}/visits/{visit.public_id}/admit/", {"participant_id": "p-a"}), 404)
    assert [r["appointment_id"] for r in b_client.get(f"{B}/visits/").json()["results"]] == ["B-1"]
    assert b_client.get(f"{B}/visit-events/").json()["results"] == []
    assert b_client.get(f"{B}/live-status/").json()["visits"] == []


def test_a_viewer_reads_visits_but_may_not_act(org_a, api_as):
    viewer = make_member(org_a, "vera-viewer", "viewer")
    visit = make_visit(org_a, "V")
    client = api_as(viewer)
    assert client.get(f"{A}/visits/").status_code == 200
    error = error_of(client.post(f"{A}/visits/{visit.public_id}/end/"), 403)
    assert error["code"] == "permission_denied"


# --- events and the feed --------------------------------------------------------------------------


def test_a_visits_events_come_in_feed_order_with_a_since_cursor(org_a, token_client):
    visit = make_visit(org_a, "EV")
    other = make_visit(org_a, "OTHER")
    for minute in range(5):
        record(visit, EventKind.JOINED if minute % 2 == 0 else EventKind.LEFT, "patient", "p", minute)
    record(other, EventKind.JOINED, "patient", "q")
    client = token_client(org_a)
    first = client.get(f"{A}/visits/{visit.public_id}/events/", {"limit": 3}).json()
    assert len(first["results"]) == 3 and first["has_more"] is True
    rest = client.get(f"{A}/visits/{visit.public_id}/events/", {"since": first["next_since"]}).json()
    assert len(rest["results"]) == 2 and rest["has_more"] is False
    seqs = [e["seq"] for e in first["results"] + rest["results"]]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    assert {e["visit"] for e in first["results"] + rest["results"]} == {visit.public_id}
    error_of(client.get(f"{A}/visit-events/", {"since": "-1"}), 400)
    error_of(client.get(f"{A}/visit-events/", {"limit": "5000"}), 400)


def test_the_feed_numbers_each_organization_on_its_own(org_a, org_b, token_client):
    record(make_visit(org_a, "A"), EventKind.JOINED, "patient", "p")
    record(make_visit(org_b, "B"), EventKind.JOINED, "patient", "p")
    record(make_visit(org_a, "A2"), EventKind.JOINED, "patient", "p")
    a = token_client(org_a).get(f"{A}/visit-events/").json()
    b = token_client(org_b).get(f"{B}/visit-events/").json()
    assert [e["seq"] for e in a["results"]] == [1, 2]
    assert [e["seq"] for e in b["results"]] == [1]
    assert token_client(org_a).get(f"{A}/visit-events/", {"since": 2}).json() == {
        "results": [],
        "next_since": 2,
        "has_more": False,
    }


@pytest.mark.django_db(transaction=True)
def test_the_feed_never_skips_or_repeats_an_event_while_many_write_at_once(org_a, token_client):
    """Writers in parallel threads (their own connections) while a reader follows the feed."""
    visits = [make_visit(org_a, f"CC-{n}") for n in range(4)]
    client = token_client(org_a)
    per_writer = 15
    done = threading.Event()
    errors: list[BaseException] = []

    def write(visit):
        try:
            for n in range(per_writer):
                record(visit, EventKind.JOINED if n % 2 == 0 else EventKind.LEFT, "guest", f"g-{n}", n)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)
        finally:
            connection.close()

    writers = [threading.Thread(target=write, args=(visit,)) for visit in visits]
    for thread in writers:
        thread.start()
    seen: list[int] = []
    since = 0
    while True:
        finished = not any(t.is_alive() for t in writers)
        page = client.get(f"{A}/visit-events/", {"since": since, "limit": 7}).json()
        seen += [e["seq"] for e in page["results"]]
        since = page["next_since"]
        if finished and not page["has_more"]:
            break
    done.set()
    for thread in writers:
        thread.join()
    assert not errors
    with all_tenants():
        stored = sorted(VisitEvent.objects.filter(tenant=org_a).values_list("seq", flat=True))
    assert len(stored) == 4 * per_writer
    assert seen == stored  # every event once, in order, none missed by the reader


# --- live status ----------------------------------------------------------------------------------


def test_live_status_shows_who_waits_in_which_lobby_and_answers_304_without_recomputing(
    org_a, token_client, monkeypatch
):
    waiting = make_visit(org_a, "L-W", department="DERM")
    record(waiting, EventKind.LOBBY_ENTERED, ParticipantRole.PATIENT, "p-w")
    going = make_visit(org_a, "L-G")
    record(going, EventKind.JOINED, ParticipantRole.CLINICIAN, "c-g")
    record(going, EventKind.JOINED, ParticipantRole.PATIENT, "p-g", 1)
    make_visit(org_a, "L-NOBODY")
    late = make_visit(org_a, "L-LATE", start=NOW - timedelta(hours=2))  # past its end: a no-show
    record(late, EventKind.LOBBY_ENTERED, ParticipantRole.PATIENT, "p-late", 25)
    client = token_client(org_a)
    first = client.get(f"{A}/live-status/")
    assert first.status_code == 200
    body = first.json()
    by_id = {v["id"]: v for v in body["visits"]}
    assert set(by_id) == {waiting.public_id, going.public_id, late.public_id}
    assert by_id[waiting.public_id]["state"] == "waiting"
    assert by_id[late.public_id]["state"] == "no_show"  # still shown: the patient is waiting
    assert [p["participant_id"] for p in by_id[waiting.public_id]["in_lobby"]] == ["p-w"]
    assert {p["participant_id"] for p in by_id[going.public_id]["connected"]} == {"c-g", "p-g"}
    assert body["waiting"] == 2 and body["connected"] == 2
    etag = first["ETag"]

    def must_not_run():
        raise AssertionError("the body was computed for a 304")

    monkeypatch.setattr(selectors, "live_status", must_not_run)
    with CaptureQueriesContext(connection) as queries:
        again = client.get(f"{A}/live-status/", HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 304
    assert again["ETag"] == etag and again.content == b""
    assert len(queries) <= 4  # the token, the organization, the version (and the token's last use)
    monkeypatch.undo()

    with tenant_scope(org_a):
        participant_admit(visit=waiting, participant_id="p-w")
    changed = client.get(f"{A}/live-status/", HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200 and changed["ETag"] != etag
    assert changed.json()["waiting"] == 1


# --- actions --------------------------------------------------------------------------------------


def test_a_lobby_waiter_marked_as_left_is_no_longer_waiting_on_the_wall_board(org_a, token_client):
    visit = make_visit(org_a, "L-GONE")
    record(visit, EventKind.LOBBY_ENTERED, ParticipantRole.PATIENT, "p-gone")
    # Their page went silent (connector/services/presence.py): a departure from the lobby.
    record(
        visit,
        EventKind.LEFT,
        ParticipantRole.PATIENT,
        "p-gone",
        1,
        data={"reason": "heartbeat_stopped", "from": "lobby"},
    )
    body = token_client(org_a).get(f"{A}/live-status/").json()
    assert body["waiting"] == 0
    assert all(not entry["in_lobby"] for entry in body["visits"])


def test_a_read_write_token_admits_a_waiting_patient_and_a_read_only_token_may_not(org_a, token_client):
    visit = make_visit(org_a, "ADM")
    record(visit, EventKind.LOBBY_ENTERED, ParticipantRole.PATIENT, "p-1")
    path = f"{A}/visits/{visit.public_id}/admit/"
    error = error_of(token_client(org_a, "read").post(path, {"participant_id": "p-1"}, format="json"), 403)
    assert "read-only" in error["message"]
    response = token_client(org_a, "read_write").post(path, {"participant_id": "p-1"}, format="json")
    assert response.status_code == 200
    assert response.json()["admitted"] == "p-1" and response.json()["created"] is True
    with tenant_scope(org_a):
        assert VisitEvent.objects.filter(visit=visit, kind=EventKind.ADMITTED).count() == 1
    nobody = token_client(org_a, "read_write").post(path, {"participant_id": "p-404"}, format="json")
    assert error_of(nobody, 409)["fields"] == {
        "participant_id": ["This participant is not waiting in this visit's lobby; read live-status again."]
    }
    error_of(token_client(org_a, "read_write").post(path, {}, format="json"), 400)


def test_ending_a_visit_disconnects_everyone_once_and_completes_it(org_a, token_client):
    visit = make_visit(org_a, "END")
    client = token_client(org_a, "read_write")
    path = f"{A}/visits/{visit.public_id}/end/"
    assert error_of(client.post(path), 409)["fields"]["visit"]
    record(visit, EventKind.JOINED, ParticipantRole.CLINICIAN, "c-1")
    record(visit, EventKind.JOINED, ParticipantRole.PATIENT, "p-1", 1)
    ended = client.post(path).json()
    assert ended["departures_recorded"] == 2
    assert ended["visit"]["state"] == "completed"
    again = client.post(path).json()
    assert again["departures_recorded"] == 0 and again["visit"]["state"] == "completed"
    error_of(token_client(org_a, "read").post(path), 403)


def test_the_clinicians_console_ends_a_visit_with_the_same_service(org_a, client):
    from django.urls import reverse

    from connector.visits.pages.console import console_token_make

    visit = make_visit(org_a, "CONSOLE-END")
    path = reverse("visits:console-end", kwargs={"public_id": visit.public_id})
    token = console_token_make(visit=visit, participant_id="c-1")
    refused = client.post(f"{path}?t={token}")
    assert refused.status_code == 409
    assert "nothing to end" in refused.content.decode()
    record(visit, EventKind.JOINED, ParticipantRole.CLINICIAN, "c-1")
    record(visit, EventKind.JOINED, ParticipantRole.PATIENT, "p-1", 1)
    console = reverse("visits:console", kwargs={"public_id": visit.public_id})
    assert 'id="end-form"' in client.get(f"{console}?t={token}").content.decode()
    assert client.post(f"{path}?t={token}").status_code == 302
    with tenant_scope(org_a):
        visit.refresh_from_db()
        assert visit.state == "completed"
        assert VisitEvent.objects.filter(visit=visit, kind=EventKind.LEFT).count() == 2
    assert 'id="end-form"' not in client.get(f"{console}?t={token}").content.decode()


def test_guest_links_are_created_listed_and_revoked_within_the_limit(org_a, token_client):
    org_a.max_guests_per_visit = 1
    org_a.save(update_fields=["max_guests_per_visit"])
    visit = make_visit(org_a, "GL")
    client = token_client(org_a, "read_write")
    path = f"{A}/visits/{visit.public_id}/guest-links/"
    created = client.post(path, {"kind": "interpreter"}, format="json")
    assert created.status_code == 201
    link = created.json()
    assert link["kind"] == "interpreter" and "/join/" in link["link"]
    over = error_of(client.post(path, {"kind": "family"}, format="json"), 409)
    assert "most your organization allows" in over["message"]
    error_of(client.post(path, {"kind": "cousin"}, format="json"), 400)
    listed = token_client(org_a, "read").get(path).json()["results"]
    assert [g["participant_id"] for g in listed] == [link["participant_id"]]
    assert "link" not in listed[0]
    error_of(token_client(org_a, "read").post(f"{path}{link['participant_id']}/revoke/"), 403)
    revoked = client.post(f"{path}{link['participant_id']}/revoke/")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    error_of(client.post(f"{path}g-nobody/revoke/"), 404)
    assert (
        client.post(path, {"kind": "family"}, format="json").status_code == 201
    )  # the revoked one freed a place


def test_no_guest_link_for_a_visit_that_has_ended(org_a, token_client, client):
    visit = make_visit(org_a, "GL-OVER")
    with tenant_scope(org_a):
        Visit.objects.filter(pk=visit.pk).update(started_at=NOW, ended_at=NOW + timedelta(minutes=20))
    refused = error_of(
        token_client(org_a, "read_write").post(
            f"{A}/visits/{visit.public_id}/guest-links/", {"kind": "family"}, format="json"
        ),
        409,
    )
    assert "has ended" in refused["message"]
    with tenant_scope(org_a):
        assert not visit.invites.exists()


# --- idempotency and rate limits ------------------------------------------------------------------


def test_the_same_idempotency_key_and_body_give_the_same_answer_and_one_guest_link(org_a, token_client):
    visit = make_visit(org_a, "IDEM")
    client = token_client(org_a, "read_write")
    path = f"{A}/visits/{visit.public_id}/guest-links/"
    first = client.post(path, {"kind": "family"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    second = client.post(path, {"kind": "family"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert second["Idempotent-Replayed"] == "true"
    with tenant_scope(org_a):
        assert GuestInvite.objects.filter(visit=visit).count() == 1
    reused = error_of(
        client.post(path, {"kind": "interpreter"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1"), 422
    )
    assert reused["code"] == "idempotency_key_reused"
    # Another token's key space is its own.
    other = token_client(org_a, "read_write").post(
        path, {"kind": "family"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1"
    )
    assert other.status_code == 201 and other.json()["participant_id"] != first.json()["participant_id"]


def test_a_failed_request_releases_its_idempotency_key(org_a, token_client):
    visit = make_visit(org_a, "IDEM2")
    client = token_client(org_a, "read_write")
    path = f"{A}/visits/{visit.public_id}/admit/"
    refused = client.post(path, {"participant_id": "p-1"}, format="json", HTTP_IDEMPOTENCY_KEY="k-2")
    assert refused.status_code == 409
    record(visit, EventKind.LOBBY_ENTERED, ParticipantRole.PATIENT, "p-1")
    admitted = client.post(path, {"participant_id": "p-1"}, format="json", HTTP_IDEMPOTENCY_KEY="k-2")
    assert admitted.status_code == 200
    with tenant_scope(org_a):
        assert IdempotentRequest.objects.get(key="k-2").status_code == 200


def test_a_retry_while_the_first_request_still_runs_gets_409(org_a, token_client):
    visit = make_visit(org_a, "IDEM3")
    client = token_client(org_a, "read_write")
    path = f"{A}/visits/{visit.public_id}/end/"
    digest = hashlib.sha256(f"POST\n{path}\n{{}}".encode()).hexdigest()  # method, path, empty body
    with tenant_scope(org_a):
        IdempotentRequest.objects.create(
            tenant=org_a, caller=f"token:{client.issued.token.pk}", key="k-3", request_digest=digest
        )
    assert error_of(client.post(path, HTTP_IDEMPOTENCY_KEY="k-3"), 409)["code"] == "idempotency_key_in_use"
    error_of(client.post(path, HTTP_IDEMPOTENCY_KEY="x" * 300), 400)


def test_stored_answers_are_forgotten_after_a_day(org_a, token_client):
    from connector.tasks import idempotent_requests_purge

    visit = make_visit(org_a, "IDEM4")
    client = token_client(org_a, "read_write")
    path = f"{A}/visits/{visit.public_id}/guest-links/"
    client.post(path, {"kind": "family"}, format="json", HTTP_IDEMPOTENCY_KEY="k-4")
    assert idempotent_requests_purge() == 0
    with tenant_scope(org_a):
        IdempotentRequest.objects.update(created_at=timezone.now() - timedelta(hours=25))
    assert idempotent_requests_purge() == 1


def test_creating_an_endpoint_twice_with_one_idempotency_key_makes_one(org_a, token_client, monkeypatch):
    monkeypatch.setattr("connector.background.async_task", lambda *args, **kwargs: None)  # no validation run
    client = token_client(org_a, "read_write")
    body = {"base_url": "https://fhir.example.org/R4/", "environment": "test", "label": "Main"}
    first = client.post(f"{A}/endpoints/", body, format="json", HTTP_IDEMPOTENCY_KEY="e-1")
    again = client.post(f"{A}/endpoints/", body, format="json", HTTP_IDEMPOTENCY_KEY="e-1")
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    with tenant_scope(org_a):
        assert FhirEndpoint.objects.count() == 1


def test_too_many_calls_get_429_with_retry_after(org_a, token_client, monkeypatch):
    monkeypatch.setitem(ApiRateThrottle.THROTTLE_RATES, "api", "2/hour")
    client = token_client(org_a)
    assert [client.get(f"{A}/live-status/").status_code for _ in range(2)] == [200, 200]
    refused = client.get(f"{A}/live-status/")
    assert error_of(refused, 429)["code"] == "rate_limited"
    assert int(refused["Retry-After"]) > 0
