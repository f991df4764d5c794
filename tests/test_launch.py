"""Provider and patient launches over real HTTP against the sandbox EHR (live_server).

A requests.Session plays the browser inside the EHR: it presses the sandbox's
launch (sandbox_ehr.services.launch_create), follows the connector's redirect to
the sandbox's authorize endpoint and back to the connector's callback. The
connector exchanges the code with private_key_jwt, which the sandbox checks
against the connector's /.well-known/jwks.json, all over HTTP.
"""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

import pytest
import requests

from connector.meetings import locmem
from connector.models import ClinicianLink, EndpointStatus, FhirEndpoint, LaunchState, Meeting, Visit
from connector.sandbox_ehr.services import launch_create
from connector.services.endpoints import endpoint_create, endpoint_validate
from tenants.scoping import all_tenants, tenant_scope
from tests.support.sandbox import enable_sandbox, sandbox_base

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sandbox(settings, live_server):
    enable_sandbox(settings, live_server)
    settings.MEETING_BACKEND = "connector.meetings.locmem.LocmemMeetingBackend"
    locmem.reset()
    return live_server


def usable_endpoint(tenant, live_server, flavor="r4", environment="test") -> FhirEndpoint:
    with tenant_scope(tenant):
        endpoint = endpoint_create(
            tenant=tenant, base_url=sandbox_base(live_server, flavor), environment=environment, label="Main"
        )
        endpoint = endpoint_validate(endpoint=endpoint)
        if endpoint.status == EndpointStatus.AWAITING_APPROVAL:
            FhirEndpoint.objects.filter(pk=endpoint.pk).update(status=EndpointStatus.APPROVED)
            endpoint.refresh_from_db()
    assert endpoint.is_usable
    return endpoint


def link_clinician(tenant, user, fhir_user: str) -> None:
    with tenant_scope(tenant):
        ClinicianLink.objects.create(tenant=tenant, user=user, environment="test", fhir_user=fhir_user)


def press_launch(live_server, appointment="appt-1001", role="provider", flavor="r4") -> str:
    launch = launch_create(appointment_id=appointment, role=role, server=flavor)
    path = "/launch/provider" if role == "provider" else "/launch/patient"
    return f"{live_server.url}{path}?" + urlencode(
        {"iss": sandbox_base(live_server, flavor), "launch": launch.launch_id}
    )


def follow_to_connector(session: requests.Session, url: str, live_server) -> requests.Response:
    """Follow redirects while they stay on the connector or the sandbox; stop at the meeting."""
    response = session.get(url, allow_redirects=False, timeout=15)
    hops = 0
    while response.status_code in (301, 302, 303) and hops < 10:
        location = response.headers["Location"]
        if location.startswith("/"):
            location = live_server.url + location
        if not location.startswith(live_server.url):
            return response  # left for the meeting provider
        response = session.get(location, allow_redirects=False, timeout=15)
        hops += 1
    return response


def test_a_linked_clinician_launches_into_the_meeting_as_organizer(sandbox, org_a, admin_a):
    endpoint = usable_endpoint(org_a, sandbox)
    fhir_user = f"{endpoint.base_url}/Practitioner/pract-smith"
    link_clinician(org_a, admin_a, fhir_user)
    session = requests.Session()
    first = session.get(press_launch(sandbox), allow_redirects=False, timeout=15)
    assert first.status_code == 302
    authorize = first.headers["Location"]
    assert "code_challenge_method=S256" in authorize and "launch=" in authorize
    assert f"aud={requests.utils.quote(endpoint.base_url, safe='')}" in authorize

    final = follow_to_connector(session, press_launch(sandbox), sandbox)
    assert final.status_code == 302
    join = final.headers["Location"]
    assert join.startswith("https://meetings.invalid/locmem-1")
    assert "role=clinician" in join
    with tenant_scope(org_a):
        visit = Visit.objects.get()
    assert visit.appointment_id == "appt-1001"
    assert visit.conference_id == "CONF-1001"
    assert visit.department_id
    assert visit.encounter_id == "enc-1001"
    assert visit.primary_clinician == admin_a
    assert visit.primary_clinician_ehr_id == fhir_user
    # The subject sent to the meeting provider carries no patient data.
    assert locmem.outbox[0].data["subject"] == "Virtual visit"


def test_a_second_launch_of_the_same_appointment_reuses_the_visit_and_meeting(sandbox, org_a, admin_a):
    endpoint = usable_endpoint(org_a, sandbox)
    link_clinician(org_a, admin_a, f"{endpoint.base_url}/Practitioner/pract-smith")
    for _ in range(2):
        follow_to_connector(requests.Session(), press_launch(sandbox), sandbox)
    with tenant_scope(org_a):
        assert Visit.objects.count() == 1
        assert Meeting.objects.count() == 1
    assert len(locmem.outbox) == 1


def test_a_clinicians_first_launch_asks_for_a_one_time_sign_in(sandbox, org_a, admin_a, settings):
    settings.DEMO_SIGN_IN = True
    endpoint = usable_endpoint(org_a, sandbox)
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user(username="demo-clinician")
    from tenants.models import Membership, Role

    with tenant_scope(org_a):
        Membership.objects.create(tenant=org_a, user=user, role=Role.VIEWER)
    session = requests.Session()
    response = follow_to_connector(session, press_launch(sandbox), sandbox)
    assert response.status_code == 200
    assert "One-time sign-in" in response.text
    # The demo's chooser offers the organization's demo users (it stands in for Microsoft).
    assert "Sign in as demo-clinician" in response.text and 'type="text"' not in response.text
    link_page = response.url
    csrf = session.cookies.get("csrftoken")
    signed = session.post(
        f"{sandbox.url}/sign-in/demo/",
        data={"username": "demo-clinician", "next": urlsplit(link_page).path, "csrfmiddlewaretoken": csrf},
        headers={"Referer": link_page},
        allow_redirects=False,
        timeout=15,
    )
    assert signed.status_code == 302, signed.text[:500]
    back = follow_to_connector(session, sandbox.url + signed.headers["Location"], sandbox)
    assert back.headers["Location"].startswith("https://meetings.invalid/")
    with tenant_scope(org_a):
        link = ClinicianLink.objects.get()
    assert link.user == user
    assert link.fhir_user == f"{endpoint.base_url}/Practitioner/pract-smith"
    # The next launch goes straight to the meeting.
    again = follow_to_connector(requests.Session(), press_launch(sandbox), sandbox)
    assert again.headers["Location"].startswith("https://meetings.invalid/")


def test_a_patient_launch_goes_to_the_join_page(sandbox, org_a):
    usable_endpoint(org_a, sandbox)
    response = follow_to_connector(requests.Session(), press_launch(sandbox, role="patient"), sandbox)
    assert response.url.startswith(f"{sandbox.url}/join/") or response.headers.get("Location", "").startswith(
        "/join/"
    )
    with tenant_scope(org_a):
        assert Visit.objects.get().appointment_id == "appt-1001"


def test_an_unknown_issuer_gets_a_clear_page(sandbox, org_a):
    usable_endpoint(org_a, sandbox)  # r4 is configured; r4-other is not
    response = requests.get(press_launch(sandbox, flavor="r4-other"), timeout=15)
    assert response.status_code == 404
    assert "not configured" in response.text
    assert "production URL" in response.text


def test_an_endpoint_awaiting_approval_cannot_launch(sandbox, org_a):
    with tenant_scope(org_a):
        endpoint = endpoint_validate(
            endpoint=endpoint_create(
                tenant=org_a, base_url=sandbox_base(sandbox), environment="test", label="Main"
            )
        )
    assert endpoint.status == EndpointStatus.AWAITING_APPROVAL
    response = requests.get(press_launch(sandbox), timeout=15)
    assert response.status_code == 400
    assert "not ready" in response.text


def test_a_replayed_state_is_refused(sandbox, org_a, admin_a):
    endpoint = usable_endpoint(org_a, sandbox)
    link_clinician(org_a, admin_a, f"{endpoint.base_url}/Practitioner/pract-smith")
    session = requests.Session()
    to_ehr = session.get(press_launch(sandbox), allow_redirects=False, timeout=15)
    back = session.get(to_ehr.headers["Location"], allow_redirects=False, timeout=15)
    callback = back.headers["Location"]
    assert session.get(callback, allow_redirects=False, timeout=15).status_code == 302
    replay = session.get(callback, allow_redirects=False, timeout=15)
    assert replay.status_code == 400
    assert "already used" in replay.text


def test_a_forged_state_is_refused(sandbox, org_a):
    usable_endpoint(org_a, sandbox)
    response = requests.get(f"{sandbox.url}/launch/callback?code=abc&state=forged-state-value", timeout=15)
    assert response.status_code == 400
    assert not LaunchState.objects.filter(used_at__isnull=False).exists()


def test_a_state_started_in_another_browser_is_refused(sandbox, org_a, admin_a):
    endpoint = usable_endpoint(org_a, sandbox)
    link_clinician(org_a, admin_a, f"{endpoint.base_url}/Practitioner/pract-smith")
    first_browser = requests.Session()
    to_ehr = first_browser.get(press_launch(sandbox), allow_redirects=False, timeout=15)
    back = first_browser.get(to_ehr.headers["Location"], allow_redirects=False, timeout=15)
    other_browser = requests.Session()
    other_browser.cookies.set("ehr_launch_binding", "someone-elses-cookie")
    response = other_browser.get(back.headers["Location"], allow_redirects=False, timeout=15)
    assert response.status_code == 400
    assert "another browser" in response.text


def test_a_wrong_pkce_verifier_is_refused_by_the_ehr(sandbox, org_a, admin_a):
    endpoint = usable_endpoint(org_a, sandbox)
    link_clinician(org_a, admin_a, f"{endpoint.base_url}/Practitioner/pract-smith")
    session = requests.Session()
    to_ehr = session.get(press_launch(sandbox), allow_redirects=False, timeout=15)
    back = session.get(to_ehr.headers["Location"], allow_redirects=False, timeout=15)
    LaunchState.objects.update(code_verifier="x" * 64)
    response = session.get(back.headers["Location"], allow_redirects=False, timeout=15)
    assert response.status_code == 400
    assert "invalid_grant" in response.text
    with all_tenants():
        assert not Visit.objects.exists()


def test_a_meeting_provider_failure_is_explained(sandbox, org_a, admin_a):
    from connector.meetings.base import MeetingError

    endpoint = usable_endpoint(org_a, sandbox)
    link_clinician(org_a, admin_a, f"{endpoint.base_url}/Practitioner/pract-smith")
    locmem.LocmemMeetingBackend.fail_next = MeetingError("the provider is down", permanent=False)
    response = follow_to_connector(requests.Session(), press_launch(sandbox), sandbox)
    assert response.status_code == 502
    assert "the provider is down" in response.text


def test_a_clinician_linked_in_organization_b_is_not_recognized_in_a(sandbox, org_a, org_b, admin_b):
    endpoint = usable_endpoint(org_a, sandbox)
    link_clinician(org_b, admin_b, f"{endpoint.base_url}/Practitioner/pract-smith")
    response = follow_to_connector(requests.Session(), press_launch(sandbox), sandbox)
    assert "One-time sign-in" in response.text  # B's link does not count for A


def test_the_installation_publishes_its_signing_keys(client):
    keys = client.get("/.well-known/jwks.json").json()["keys"]
    assert keys and keys[0]["alg"] == "RS384" and "d" not in keys[0]
