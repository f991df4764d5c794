"""Visit launches against the third-party SMART peer (smart-launcher-v2 + Medplum), over real HTTP.

The peer sends what most EHRs send (`patient`, `encounter`, `fhirUser`) and no
appointment: the connector must find Appointment/appt1 through Encounter/enc1,
read its schedule, and keep one visit for it whether the clinician launches from
the EHR, the patient from the portal, or the patient follows the SMS link made
from an SIU whose appointment ID is appt1's filler identifier (36996).

The connector is a confidential-asymmetric client here: the peer's launch options
carry `jwks_url` = the live server's /.well-known/jwks.json, which the peer
fetches to check the connector's private_key_jwt. The peer's Medplum keeps writes
across tests, so resources a test adds have ids unique to the run.
"""

from __future__ import annotations

import logging
import re
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
import requests
from django.contrib.auth import get_user_model

from connector.models import AppointmentSource, EndpointStatus, FhirEndpoint, Visit, VisitKey
from connector.services.endpoints import endpoint_create, endpoint_validate
from connector.services.visits import join_token_read
from connector.visits.pages import console_url_for
from tenants.models import Membership, Role
from tenants.scoping import all_tenants, tenant_scope

pytestmark = [pytest.mark.peer, pytest.mark.django_db(transaction=True)]

APPOINTMENT = "appt1"
FILLER_ID = "36996"  # appt1's identifier urn:filler: the ID the HL7 feed knows it by


@pytest.fixture
def origin(settings, live_server) -> str:
    settings.EHR_INSECURE_HOSTS = ["localhost", "127.0.0.1"]
    settings.PUBLIC_BASE_URL = live_server.url
    settings.MEETING_BACKEND = "connector.meetings.demo.DemoMeetingBackend"
    settings.DEMO_SIGN_IN = True
    return live_server.url


@pytest.fixture
def reads(caplog):
    """The number of FHIR requests each launch made, from the launch's log line."""
    caplog.set_level(logging.INFO, logger="connector.services.launch")
    return lambda: [
        int(m.group(1))
        for r in caplog.records
        if (m := re.search(r"with (\d+) FHIR requests", r.getMessage()))
    ]


def jwks_url(origin: str) -> str:
    return f"{origin}/.well-known/jwks.json"


def client_options(origin: str, jwks: str | None = None) -> dict:
    """The peer's options for the connector as a confidential-asymmetric client."""
    return {"client_type": "confidential-asymmetric", "jwks_url": jwks or jwks_url(origin)}


def peer_endpoint(tenant, smart_peer, origin: str, *, jwks: str | None = None) -> FhirEndpoint:
    """The organization's endpoint on the peer, validated (an Epic organization's approval is the
    approval flow's business: here it is granted directly)."""
    with tenant_scope(tenant):
        endpoint = endpoint_validate(
            endpoint=endpoint_create(
                tenant=tenant,
                base_url=smart_peer.sim_base(**client_options(origin, jwks)),
                environment="test",
                label="Peer clinic",
                time_zone="America/Chicago",
            )
        )
        if endpoint.status == EndpointStatus.AWAITING_APPROVAL:
            FhirEndpoint.objects.filter(pk=endpoint.pk).update(status=EndpointStatus.APPROVED)
            endpoint.refresh_from_db()
    assert endpoint.is_usable, endpoint.last_validation
    return endpoint


def launch(smart_peer, origin, endpoint, role="provider", jwks=None, **options) -> str:
    """The URL the EHR's button opens (provider-ehr, or patient-portal for role="patient")."""
    options.setdefault("patient", "p1")
    options.setdefault("encounter", "enc1")
    if role == "patient":
        options.setdefault("launch_type", "patient-portal")
        options.setdefault("provider", "")
    return smart_peer.ehr_launch_url(
        f"{origin}/launch/{role}", iss=endpoint.base_url, **client_options(origin, jwks), **options
    )


def follow(session: requests.Session, url: str, origin: str) -> requests.Response:
    """Follow redirects through the connector and the peer; stop where the connector answers a page."""
    response = session.get(url, allow_redirects=False, timeout=20)
    for _ in range(10):
        if response.status_code not in (301, 302, 303):
            break
        location = response.headers["Location"]
        if location.startswith("/"):
            location = origin + location
        response = session.get(location, allow_redirects=False, timeout=20)
    return response


def sign_in_once(
    session: requests.Session, origin: str, link_page: requests.Response, tenant
) -> requests.Response:
    """The clinician's one-time sign-in at the first launch (the demo sign-in stands in for Microsoft)."""
    assert "One-time sign-in" in link_page.text, link_page.text[:500]
    user = get_user_model().objects.create_user(username=f"demo-peer-clinician-{tenant.pk}")
    with tenant_scope(tenant):
        Membership.objects.create(tenant=tenant, user=user, role=Role.VIEWER)
    page_url = (
        f"{origin}{urlsplit(link_page.url).path}" if link_page.url.startswith(origin) else link_page.url
    )
    signed = session.post(
        f"{origin}/sign-in/demo/",
        data={
            "username": user.username,
            "next": urlsplit(page_url).path,
            "csrfmiddlewaretoken": session.cookies.get("csrftoken"),
        },
        headers={"Referer": page_url},
        allow_redirects=False,
        timeout=20,
    )
    assert signed.status_code == 302, signed.text[:500]
    return follow(session, origin + signed.headers["Location"], origin)


def sms_ready(tenant, endpoint) -> None:
    """SMS consent, an active number and SMS settings for the endpoint, so an SIU schedules texts."""
    from sms.models import NumberState, PhoneNumber, SmsConsent, SmsSettings, TollFreeVerification

    now = datetime.now(UTC)
    with tenant_scope(tenant):
        SmsConsent.objects.create(tenant=tenant, on_behalf_confirmed_at=now, patient_consent_confirmed_at=now)
        number = PhoneNumber.objects.create(
            tenant=tenant,
            number="+18335550199",
            state=NumberState.ACTIVE,
            verification=TollFreeVerification.VERIFIED,
        )
        SmsSettings.objects.create(tenant=tenant, endpoint=endpoint, phone_number=number)


def the_visit(tenant) -> Visit:
    with tenant_scope(tenant):
        return Visit.objects.select_related("endpoint").get()


def visit_of_join_url(url: str) -> str:
    token = urlsplit(url).path.split("/join/", 1)[1].split("/", 1)[0]
    return join_token_read(token)["v"]


def test_the_clinicians_ehr_launch_finds_appt1_through_the_encounter_and_reads_its_schedule(
    smart_peer, origin, org_a, org_b, reads
):
    endpoint = peer_endpoint(org_a, smart_peer, origin)
    session = requests.Session()
    link_page = follow(session, launch(smart_peer, origin, endpoint), origin)
    assert link_page.status_code == 200, link_page.text[:800]
    meeting = sign_in_once(session, origin, link_page, org_a)
    assert meeting.status_code == 200 and "/visit/demo-meeting/" in meeting.url
    visit = the_visit(org_a)
    appointment = smart_peer.read(f"Appointment/{APPOINTMENT}")
    assert visit.appointment_id == APPOINTMENT and visit.fhir_appointment_id == APPOINTMENT
    assert visit.found_by == AppointmentSource.ENCOUNTER and visit.encounter_id == "enc1"
    assert visit.scheduled_start == datetime(2030, 1, 15, 10, 0, tzinfo=UTC)
    assert visit.scheduled_end == datetime(2030, 1, 15, 10, 30, tzinfo=UTC)
    assert visit.appointment_status == appointment["status"]
    assert visit.participant_count == len(appointment["participant"])
    assert not visit.unscheduled
    with tenant_scope(org_a):
        assert set(VisitKey.objects.values_list("key", flat=True)) >= {
            "Appointment/appt1",
            f"id:{FILLER_ID}",
            "Encounter/enc1",
        }
    assert reads() == [2]  # Encounter/enc1, then Appointment/appt1
    # The console shows the schedule in the clinic's time zone (10:00 UTC is 04:00 in Chicago).
    console = requests.get(console_url_for(visit, "c-peer-test"), timeout=20)
    assert "15 Jan 2030, 04:00–04:30 CST" in console.text
    # A relaunch of the same visit reads nothing from FHIR.
    again = follow(requests.Session(), launch(smart_peer, origin, endpoint), origin)
    assert again.status_code == 200
    assert reads() == [2, 0]
    with all_tenants():
        assert Visit.objects.count() == 1
    assert org_b  # organization B has nothing
    with tenant_scope(org_b):
        assert not Visit.objects.exists()


def test_the_patient_portal_launch_and_the_sms_link_land_in_the_clinicians_visit(
    smart_peer, origin, org_a, reads
):
    from sms.hl7.parse import scheduling_parse
    from sms.models import OutboundMessage, SmsSettings
    from sms.services.appointments import appointment_apply
    from sms.services.dispatch import render_body

    endpoint = peer_endpoint(org_a, smart_peer, origin)
    sms_ready(org_a, endpoint)
    # The patient first: the portal launch (patient p1, encounter enc1) finds appt1 and makes the visit.
    patient = follow(requests.Session(), launch(smart_peer, origin, endpoint, role="patient"), origin)
    assert patient.status_code == 200 and "/join/" in patient.url, patient.text[:800]
    visit = the_visit(org_a)
    assert visit_of_join_url(patient.url) == visit.public_id
    assert visit.appointment_id == APPOINTMENT and visit.scheduled_start == datetime(
        2030, 1, 15, 10, tzinfo=UTC
    )
    # The lobby shows the time in the clinic's time zone; the patient reads no EHR wording.
    lobby = requests.get(patient.url.rstrip("/") + "/lobby/", timeout=20)
    assert "15 Jan 2030, 04:00–04:30 CST" in lobby.text
    # Then the scheduling feed: an SIU whose SCH-2 (filler appointment ID) is appt1's 36996.
    siu = (
        "MSH|^~\\&|EHR|CLINIC|CONNECTOR|CLINIC|20291220083015||SIU^S12^SIU_S12|PEER-36996-1|P|2.5.1\r"
        f"SCH||{FILLER_ID}^EHR|||||VIDEO^Video visit||30|MIN|^^30^20300115100000+0000^20300115103000+0000\r"
        "PID|1||MRN1001^^^EHR^MRN||EVERYMAN^ADAM||19800101|M|||||^PRN^CP^^1^415^5550123\r"
        "AIL|1|A|VIRTUAL^^^CLINIC||||20300115100000+0000|||30|MIN\r"
    )
    parsed = scheduling_parse(siu, time_zone="America/Chicago")
    assert parsed.scheduling.external_id == FILLER_ID
    with tenant_scope(org_a):
        appointment_apply(endpoint=endpoint, message=parsed.scheduling)
        message = OutboundMessage.objects.select_related("appointment__endpoint", "tenant").first()
        assert message is not None, "the SIU scheduled no text"
        text = render_body(message, SmsSettings.objects.get(endpoint=endpoint))
        assert Visit.objects.count() == 1
    short = re.search(r"https?://\S+/j/[\w-]{22}", text).group(0)  # the short link of texts
    redirected = requests.get(short, allow_redirects=False, timeout=20)
    assert redirected.status_code == 302
    link = redirected.headers["Location"]
    assert visit_of_join_url(link) == visit.public_id
    # And the clinician's launch joins the same visit too.
    follow(requests.Session(), launch(smart_peer, origin, endpoint), origin)
    with all_tenants():
        assert Visit.objects.count() == 1
    assert reads() == [2, 0]


def test_a_wrong_jwks_is_refused_with_the_cause_for_the_administrator(smart_peer, origin, org_a):
    # The peer checks the connector's assertion against keys that are not the connector's.
    wrong = f"{smart_peer.launcher_url}/keys"
    endpoint = peer_endpoint(org_a, smart_peer, origin, jwks=wrong)
    response = follow(requests.Session(), launch(smart_peer, origin, endpoint, jwks=wrong), origin)
    assert response.status_code == 400
    assert "For your EHR or connector administrator" in response.text
    assert "the EHR said" in response.text
    assert response.headers["X-Request-ID"] in response.text
    with all_tenants():
        assert not Visit.objects.exists()


def test_an_authorization_error_is_told_to_the_clinician_and_hidden_from_the_patient(
    smart_peer, origin, org_a
):
    endpoint = peer_endpoint(org_a, smart_peer, origin)
    clinician = follow(
        requests.Session(), launch(smart_peer, origin, endpoint, auth_error="auth_invalid_scope"), origin
    )
    assert clinician.status_code == 400
    assert "invalid_scope" in clinician.text and "client registration" in clinician.text
    patient = follow(
        requests.Session(),
        launch(smart_peer, origin, endpoint, role="patient", auth_error="auth_invalid_client_id"),
        origin,
    )
    assert patient.status_code == 400
    visible = re.sub(r"<[^>]+>", " ", patient.text.split("<main>")[1])
    assert "Your visit could not open" in visible and patient.headers["X-Request-ID"] in visible
    for admin_word in ("invalid_client", "client", "registration", "EHR", "scope", "integration"):
        assert admin_word not in visible, admin_word


def test_an_unknown_patient_without_an_encounter_gets_no_visit(smart_peer, origin, org_a, reads):
    endpoint = peer_endpoint(org_a, smart_peer, origin)
    nobody = f"nobody-{uuid.uuid4().hex[:12]}"
    response = follow(
        requests.Session(), launch(smart_peer, origin, endpoint, patient=nobody, encounter="NONE"), origin
    )
    assert response.status_code == 400
    assert "could not be matched to an appointment" in response.text
    assert "searching" not in response.text or "Appointment" in response.text
    assert reads() == []  # refused before a visit: no "found" line
    with all_tenants():
        assert not Visit.objects.exists()


def test_no_appointment_anywhere_makes_an_unscheduled_visit_keyed_to_the_encounter(
    smart_peer, origin, org_a, reads
):
    endpoint = peer_endpoint(org_a, smart_peer, origin)
    run = uuid.uuid4().hex[:12]
    patient_id, encounter_id = f"walkin-{run}", f"walkin-enc-{run}"
    smart_peer.put({"resourceType": "Patient", "id": patient_id})
    start = datetime.now(UTC).replace(microsecond=0)
    smart_peer.put(
        {
            "resourceType": "Encounter",
            "id": encounter_id,
            "status": "in-progress",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "VR"},
            "subject": {"reference": f"Patient/{patient_id}"},
            "participant": [{"individual": {"reference": "Practitioner/dr1"}}],
            "period": {"start": start.isoformat().replace("+00:00", "Z")},
        }
    )
    session = requests.Session()
    link_page = follow(
        session, launch(smart_peer, origin, endpoint, patient=patient_id, encounter=encounter_id), origin
    )
    meeting = sign_in_once(session, origin, link_page, org_a)
    assert "/visit/demo-meeting/" in meeting.url
    visit = the_visit(org_a)
    assert visit.unscheduled and visit.found_by == AppointmentSource.UNSCHEDULED
    assert visit.appointment_id == f"encounter:{encounter_id}" and visit.encounter_id == encounter_id
    assert visit.scheduled_start == start and visit.scheduled_end is None
    assert reads() == [2]  # the encounter, then the search around now
    # The patient's portal launch with that encounter joins the same visit.
    patient = follow(
        requests.Session(),
        launch(smart_peer, origin, endpoint, role="patient", patient=patient_id, encounter=encounter_id),
        origin,
    )
    assert visit_of_join_url(patient.url) == visit.public_id
    lobby = requests.get(patient.url.rstrip("/") + "/lobby/", timeout=20)
    assert "Unscheduled visit" in lobby.text
    assert reads() == [2, 0]
    assert timedelta(0) <= datetime.now(UTC) - start < timedelta(minutes=5)
