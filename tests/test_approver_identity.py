"""Approver identity with EHRs that send no preferred_username, and clinician links per environment.

An approver entry matches an EHR sign-in by EHR username, by fhirUser reference or
by Practitioner identifier (connector/services/approvals.py); the approvers list
says which form matched. The third-party peer (smart-launcher-v2 + Medplum) sends
an id_token with a relative `fhirUser` (`Practitioner/dr1`) and no
`preferred_username`; Practitioner/dr1 carries the NPI 9941339109. Clinician links
are keyed to organization + environment + absolute fhirUser URL: the same
`Practitioner/dr1` on a test and on a production endpoint is two users.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import requests

from connector.models import (
    ApproverMatch,
    ClinicianLink,
    EhrApprover,
    EndpointApproval,
    EndpointStatus,
    FhirEndpoint,
)
from connector.services.approvals import approver_match
from connector.services.endpoints import ehr_approvers_set, endpoint_create, endpoint_validate
from connector.smart import EhrIdentity, absolute_fhir_user
from tenants.scoping import tenant_scope
from tests.conftest import signed_in
from tests.support.sandbox import local_path
from tests.test_peer_launch import follow, jwks_url, launch, sign_in_once

NPI = "http://hl7.org/fhir/sid/us-npi|9941339109"
BASE = "https://ehr.example.org/fhir"


# --- Matching, without HTTP -----------------------------------------------------------------------


@pytest.fixture
def endpoint_a(org_a) -> FhirEndpoint:
    with tenant_scope(org_a):
        return FhirEndpoint.objects.create(tenant=org_a, base_url=BASE, environment="test", label="Main")


def match(tenant, endpoint, entries, **identity):
    identity.setdefault("subject", "sub-1")
    identity.setdefault("fhir_user", "")
    identity.setdefault("username", "x")
    with tenant_scope(tenant):
        ehr_approvers_set(tenant=tenant, usernames=entries)
        found = approver_match(endpoint=endpoint, identity=EhrIdentity(**identity))
    return (found.approver.ehr_username, found.matched_as) if found else None


@pytest.mark.django_db
def test_the_ehr_username_matches_when_the_ehr_sends_one(org_a, endpoint_a):
    assert match(org_a, endpoint_a, ["analyst1"], preferred_username="ANALYST1") == (
        "analyst1",
        ApproverMatch.USERNAME,
    )


@pytest.mark.django_db
@pytest.mark.parametrize("entry", ["Practitioner/dr1", f"{BASE}/Practitioner/dr1", "dr1"])
@pytest.mark.parametrize("sent", ["Practitioner/dr1", f"{BASE}/Practitioner/dr1"])
def test_the_fhir_user_matches_relative_absolute_or_by_id(org_a, endpoint_a, entry, sent):
    assert match(org_a, endpoint_a, [entry], fhir_user=sent) == (entry, ApproverMatch.FHIR_USER)


@pytest.mark.django_db
def test_a_fhir_user_of_another_server_does_not_match_a_relative_entry(org_a, endpoint_a):
    other = "https://other-ehr.example.org/fhir/Practitioner/dr1"
    assert match(org_a, endpoint_a, ["Practitioner/dr1", "dr1"], fhir_user=other) is None


@pytest.mark.django_db
@pytest.mark.parametrize("entry", [NPI, "9941339109"])
def test_a_practitioner_identifier_matches_with_or_without_its_system(org_a, endpoint_a, entry):
    assert match(org_a, endpoint_a, [entry], fhir_user="Practitioner/dr1", identifiers=(NPI,)) == (
        entry,
        ApproverMatch.IDENTIFIER,
    )


@pytest.mark.django_db
def test_the_username_wins_over_the_other_forms(org_a, endpoint_a):
    found = match(
        org_a,
        endpoint_a,
        ["9941339109", "Practitioner/dr1", "ANALYST1"],
        preferred_username="analyst1",
        fhir_user="Practitioner/dr1",
        identifiers=(NPI,),
    )
    assert found == ("ANALYST1", ApproverMatch.USERNAME)


@pytest.mark.django_db
def test_an_approver_of_another_organization_never_matches(org_a, org_b, endpoint_a):
    with tenant_scope(org_b):
        ehr_approvers_set(tenant=org_b, usernames=["Practitioner/dr1"])
    with tenant_scope(org_a):
        identity = EhrIdentity(subject="s", fhir_user="Practitioner/dr1", username="dr1")
        assert approver_match(endpoint=endpoint_a, identity=identity) is None


def test_a_relative_fhir_user_is_made_absolute_against_its_server():
    assert absolute_fhir_user("Practitioner/dr1", BASE + "/") == f"{BASE}/Practitioner/dr1"
    assert absolute_fhir_user(f"{BASE}/Practitioner/dr1", "https://x/fhir") == f"{BASE}/Practitioner/dr1"
    assert absolute_fhir_user("", BASE) == ""


# --- Through the third-party peer ---------------------------------------------------------------


@pytest.fixture
def origin(settings, live_server) -> str:
    settings.EHR_INSECURE_HOSTS = ["localhost", "127.0.0.1"]
    settings.PUBLIC_BASE_URL = live_server.url
    settings.MEETING_BACKEND = "connector.meetings.demo.DemoMeetingBackend"
    settings.DEMO_SIGN_IN = True
    return live_server.url


def peer_endpoint(tenant, smart_peer, origin, *, environment="test", **options) -> FhirEndpoint:
    """An endpoint on the peer, the connector a confidential-asymmetric client (private_key_jwt)."""
    base = smart_peer.sim_base(client_type="confidential-asymmetric", jwks_url=jwks_url(origin), **options)
    with tenant_scope(tenant):
        return endpoint_validate(
            endpoint=endpoint_create(tenant=tenant, base_url=base, environment=environment, label=environment)
        )


def approve_through_the_peer(client, smart_peer, origin, org, approver, entries):
    """The analyst's EHR sign-in is the peer's standalone provider sign-in as Practitioner/dr1."""
    endpoint = peer_endpoint(
        org,
        smart_peer,
        origin,
        launch_type="provider-standalone",
        provider="dr1",
        patient="",
        encounter="NONE",
    )
    assert endpoint.status == EndpointStatus.AWAITING_APPROVAL, endpoint.last_validation
    with tenant_scope(org):
        ehr_approvers_set(tenant=org, usernames=entries)
    signed_in(client, approver)
    authorize = client.post(f"/portal/setup/approve/{endpoint.pk}/sign-in/")["Location"]
    assert authorize.startswith(smart_peer.launcher_url)
    back = requests.get(authorize, allow_redirects=False, timeout=20)
    assert back.status_code in (302, 303), back.text[:300]
    assert urlsplit(back.headers["Location"]).path == "/portal/approval/callback/"
    return endpoint, client.get(local_path(back.headers["Location"]))


def decide(client, endpoint):
    decided = client.post(
        f"/portal/setup/approve/{endpoint.pk}/decide/", {"decision": "approve", "comment": ""}
    )
    assert decided.status_code == 302
    with tenant_scope(endpoint.tenant):
        endpoint.refresh_from_db()
        return EndpointApproval.objects.get(endpoint=endpoint)


@pytest.mark.peer
@pytest.mark.django_db(transaction=True)
def test_an_analyst_listed_by_fhir_user_approves_through_the_peer(
    client, smart_peer, origin, org_a, approver_a, admin_a
):
    endpoint, callback = approve_through_the_peer(
        client, smart_peer, origin, org_a, approver_a, ["Practitioner/dr1"]
    )
    assert callback.status_code == 302, callback.content[:500]

    approval = decide(client, endpoint)

    assert endpoint.status == EndpointStatus.APPROVED
    assert approval.matched_as == ApproverMatch.FHIR_USER
    assert approval.ehr_user == f"{endpoint.base_url}/Practitioner/dr1"
    assert approval.ehr_username == "dr1"  # no preferred_username: the fhirUser's id is shown
    with tenant_scope(org_a):
        approver = EhrApprover.objects.get()
    assert approver.last_matched_as == ApproverMatch.FHIR_USER
    configure = signed_in(client, admin_a).get("/portal/setup/configure/").content.decode()
    assert "<code>Practitioner/dr1</code></td><td>fhirUser reference" in configure
    history = client.get("/portal/setup/approve/").content.decode()
    assert "matched by fhirUser reference" in history


@pytest.mark.peer
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("entry", [NPI, "9941339109"])
def test_an_analyst_listed_by_npi_is_found_by_reading_the_practitioner(
    client, smart_peer, origin, org_a, approver_a, entry
):
    endpoint, callback = approve_through_the_peer(client, smart_peer, origin, org_a, approver_a, [entry])
    assert callback.status_code == 302, callback.content[:500]

    approval = decide(client, endpoint)

    assert approval.matched_as == ApproverMatch.IDENTIFIER
    with tenant_scope(org_a):
        assert EhrApprover.objects.get().last_matched_as == ApproverMatch.IDENTIFIER


@pytest.mark.peer
@pytest.mark.django_db(transaction=True)
def test_an_analyst_not_listed_in_any_form_is_told_who_they_are(
    client, smart_peer, origin, org_a, approver_a
):
    endpoint, callback = approve_through_the_peer(
        client, smart_peer, origin, org_a, approver_a, ["someone-else"]
    )

    assert callback.status_code == 400
    page = callback.content.decode()
    assert "You signed in to the EHR as dr1 (Practitioner/dr1)" in page
    assert "fhirUser or your Practitioner identifier" in page
    with tenant_scope(org_a):
        assert not EndpointApproval.objects.exists()


@pytest.mark.peer
@pytest.mark.django_db(transaction=True)
def test_the_same_practitioner_on_test_and_production_gets_two_links(smart_peer, origin, org_b):
    """Oracle Health organization: validated endpoints are usable without an approval."""
    test = peer_endpoint(org_b, smart_peer, origin, environment="test")
    # Another launch code, so another base URL: the production EHR.
    production = peer_endpoint(org_b, smart_peer, origin, environment="production", pkce=2)
    assert test.is_usable and production.is_usable

    session = requests.Session()
    first = follow(session, launch(smart_peer, origin, test), origin)
    sign_in_once(session, origin, first, org_b)
    with tenant_scope(org_b):
        [link] = ClinicianLink.objects.all()
    assert (link.environment, link.fhir_user) == ("test", f"{test.base_url}/Practitioner/dr1")

    # The same Practitioner/dr1 launching from production is not the test user: a new one-time sign-in.
    again = follow(requests.Session(), launch(smart_peer, origin, production), origin)
    assert "One-time sign-in" in again.text
    # And the test user still goes straight in.
    straight = follow(session, launch(smart_peer, origin, test), origin)
    assert "One-time sign-in" not in straight.text
    with tenant_scope(org_b):
        assert ClinicianLink.objects.count() == 1
