"""Approval of Epic endpoints: the analyst signs in to the sandbox EHR over real HTTP.

The portal is driven with Django's test client; every call the connector makes
to the EHR (SMART configuration, token, JWKS) goes over HTTP to the sandbox
served by live_server, and the sandbox checks the connector's private_key_jwt
against the connector's own /.well-known/jwks.json.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import requests

from connector.models import EndpointApproval, EndpointStatus, FhirEndpoint, IntegrationRecord, RecordKind
from connector.services.endpoints import (
    ehr_approvers_set,
    endpoint_create,
    endpoint_update,
    endpoint_validate,
)
from connector.smart import authorize_url, new_state, pkce_pair
from tenants.scoping import all_tenants, tenant_scope
from tests.conftest import signed_in
from tests.support.sandbox import answer_sign_in, enable_sandbox, local_path, query_value, sandbox_base

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sandbox(settings, live_server):
    enable_sandbox(settings, live_server)
    return live_server


def awaiting_endpoint(tenant, live_server, flavor="r4") -> FhirEndpoint:
    with tenant_scope(tenant):
        ehr_approvers_set(tenant=tenant, usernames=["ANALYST1"])
        endpoint = endpoint_create(
            tenant=tenant, base_url=sandbox_base(live_server, flavor), environment="test", label="Main campus"
        )
        endpoint = endpoint_validate(endpoint=endpoint)
    assert endpoint.status == EndpointStatus.AWAITING_APPROVAL, endpoint.last_validation
    return endpoint


def start_ehr_sign_in(client, endpoint) -> str:
    response = client.post(f"/portal/setup/approve/{endpoint.pk}/sign-in/")
    assert response.status_code == 302
    location = response["Location"]
    assert location.startswith(endpoint.base_url.rsplit("/fhir/", 1)[0] + "/oauth2/authorize")
    return location


def come_back(client, redirect_to_connector: str):
    assert urlsplit(redirect_to_connector).path == "/portal/approval/callback/"
    return client.get(local_path(redirect_to_connector))


def test_a_configured_analyst_signs_in_to_the_ehr_and_approves(client, sandbox, org_a, approver_a):
    endpoint = awaiting_endpoint(org_a, sandbox)
    signed_in(client, approver_a)
    authorize = start_ehr_sign_in(client, endpoint)
    assert query_value(authorize, "code_challenge_method") == "S256"
    assert query_value(authorize, "scope") == "openid fhirUser"
    assert len(query_value(authorize, "state")) >= 22  # at least 128 bits
    assert query_value(authorize, "aud") == endpoint.base_url

    callback = come_back(client, answer_sign_in(authorize, "ANALYST1"))
    assert callback.status_code == 302
    assert callback["Location"] == f"/portal/setup/approve/{endpoint.pk}/decide/"
    page = client.get(callback["Location"])
    assert b"ANALYST1" in page.content

    decided = client.post(
        callback["Location"], {"decision": "approve", "comment": "Checked with the EHR team"}
    )
    assert decided.status_code == 302
    with tenant_scope(org_a):
        endpoint.refresh_from_db()
        approval = EndpointApproval.objects.get(endpoint=endpoint)
        records = IntegrationRecord.objects.filter(endpoint=endpoint, out_of_date=False)
        assert records.count() == len(RecordKind.values)
    assert endpoint.status == EndpointStatus.APPROVED
    assert approval.decision == "approved"
    assert approval.ehr_username == "ANALYST1"
    assert approval.decided_by == approver_a
    assert approval.ehr_user.endswith("/Practitioner/pract-analyst1")
    # The approval history is shown.
    history = client.get("/portal/setup/approve/")
    assert b"Checked with the EHR team" in history.content


def test_an_ehr_user_who_is_not_a_configured_approver_cannot_decide(client, sandbox, org_a, approver_a):
    endpoint = awaiting_endpoint(org_a, sandbox)
    signed_in(client, approver_a)
    callback = come_back(client, answer_sign_in(start_ehr_sign_in(client, endpoint), "DRSMITH"))
    assert callback.status_code == 400
    assert b"not one of the approvers" in callback.content
    # No identity was kept, so the decision page sends them back.
    assert client.get(f"/portal/setup/approve/{endpoint.pk}/decide/").status_code == 302
    with tenant_scope(org_a):
        endpoint.refresh_from_db()
        assert not EndpointApproval.objects.exists()
    assert endpoint.status == EndpointStatus.AWAITING_APPROVAL


def test_a_rejection_needs_a_comment_and_is_kept_in_the_history(client, sandbox, org_a, approver_a):
    endpoint = awaiting_endpoint(org_a, sandbox)
    signed_in(client, approver_a)
    come_back(client, answer_sign_in(start_ehr_sign_in(client, endpoint), "ANALYST1"))
    decide = f"/portal/setup/approve/{endpoint.pk}/decide/"
    refused = client.post(decide, {"decision": "reject", "comment": ""})
    assert refused.status_code == 200
    assert b"Say why" in refused.content
    client.post(decide, {"decision": "reject", "comment": "Wrong environment"})
    with tenant_scope(org_a):
        endpoint.refresh_from_db()
        approval = EndpointApproval.objects.get()
    assert endpoint.status == EndpointStatus.DRAFT
    assert (approval.decision, approval.comment) == ("rejected", "Wrong environment")


def test_a_tampered_state_is_refused(client, sandbox, org_a, approver_a):
    endpoint = awaiting_endpoint(org_a, sandbox)
    signed_in(client, approver_a)
    back = answer_sign_in(start_ehr_sign_in(client, endpoint), "ANALYST1")
    tampered = back.replace(query_value(back, "state"), new_state())
    response = come_back(client, tampered)
    assert response.status_code == 400
    assert b"does not belong to this browser session" in response.content


def test_a_replayed_callback_is_refused(client, sandbox, org_a, approver_a):
    endpoint = awaiting_endpoint(org_a, sandbox)
    signed_in(client, approver_a)
    back = answer_sign_in(start_ehr_sign_in(client, endpoint), "ANALYST1")
    assert come_back(client, back).status_code == 302
    again = come_back(client, back)
    assert again.status_code == 400
    assert b"already used" in again.content


def test_a_state_from_another_browser_session_is_refused(
    client, sandbox, org_a, approver_a, django_user_model
):
    endpoint = awaiting_endpoint(org_a, sandbox)
    signed_in(client, approver_a)
    back = answer_sign_in(start_ehr_sign_in(client, endpoint), "ANALYST1")
    from django.test import Client

    other_browser = signed_in(Client(), approver_a)
    assert come_back(other_browser, back).status_code == 400


def test_a_wrong_pkce_verifier_is_refused_by_the_ehr_and_explained(client, sandbox, org_a, approver_a):
    endpoint = awaiting_endpoint(org_a, sandbox)
    signed_in(client, approver_a)
    back = answer_sign_in(start_ehr_sign_in(client, endpoint), "ANALYST1")
    session = client.session
    pending = session["ehr_approval_pending"]
    pending[query_value(back, "state")]["verifier"] = pkce_pair()[0]
    session["ehr_approval_pending"] = pending
    session.save()
    response = come_back(client, back)
    assert response.status_code == 400
    assert b"invalid_grant" in response.content
    assert b"client registration" in response.content


def test_a_denied_ehr_sign_in_shows_the_ehrs_error(client, sandbox, org_a, approver_a):
    from connector.sandbox_ehr.testing import deny_sign_in

    endpoint = awaiting_endpoint(org_a, sandbox)
    signed_in(client, approver_a)
    authorize = start_ehr_sign_in(client, endpoint)
    session = requests.Session()
    denied = deny_sign_in(session, session.get(authorize, timeout=10))
    response = come_back(client, denied.headers["Location"])
    assert response.status_code == 400
    assert b"access_denied" in response.content


def test_an_administrator_without_the_approver_role_cannot_start_the_ehr_sign_in(
    client, sandbox, org_a, admin_a
):
    endpoint = awaiting_endpoint(org_a, sandbox)
    signed_in(client, admin_a)
    assert client.post(f"/portal/setup/approve/{endpoint.pk}/sign-in/").status_code == 403


def test_an_approver_of_organization_a_cannot_approve_bs_endpoint(client, sandbox, org_a, org_b, approver_a):
    from tenants.models import EhrVendor, Tenant

    Tenant.objects.filter(pk=org_b.pk).update(ehr_vendor=EhrVendor.EPIC)
    org_b.refresh_from_db()
    endpoint_b = awaiting_endpoint(org_b, sandbox)
    signed_in(client, approver_a)
    assert client.post(f"/portal/setup/approve/{endpoint_b.pk}/sign-in/").status_code == 404
    assert client.get(f"/portal/setup/approve/{endpoint_b.pk}/decide/").status_code == 404


def test_records_are_produced_again_after_the_url_changes_and_is_approved_again(
    client, sandbox, org_a, approver_a
):
    endpoint = awaiting_endpoint(org_a, sandbox)
    signed_in(client, approver_a)
    come_back(client, answer_sign_in(start_ehr_sign_in(client, endpoint), "ANALYST1"))
    client.post(f"/portal/setup/approve/{endpoint.pk}/decide/", {"decision": "approve"})
    with tenant_scope(org_a):
        endpoint.refresh_from_db()
        first = {r.kind: r.generated_at for r in IntegrationRecord.objects.filter(endpoint=endpoint)}
        endpoint = endpoint_update(endpoint=endpoint, base_url=sandbox_base(sandbox, "r4-other"))
        assert endpoint.status == EndpointStatus.AWAITING_APPROVAL
        assert IntegrationRecord.objects.filter(endpoint=endpoint, out_of_date=True).count() == len(first)
        endpoint = endpoint_validate(endpoint=endpoint)
    assert endpoint.status == EndpointStatus.AWAITING_APPROVAL
    come_back(client, answer_sign_in(start_ehr_sign_in(client, endpoint), "ANALYST1"))
    client.post(f"/portal/setup/approve/{endpoint.pk}/decide/", {"decision": "approve"})
    with tenant_scope(org_a):
        records = list(IntegrationRecord.objects.filter(endpoint=endpoint))
        endpoint.refresh_from_db()
    assert endpoint.status == EndpointStatus.APPROVED
    assert all(not r.out_of_date and r.config_version == 2 for r in records)
    assert all(r.generated_at > first[r.kind] for r in records)
    assert all(r.details["iss"].endswith("/fhir/r4-other") for r in records)


def _standalone_id_token(live_server, endpoint, username: str, settings) -> str:
    """What a REST client does itself: a SMART standalone sign-in to get an id_token."""
    verifier, challenge = pkce_pair()
    base = endpoint.base_url
    config = requests.get(f"{base}/.well-known/smart-configuration", timeout=10).json()
    url = authorize_url(
        config,
        redirect_uri="http://localhost/callback",
        scope="openid fhirUser",
        state=new_state(),
        code_challenge=challenge,
        aud=base,
        client_id=settings.SMART_CLIENT_ID,
    )
    code = query_value(answer_sign_in(url, username), "code")
    token = requests.post(
        config["token_endpoint"],
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": "http://localhost/callback",
            "code_verifier": verifier,
            "client_id": settings.SMART_CLIENT_ID,
        },
        timeout=10,
    ).json()
    return token["id_token"]


def test_the_api_approves_with_an_ehr_id_token(api_as, sandbox, org_a, approver_a, settings):
    endpoint = awaiting_endpoint(org_a, sandbox)
    id_token = _standalone_id_token(sandbox, endpoint, "ANALYST1", settings)
    url = f"/api/v1/tenants/{org_a.microsoft_tenant_id}/endpoints/{endpoint.pk}/approve/"
    response = api_as(approver_a).post(url, {"id_token": id_token}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["ehr_username"] == "ANALYST1"
    with all_tenants():
        assert FhirEndpoint.objects.get(pk=endpoint.pk).status == EndpointStatus.APPROVED


def test_the_api_refuses_an_id_token_of_an_unlisted_ehr_user(api_as, sandbox, org_a, approver_a, settings):
    endpoint = awaiting_endpoint(org_a, sandbox)
    id_token = _standalone_id_token(sandbox, endpoint, "DRSMITH", settings)
    url = f"/api/v1/tenants/{org_a.microsoft_tenant_id}/endpoints/{endpoint.pk}/approve/"
    response = api_as(approver_a).post(url, {"id_token": id_token}, format="json")
    assert response.status_code == 403
    assert "not one of the approvers" in response.json()["error"]["message"]


def test_the_api_refuses_a_forged_id_token(api_as, sandbox, org_a, approver_a):
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    endpoint = awaiting_endpoint(org_a, sandbox)
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(
        {
            "iss": endpoint.base_url,
            "sub": "x",
            "aud": "open-ehr-connector",
            "exp": 9999999999,
            "iat": 1,
            "preferred_username": "ANALYST1",
        },
        forger,
        algorithm="RS256",
        headers={"kid": "not-the-ehrs"},
    )
    url = f"/api/v1/tenants/{org_a.microsoft_tenant_id}/endpoints/{endpoint.pk}/approve/"
    response = api_as(approver_a).post(url, {"id_token": forged}, format="json")
    assert response.status_code == 400
    assert "id_token" in response.json()["error"]["fields"]


def test_oracle_health_endpoints_need_no_approval(client, sandbox, org_b, admin_b):
    with tenant_scope(org_b):
        endpoint = endpoint_create(
            tenant=org_b,
            base_url=sandbox_base(sandbox, "r4-other"),
            environment="production",
            label="Fabrikam",
        )
        endpoint = endpoint_validate(endpoint=endpoint)
        assert endpoint.status == EndpointStatus.VALIDATED
        assert IntegrationRecord.objects.filter(endpoint=endpoint).count() == len(RecordKind.values)
