"""Write-back to the third-party peer's FHIR server (Medplum behind smart-launcher-v2), over real HTTP.

Medplum validates every POST/PUT body against the FHIR R4 definitions, so what
passes here is valid R4. Each test makes its own Patient, Encounter and
Appointment (ids unique to the run: the peer keeps writes across tests) and
reads the result straight from the FHIR server, not through the connector.
The connector gets its backend token from the peer with private_key_jwt, the
peer fetching the connector's keys from the live server's JWKS URL.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from connector.models import FhirEndpoint, Visit, WriteBack
from connector.services.visits import event_record, visit_get_or_create
from connector.tasks import visits_mark_no_show
from connector.write_back_sender import IDENTIFIER_SYSTEM, VIRTUAL_SERVICE_URL, write_back_send
from tenants.scoping import tenant_scope
from tests.test_peer_launch import origin, peer_endpoint  # noqa: F401 - `origin` is a fixture

pytestmark = [pytest.mark.peer, pytest.mark.django_db(transaction=True)]


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@pytest.fixture
def scheduled(smart_peer):
    """A patient, an encounter and its booked appointment on the peer; returns their ids."""
    run = uuid.uuid4().hex[:12]
    ids = {"patient": f"wb-p-{run}", "encounter": f"wb-enc-{run}", "appointment": f"wb-appt-{run}"}
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    smart_peer.put({"resourceType": "Patient", "id": ids["patient"]})
    smart_peer.put(
        {
            "resourceType": "Appointment",
            "id": ids["appointment"],
            "status": "booked",
            "start": _iso(start),
            "end": _iso(start + timedelta(minutes=30)),
            "participant": [
                {"actor": {"reference": f"Patient/{ids['patient']}"}, "status": "accepted"},
                {"actor": {"reference": "Practitioner/dr1"}, "status": "accepted"},
            ],
        }
    )
    smart_peer.put(
        {
            "resourceType": "Encounter",
            "id": ids["encounter"],
            "status": "planned",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "VR"},
            "subject": {"reference": f"Patient/{ids['patient']}"},
            "appointment": [{"reference": f"Appointment/{ids['appointment']}"}],
        }
    )
    ids["start"] = start
    return ids


def writing_endpoint(tenant, smart_peer, origin, **flags) -> FhirEndpoint:  # noqa: F811
    endpoint = peer_endpoint(tenant, smart_peer, origin)
    with tenant_scope(tenant):
        FhirEndpoint.objects.filter(pk=endpoint.pk).update(write_back_enabled=True, **flags)
        endpoint.refresh_from_db()
    return endpoint


def make_visit(endpoint, ids, *, end: datetime | None = None) -> Visit:
    with tenant_scope(endpoint.tenant):
        return visit_get_or_create(
            endpoint=endpoint,
            appointment_id=ids["appointment"],
            encounter_id=ids["encounter"],
            schedule={
                "fhir_appointment_id": ids["appointment"],
                "scheduled_start": ids["start"],
                "scheduled_end": end or ids["start"] + timedelta(minutes=30),
            },
        )


def record(visit, event_id, kind, role, participant, at):
    with tenant_scope(visit.tenant):
        event_record(
            visit=Visit.objects.select_related("endpoint", "tenant").get(pk=visit.pk),
            event_id=f"{visit.public_id}-{event_id}",
            kind=kind,
            role=role,
            participant_id=participant,
            occurred_at=at,
            source="connector",
        )


def errors(tenant) -> dict[str, str]:
    with tenant_scope(tenant):
        return {w.kind: w.last_error for w in WriteBack.objects.exclude(state="sent")}


def test_a_visit_writes_encounter_appointment_status_communications_and_join_link(
    smart_peer,
    origin,  # noqa: F811
    org_a,
    scheduled,
):
    endpoint = writing_endpoint(org_a, smart_peer, origin, write_join_link=True)
    visit = make_visit(endpoint, scheduled)
    appointment = smart_peer.read(f"Appointment/{scheduled['appointment']}")
    # The join link, on the R4 Appointment as the R5 cross-version extension, when the visit was made.
    (service,) = [e for e in appointment.get("extension", []) if e["url"] == VIRTUAL_SERVICE_URL]
    address = {e["url"]: e for e in service["extension"]}["addressUrl"]["valueUrl"]
    assert address.startswith(origin) and "/join/" in address
    assert appointment["status"] == "booked"

    t0 = scheduled["start"] + timedelta(minutes=4)
    record(visit, "1", "joined", "patient", "p-1", t0)
    assert smart_peer.read(f"Appointment/{scheduled['appointment']}")["status"] == "arrived"
    record(visit, "2", "joined", "clinician", "c-1", t0 + timedelta(minutes=1))
    encounter = smart_peer.read(f"Encounter/{scheduled['encounter']}")
    assert encounter["status"] == "in-progress" and "start" in encounter["period"]
    record(visit, "3", "left", "patient", "p-1", t0 + timedelta(minutes=20))
    record(visit, "4", "left", "clinician", "c-1", t0 + timedelta(minutes=21))
    assert errors(org_a) == {}
    encounter = smart_peer.read(f"Encounter/{scheduled['encounter']}")
    assert encounter["status"] == "finished" and encounter["period"]["end"].startswith(
        _iso(t0 + timedelta(minutes=21))[:16]
    )
    assert smart_peer.read(f"Appointment/{scheduled['appointment']}")["status"] == "fulfilled"
    communications = smart_peer.search("Communication", encounter=f"Encounter/{scheduled['encounter']}")
    assert sorted(c["payload"][0]["contentString"] for c in communications) == [
        "Clinician connected to the virtual visit",
        "Clinician disconnected from the virtual visit",
        "Patient connected to the virtual visit",
        "Patient disconnected from the virtual visit",
    ]
    assert {c["subject"]["reference"] for c in communications} == {f"Patient/{scheduled['patient']}"}
    assert all(c["identifier"][0]["system"] == IDENTIFIER_SYSTEM for c in communications)


def test_a_communication_sent_again_is_not_created_twice(smart_peer, origin, org_a, scheduled):  # noqa: F811
    endpoint = writing_endpoint(org_a, smart_peer, origin)
    visit = make_visit(endpoint, scheduled)
    record(visit, "1", "joined", "patient", "p-1", scheduled["start"])
    with tenant_scope(org_a):
        write = WriteBack.objects.get(kind="participant_connected")
        # As if the answer had been lost: the same write goes out again.
        WriteBack.objects.filter(pk=write.pk).update(state="pending", next_attempt_at=timezone.now())
        assert write_back_send(write_back_pk=write.pk) == "sent"
    found = smart_peer.search("Communication", identifier=f"{IDENTIFIER_SYSTEM}|{write.dedupe_key}")
    assert len(found) == 1


def test_nobody_came_makes_the_appointment_a_no_show(smart_peer, origin, org_a, scheduled):  # noqa: F811
    endpoint = writing_endpoint(org_a, smart_peer, origin)
    make_visit(endpoint, scheduled, end=datetime.now(UTC) - timedelta(minutes=1))
    assert visits_mark_no_show() == 1
    assert smart_peer.read(f"Appointment/{scheduled['appointment']}")["status"] == "noshow"
    assert errors(org_a) == {}


def test_a_refused_write_keeps_what_the_ehr_said(smart_peer, origin, org_a, scheduled):  # noqa: F811
    endpoint = writing_endpoint(org_a, smart_peer, origin)
    scheduled["appointment"] = f"missing-{uuid.uuid4().hex[:8]}"
    visit = make_visit(endpoint, scheduled)
    record(visit, "1", "joined", "patient", "p-1", scheduled["start"])
    error = errors(org_a)["appointment_status"]
    assert "GET Appointment failed: the EHR answered HTTP 404" in error
    assert "Not found" in error  # Medplum's OperationOutcome text


def test_an_oracle_health_organization_gets_its_video_visit_links_patched(
    smart_peer,
    origin,  # noqa: F811
    org_b,
    scheduled,
):
    # Oracle Health keeps a video visit's links in the Appointment's `contained` (0: the provider's,
    # 1: the patient's) and takes them by JSON Patch; Medplum applies the same JSON Patch.
    endpoint_ = {"resourceType": "Endpoint", "status": "active", "payloadType": [{"text": "video visit"}]}
    appointment = smart_peer.read(f"Appointment/{scheduled['appointment']}")
    appointment["contained"] = [
        {
            **endpoint_,
            "id": "provider",
            "connectionType": {"code": "video"},
            "address": "https://old.invalid/p",
        },
        {
            **endpoint_,
            "id": "patient",
            "connectionType": {"code": "video"},
            "address": "https://old.invalid/q",
        },
    ]
    smart_peer.put(appointment)
    endpoint = writing_endpoint(org_b, smart_peer, origin, write_join_link=True)
    make_visit(endpoint, scheduled)
    assert errors(org_b) == {}
    contained = smart_peer.read(f"Appointment/{scheduled['appointment']}")["contained"]
    assert contained[0]["address"] == f"{origin}/launch/provider"
    assert contained[1]["address"].startswith(f"{origin}/join/")
    assert "extension" not in smart_peer.read(f"Appointment/{scheduled['appointment']}")
