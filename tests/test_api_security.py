"""Findings of the security audit (issue 12), each kept closed by a test."""

import pytest
from django.contrib.auth import get_user_model

from connector.models import IntegrationRecord, RecordKind
from sms.backends import locmem
from sms.models import PhoneNumber
from tenants.models import Membership
from tenants.scoping import all_tenants, tenant_scope
from tests.conftest import ORG_A_TID, microsoft_user, signed_in
from tests.test_endpoints import make_endpoint

BASE = f"/api/v1/tenants/{ORG_A_TID}"


@pytest.fixture
def _locmem_sms(settings):
    settings.SMS_BACKEND = "sms.backends.locmem.LocmemSmsBackend"
    locmem.reset()
    yield
    locmem.reset()


def test_a_read_write_token_requests_a_sending_number_with_no_person_recorded(_locmem_sms, org_a, token_client):
    response = token_client(org_a, "read_write").post(f"{BASE}/sms/numbers/", {"country": "US"}, format="json")

    assert response.status_code == 202, response.content
    with all_tenants():
        number = PhoneNumber.objects.get(pk=response.json()["id"])
    assert number.requested_by is None


# --- item 4: administrators' writes are not open to read-write tokens ----------------------


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("put", "ehr-approvers/", {"usernames": ["ANALYST9"]}),
        ("post", "integration-records/{record}/rotate-token/", None),
        ("post", "endpoints/{endpoint}/disable/", None),
    ],
)
def test_a_read_write_token_cannot_make_the_administrators_decisions(
    org_a, admin_a, token_client, api_as, method, path, body
):
    endpoint = make_endpoint(org_a)
    with tenant_scope(org_a):
        record = IntegrationRecord.objects.create(
            tenant=org_a, endpoint=endpoint, kind=RecordKind.DEVICE_TEST_CONFIGURATION, config_version=1
        )
    url = f"{BASE}/" + path.format(record=record.pk, endpoint=endpoint.pk)

    response = getattr(token_client(org_a, "read_write"), method)(url, body, format="json")

    assert response.status_code == 403
    assert "sign in as an administrator" in response.json()["error"]["message"]
    # The administrator, signed in, still may.
    assert getattr(api_as(admin_a), method)(url, body, format="json").status_code == 200


# --- item 2: an administrator cannot look up or enrol another organization's users -------------


def test_an_administrator_cannot_reveal_or_enrol_a_user_of_another_organization(api_as, org_a, org_b, admin_a):
    outsider = microsoft_user(org_b, "bob-of-b", email="bob@org-b.example")
    password_only = get_user_model().objects.create_user(username="local-only", email="lo@example.org")
    client = api_as(admin_a)

    answers = [
        client.post(f"{BASE}/memberships/", {"username": name, "role": "viewer"}, format="json")
        for name in (outsider.username, password_only.username, "nobody-at-all")
    ]

    # The same refusal for a user of another organization, a user who never signed in with
    # Microsoft and an unknown name: nothing tells them apart, no e-mail is shown.
    assert {a.status_code for a in answers} == {400}
    assert len({str(a.json()["error"]) for a in answers}) == 1
    assert b"bob@org-b.example" not in answers[0].content
    with all_tenants():
        assert not Membership.objects.filter(user__in=[outsider, password_only]).exists()


def test_an_administrator_adds_someone_who_signed_in_from_their_own_organization(api_as, org_a, admin_a):
    colleague = microsoft_user(org_a, "cora-of-a")

    response = api_as(admin_a).post(f"{BASE}/memberships/", {"username": "cora-of-a", "role": "viewer"}, format="json")

    assert response.status_code == 201
    with all_tenants():
        assert Membership.objects.get(user=colleague).tenant == org_a


# --- item 7: guessing tokens is slowed down; the portal limits token creation like the API --------


def test_unknown_bearer_tokens_from_one_address_are_throttled(org_a, token_client, settings):
    from rest_framework.test import APIClient

    settings.BAD_TOKEN_RATE = "3/10m"
    guesser = APIClient()
    guesser.credentials(HTTP_AUTHORIZATION="Bearer ehc_not-a-real-token")

    codes = [guesser.get(f"{BASE}/").status_code for _ in range(4)]

    assert codes == [401, 401, 401, 429]
    refused = guesser.get(f"{BASE}/")
    assert refused.json()["error"]["code"] == "rate_limited"
    assert int(refused["Retry-After"]) > 0
    # Even a valid token from that address waits: the flood is answered before any lookup.
    assert token_client(org_a).get(f"{BASE}/").status_code == 429


def test_the_portal_limits_token_creation_like_the_api(client, org_a, admin_a, monkeypatch):
    from connector.api.throttles import TokenManagementThrottle
    from tenants.models import ApiToken

    monkeypatch.setitem(TokenManagementThrottle.THROTTLE_RATES, "token_management", "2/hour")
    signed_in(client, admin_a)

    codes = [
        client.post("/portal/api-tokens/", {"name": f"t{i}", "scope": "read", "form_id": f"f{i}"}).status_code
        for i in range(3)
    ]

    assert codes == [200, 200, 429]
    with tenant_scope(org_a):
        assert ApiToken.objects.count() == 2
