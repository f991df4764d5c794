"""Finding a launch's appointment, each step of the documented order, over real HTTP (sandbox EHR).

The `r4-generic` flavor behaves like most EHRs and the third-party peer: the token
carries patient, encounter and fhirUser only. The `r4` flavor sends fhirContext
and Epic-style extras.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from urllib.parse import urlencode

import pytest
import requests
from django.utils import timezone

from connector.models import AppointmentSource, Visit, VisitKey
from connector.sandbox_ehr.models import Launch, Resource
from connector.sandbox_ehr.services import launch_create
from connector.services.visits import visit_get_or_create
from tenants.scoping import tenant_scope
from tests.support.sandbox import sandbox_base
from tests.test_launch import follow_to_connector, link_clinician, usable_endpoint
from tests.test_launch import sandbox as sandbox  # noqa: F401 - the fixture

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def reads(caplog):
    """The number of FHIR requests each launch made, from the launch's log line (no PHI in it)."""
    caplog.set_level(logging.INFO, logger="connector.services.launch")

    def counts() -> list[int]:
        return [
            int(m.group(1))
            for r in caplog.records
            if (m := re.search(r"with (\d+) FHIR requests", r.getMessage()))
        ]

    return counts


def launch_url(live_server, launch: Launch, role: str = "provider", **extra: str) -> str:
    path = "/launch/provider" if role == "provider" else "/launch/patient"
    query = {"iss": sandbox_base(live_server, launch.server), "launch": launch.launch_id, **extra}
    return f"{live_server.url}{path}?{urlencode(query)}"


def press(live_server, appointment="appt-1001", role="provider", flavor="r4-generic", **extra) -> str:
    return launch_url(
        live_server, launch_create(appointment_id=appointment, role=role, server=flavor), role, **extra
    )


def linked(org, user, live_server, flavor="r4-generic"):
    endpoint = usable_endpoint(org, live_server, flavor)
    link_clinician(org, user, f"{endpoint.base_url}/Practitioner/pract-smith")
    return endpoint


def put(server: str, body: dict) -> None:
    Resource.objects.update_or_create(
        server=server, resource_type=body["resourceType"], fhir_id=body["id"], defaults={"body": body}
    )


def test_a_generic_ehr_launch_follows_the_encounter_to_the_appointment_with_two_reads(
    sandbox, org_a, admin_a, reads
):
    endpoint = linked(org_a, admin_a, sandbox)
    response = follow_to_connector(requests.Session(), press(sandbox), sandbox)
    assert response.headers["Location"].startswith("https://meetings.invalid/")
    with tenant_scope(org_a):
        visit = Visit.objects.get()
        keys = set(VisitKey.objects.values_list("key", flat=True))
    assert visit.appointment_id == "appt-1001"
    assert visit.fhir_appointment_id == "appt-1001"
    assert visit.found_by == AppointmentSource.ENCOUNTER
    assert visit.encounter_id == "enc-1001"
    appointment = Resource.objects.get(
        server="r4-generic", resource_type="Appointment", fhir_id="appt-1001"
    ).body
    assert visit.scheduled_start.isoformat() == appointment["start"]
    assert visit.scheduled_end.isoformat() == appointment["end"]
    assert visit.appointment_status == "booked"
    assert visit.participant_count == 3
    assert visit.location_reference == "Location/loc-101"
    assert visit.department_id == "loc-101"  # no vendor department ID: the location fills it for reports
    assert not visit.unscheduled
    assert keys == {"Appointment/appt-1001", "id:90001001", "id:CONF-1001", "Encounter/enc-1001"}
    assert endpoint.tenant == org_a
    assert reads() == [2]


def test_a_relaunch_of_a_known_visit_reads_nothing(sandbox, org_a, admin_a, reads):
    linked(org_a, admin_a, sandbox)
    for _ in range(2):
        follow_to_connector(requests.Session(), press(sandbox), sandbox)
    with tenant_scope(org_a):
        assert Visit.objects.count() == 1
    assert reads() == [2, 0]


def test_fhir_context_with_an_appointment_costs_one_read(sandbox, org_a, admin_a, reads):
    linked(org_a, admin_a, sandbox, flavor="r4")
    follow_to_connector(requests.Session(), press(sandbox, flavor="r4"), sandbox)
    with tenant_scope(org_a):
        visit = Visit.objects.get()
    assert visit.found_by == AppointmentSource.FHIR_CONTEXT
    assert visit.conference_id == "CONF-1001"
    assert visit.scheduled_start is not None
    assert reads() == [1]


def test_a_launch_parameter_the_records_list_finds_the_appointment_by_identifier(
    sandbox, org_a, admin_a, reads
):
    linked(org_a, admin_a, sandbox)
    # The EHR launches appt-1002's context but the record appends appt-1004's CSN: the parameter wins
    # (step 2 comes before the encounter), proving /launch/provider carries it through the launch.
    url = press(sandbox, appointment="appt-1002", conference_id="GROUP-7") + "&csn=90001004"
    follow_to_connector(requests.Session(), url, sandbox)
    with tenant_scope(org_a):
        visit = Visit.objects.get()
    assert visit.found_by == AppointmentSource.LAUNCH_PARAMETER
    assert visit.appointment_id == "appt-1004"
    assert visit.conference_id == "GROUP-7"
    assert reads() == [1]


def test_an_appointment_search_by_patient_and_practitioner_around_now(sandbox, org_a, admin_a, reads):
    linked(org_a, admin_a, sandbox)
    start = timezone.now().replace(microsecond=0)
    put(
        "r4-generic",
        {
            "resourceType": "Appointment",
            "id": "appt-now",
            "status": "booked",
            "start": start.isoformat(),
            "end": (start + timedelta(minutes=20)).isoformat(),
            "participant": [
                {"actor": {"reference": "Patient/pat-alex"}, "status": "accepted"},
                {"actor": {"reference": "Practitioner/pract-smith"}, "status": "accepted"},
            ],
        },
    )
    # No encounter points at it, so the launch carries only the patient.
    follow_to_connector(requests.Session(), press(sandbox, appointment="appt-now"), sandbox)
    with tenant_scope(org_a):
        visit = Visit.objects.get()
    assert visit.found_by == AppointmentSource.SEARCH
    assert visit.appointment_id == "appt-now"
    assert visit.scheduled_start == start
    assert visit.participant_count == 2
    assert reads() == [1]


def _encounter_only_launch(role: str) -> Launch:
    put("r4-generic", {"resourceType": "Patient", "id": "pat-walkin"})
    put(
        "r4-generic",
        {
            "resourceType": "Encounter",
            "id": "enc-walkin",
            "status": "in-progress",
            "class": {"code": "VR"},
            "subject": {"reference": "Patient/pat-walkin"},
            "participant": [{"individual": {"reference": "Practitioner/pract-smith"}}],
            "location": [{"location": {"reference": "Location/loc-303"}}],
        },
    )
    return Launch.objects.create(
        launch_id=f"walkin-{role}",
        server="r4-generic",
        user_reference="Practitioner/pract-smith" if role == "provider" else "Patient/pat-walkin",
        patient_id="pat-walkin",
        encounter_id="enc-walkin",
        expires_at=timezone.now() + timedelta(minutes=5),
    )


def test_no_appointment_anywhere_makes_an_unscheduled_visit_keyed_to_the_encounter(
    sandbox, org_a, admin_a, reads
):
    linked(org_a, admin_a, sandbox)
    follow_to_connector(requests.Session(), launch_url(sandbox, _encounter_only_launch("provider")), sandbox)
    with tenant_scope(org_a):
        visit = Visit.objects.get()
        keys = list(VisitKey.objects.values_list("key", flat=True))
    assert visit.unscheduled and visit.found_by == AppointmentSource.UNSCHEDULED
    assert visit.appointment_id == "encounter:enc-walkin"
    assert visit.location_reference == "Location/loc-303"
    assert keys == ["Encounter/enc-walkin"]
    assert reads() == [2]  # the encounter, then the search around now
    # The patient's launch from the portal lands in the same visit, without reading anything.
    patient = follow_to_connector(
        requests.Session(), launch_url(sandbox, _encounter_only_launch("patient"), role="patient"), sandbox
    )
    assert patient.status_code == 200 and "/join/" in patient.url
    with tenant_scope(org_a):
        assert Visit.objects.count() == 1
    assert reads() == [2, 0]


def test_a_launch_with_neither_appointment_nor_encounter_explains_itself_to_each_reader(
    sandbox, org_a, admin_a
):
    linked(org_a, admin_a, sandbox)
    put("r4-generic", {"resourceType": "Patient", "id": "pat-nothing"})
    for role, user in (("provider", "Practitioner/pract-smith"), ("patient", "Patient/pat-nothing")):
        launch = Launch.objects.create(
            launch_id=f"nothing-{role}",
            server="r4-generic",
            user_reference=user,
            patient_id="pat-nothing",
            expires_at=timezone.now() + timedelta(minutes=5),
        )
        response = follow_to_connector(requests.Session(), launch_url(sandbox, launch, role), sandbox)
        assert response.status_code == 400
        request_id = response.headers["X-Request-ID"]
        assert request_id in response.text
        if role == "provider":
            assert "could not be matched to an appointment" in response.text
            assert "For your EHR or connector administrator" in response.text
            assert "append the appointment" in response.text
        else:
            assert "Your visit could not open" in response.text
            for admin_word in ("integration record", "EHR", "encounter", "launch", "scope", "FHIR"):
                visible = re.sub(r"<[^>]+>", " ", response.text.split("<main>")[1])
                assert admin_word not in visible, admin_word
    with tenant_scope(org_a):
        assert not Visit.objects.exists()


def test_a_patient_cannot_reach_another_patients_appointment_through_the_launch_url(sandbox, org_a):
    usable_endpoint(org_a, sandbox, "r4-generic")
    # pat-alex's launch of appt-1001, with appt-1002's CSN (pat-jordan's) appended by hand.
    url = press(sandbox, appointment="appt-1001", role="patient") + "&csn=90001002"
    follow_to_connector(requests.Session(), url, sandbox)
    with tenant_scope(org_a):
        visit = Visit.objects.get()
    assert visit.appointment_id == "appt-1001"


def test_the_sms_link_and_the_launch_share_one_visit_in_either_order(sandbox, org_a, org_b, admin_a):
    endpoint = linked(org_a, admin_a, sandbox)
    # The feed's appointment ID is the EHR's CSN (an identifier of appt-1001): link first, launch second.
    with tenant_scope(org_a):
        from_sms = visit_get_or_create(endpoint=endpoint, appointment_id="90001001")
    follow_to_connector(requests.Session(), press(sandbox), sandbox)
    # appt-1002: launch first, SMS link second.
    follow_to_connector(requests.Session(), press(sandbox, appointment="appt-1002"), sandbox)
    with tenant_scope(org_a):
        later_sms = visit_get_or_create(endpoint=endpoint, appointment_id="90001002")
        visits = {v.pk: v for v in Visit.objects.all()}
    assert len(visits) == 2
    assert visits[from_sms.pk].fhir_appointment_id == "appt-1001"
    assert visits[from_sms.pk].found_by == AppointmentSource.ENCOUNTER
    assert visits[later_sms.pk].fhir_appointment_id == "appt-1002"
    # Organization B's feed with the same appointment ID gets its own visit.
    endpoint_b = usable_endpoint(org_b, sandbox, "r4-generic")
    with tenant_scope(org_b):
        other = visit_get_or_create(endpoint=endpoint_b, appointment_id="90001001")
        assert Visit.objects.count() == 1
    assert other.pk not in visits
