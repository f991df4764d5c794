"""Per-organization API tokens: shown once, stored hashed, scoped, revocable, rate limited."""

import hashlib
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from connector.api.throttles import TokenManagementThrottle
from tenants import services
from tenants.models import ApiToken, TenantStatus
from tenants.scoping import all_tenants, tenant_scope
from tests.conftest import ORG_A_TID, microsoft_user, signed_in

BASE = f"/api/v1/tenants/{ORG_A_TID}"
NEW_ENDPOINT = {
    "base_url": "https://fhir.example.org/R4/",
    "environment": "test",
    "label": "Main",
    "time_zone": "UTC",
}


@pytest.fixture
def _no_validation(monkeypatch):
    """Creating an endpoint queues its validation; these tests are about who may create it."""
    monkeypatch.setattr("connector.background.async_task", lambda *args, **kwargs: None)


def _raw_is_stored_anywhere(raw: str) -> bool:
    """Look through every text column of every row the token touched, history included."""
    with all_tenants():
        rows = list(ApiToken.objects.values()) + list(ApiToken.history.values())
    return any(raw in str(value) for row in rows for value in row.values())


def _token(tenant, pk: int) -> ApiToken:
    with tenant_scope(tenant):
        return ApiToken.objects.get(pk=pk)


# --- creating and showing once --------------------------------------------------------------


def test_an_administrator_creates_a_token_through_the_api_and_sees_the_secret_once(org_a, api_as, admin_a):
    client = api_as(admin_a)

    created = client.post(f"{BASE}/tokens/", {"name": "Reporting warehouse", "scope": "read"}, format="json")

    assert created.status_code == 201
    raw = created.json()["token"]
    details = created.json()["details"]
    assert raw.startswith(f"ehc_{details['prefix']}_")
    assert details["name"] == "Reporting warehouse"
    assert details["scope"] == "read"
    assert details["created_by"] == "alice-admin"
    listed = client.get(f"{BASE}/tokens/")
    assert raw not in listed.content.decode()
    assert "token" not in listed.json()["results"][0]


def test_a_token_is_stored_as_its_sha256_hash_and_never_in_the_clear(org_a, api_as, admin_a):
    created = api_as(admin_a).post(f"{BASE}/tokens/", {"name": "ETL", "scope": "read_write"}, format="json")
    raw = created.json()["token"]

    token = _token(org_a, created.json()["details"]["id"])

    assert token.token_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert not _raw_is_stored_anywhere(raw)


def test_creating_a_token_without_a_name_or_with_an_unknown_scope_is_refused(api_as, admin_a):
    client = api_as(admin_a)

    unnamed = client.post(f"{BASE}/tokens/", {"name": "  ", "scope": "read"}, format="json")
    bad_scope = client.post(f"{BASE}/tokens/", {"name": "x", "scope": "admin"}, format="json")

    assert unnamed.status_code == 400
    assert "name" in unnamed.json()["error"]["fields"]
    assert bad_scope.status_code == 400
    assert "scope" in bad_scope.json()["error"]["fields"]
    with all_tenants():
        assert ApiToken.objects.count() == 0


def test_the_portal_shows_a_new_token_once(client, org_a, admin_a):
    signed_in(client, admin_a)

    shown = client.post("/portal/api-tokens/", {"name": "Warehouse", "scope": "read_write", "form_id": "f1"})

    issued = shown.context["issued"]
    page = shown.content.decode()
    assert shown.status_code == 200
    assert "no-store" in shown["Cache-Control"]
    assert issued.raw in page
    assert "it is shown this once" in page
    assert not _raw_is_stored_anywhere(issued.raw)
    again = client.get("/portal/api-tokens/").content.decode()
    assert issued.raw not in again
    assert f"ehc_{issued.token.prefix}" in again


def test_the_new_tokens_secret_is_never_kept_in_the_session(client, org_a, admin_a):
    from django.contrib.sessions.models import Session

    signed_in(client, admin_a)

    # The browser never loads another page after creating the token.
    shown = client.post("/portal/api-tokens/", {"name": "Warehouse", "scope": "read", "form_id": "f1"})

    raw = shown.context["issued"].raw
    assert not any(raw in str(session.get_decoded()) for session in Session.objects.all())
    assert not any(raw in session.session_data for session in Session.objects.all())


def test_resending_the_token_form_creates_no_second_token(client, org_a, admin_a):
    signed_in(client, admin_a)
    form = {"name": "Warehouse", "scope": "read", "form_id": "same-form"}

    first = client.post("/portal/api-tokens/", form)
    resent = client.post("/portal/api-tokens/", form, follow=True)

    assert first.context["issued"] is not None
    assert "This form was already sent and its token created" in resent.content.decode()
    assert first.context["issued"].raw not in resent.content.decode()
    with tenant_scope(org_a):
        assert ApiToken.objects.count() == 1


def test_the_portal_refuses_a_token_without_a_name(client, org_a, admin_a):
    response = signed_in(client, admin_a).post("/portal/api-tokens/", {"name": "", "scope": "read"})

    assert response.context["issued"] is None
    assert "This field is required." in response.content.decode()


@pytest.mark.parametrize("member", ["approver_a", "viewer_a"])
def test_the_portal_tokens_page_is_for_administrators_only(request, client, member):
    signed_in(client, request.getfixturevalue(member))

    assert client.get("/portal/api-tokens/").status_code == 403
    assert client.post("/portal/api-tokens/", {"name": "x", "scope": "read"}).status_code == 403
    with all_tenants():
        assert ApiToken.objects.count() == 0


def test_an_administrator_revokes_a_token_in_the_portal(client, org_a, admin_a, token_client):
    api = token_client(org_a)
    signed_in(client, admin_a)

    response = client.post(f"/portal/api-tokens/{api.issued.token.pk}/revoke/", follow=True)

    assert "Token test token was revoked; calls with it now fail." in response.content.decode()
    assert _token(org_a, api.issued.token.pk).revoked_at is not None
    assert api.get("/api/v1/me/").status_code == 401


def test_support_staff_create_a_token_in_the_admin_and_see_it_once(client, org_a, staff_user):
    signed_in(client, staff_user)

    response = client.post(
        "/admin/tenants/apitoken/add/",
        {"tenant": org_a.pk, "name": "Support-made", "scope": "read"},
        follow=True,
    )

    page = response.content.decode()
    assert "Token created. Copy it now, it is not shown again: <code>ehc_" in page
    raw = page.split("not shown again: <code>")[1].split("<")[0].strip()
    assert f'<button type="button" class="copy" data-copy="{raw}">Copy</button>' in page
    assert "/static/js/copy-buttons.js" in page  # the button works on the page that shows it
    with all_tenants():
        token = ApiToken.objects.get()
    assert token.created_by == staff_user
    assert not _raw_is_stored_anywhere(raw)


# --- using them -------------------------------------------------------------------------------


def test_a_read_token_reads(org_a, admin_a, token_client):
    client = token_client(org_a, "read")

    assert client.get(f"{BASE}/").status_code == 200
    assert client.get(f"{BASE}/memberships/").status_code == 200


def test_a_read_token_cannot_write(org_a, admin_a, viewer_a, token_client):
    client = token_client(org_a, "read")

    response = client.post(f"{BASE}/endpoints/", NEW_ENDPOINT, format="json")

    assert response.status_code == 403
    assert response.json()["error"] == {
        "code": "permission_denied",
        "message": "This API token is read-only; create a read-write token to make changes.",
    }


def test_a_read_write_token_writes(org_a, admin_a, token_client, _no_validation):
    client = token_client(org_a, "read_write")

    response = client.post(f"{BASE}/endpoints/", NEW_ENDPOINT, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["label"] == "Main"


def test_no_token_may_change_who_administers_the_organization(org_a, admin_a, token_client):
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_user(username="wanda")
    client = token_client(org_a, "read_write")

    response = client.post(
        f"{BASE}/memberships/", {"username": "wanda", "role": "administrator"}, format="json"
    )

    assert response.status_code == 403
    assert "sign in as an administrator" in response.json()["error"]["message"]
    assert client.get(f"{BASE}/memberships/").status_code == 200


def test_a_revoked_token_is_refused_with_a_clear_message(org_a, token_client):
    client = token_client(org_a, "read_write")
    services.api_token_revoke(token=client.issued.token)

    response = client.get(f"{BASE}/")

    assert response.status_code == 401
    assert response.json()["error"]["message"] == (
        "This API token is unknown or was revoked. Create a new one in the portal."
    )
    assert response["WWW-Authenticate"] == "Bearer"


def test_revoking_through_the_api_stops_the_token(org_a, api_as, admin_a, token_client):
    client = token_client(org_a)

    response = api_as(admin_a).post(f"{BASE}/tokens/{client.issued.token.pk}/revoke/")

    assert response.status_code == 200
    assert response.json()["revoked_at"] is not None
    assert client.get(f"{BASE}/").status_code == 401


def test_revoking_twice_keeps_the_first_revocation_time(org_a, token_client):
    token = token_client(org_a).issued.token
    services.api_token_revoke(token=token)
    first = token.revoked_at

    services.api_token_revoke(token=token)

    assert _token(org_a, token.pk).revoked_at == first


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("Bearer ehc_0000_not-a-real-token", "This API token is unknown or was revoked."),
        ("Bearer not-even-our-format", "This API token is unknown or was revoked."),
        ("Bearer two parts", "Malformed Authorization header"),
        ("Bearer", "Malformed Authorization header"),
    ],
)
def test_an_unknown_or_malformed_token_is_refused(client, org_a, header, message):
    response = client.get(f"{BASE}/", HTTP_AUTHORIZATION=header)

    assert response.status_code == 401
    assert message in response.json()["error"]["message"]


def test_a_token_of_a_suspended_organization_is_refused(org_a, token_client):
    client = token_client(org_a)
    services.tenant_set_status(tenant=org_a, status=TenantStatus.SUSPENDED)

    response = client.get("/api/v1/me/")

    assert response.status_code == 401
    assert response.json()["error"]["message"] == "This API token's organization is not enabled; ask support."


def test_the_last_used_time_is_recorded_at_most_once_a_minute(org_a, token_client):
    start = timezone.now()
    with time_machine.travel(start, tick=False) as traveller:
        client = token_client(org_a)
        assert _token(org_a, client.issued.token.pk).last_used_at is None

        client.get(f"{BASE}/")
        assert _token(org_a, client.issued.token.pk).last_used_at == start

        traveller.shift(timedelta(seconds=30))
        client.get(f"{BASE}/")
        assert _token(org_a, client.issued.token.pk).last_used_at == start

        traveller.shift(timedelta(seconds=31))
        client.get(f"{BASE}/")
        assert _token(org_a, client.issued.token.pk).last_used_at == start + timedelta(seconds=61)


def test_a_change_made_with_a_token_is_recorded_in_history_without_a_user(
    org_a, admin_a, token_client, _no_validation
):
    from connector.models import FhirEndpoint

    client = token_client(org_a, "read_write")

    created = client.post(f"{BASE}/endpoints/", NEW_ENDPOINT, format="json")

    with all_tenants():
        record = FhirEndpoint.history.filter(id=created.json()["id"]).earliest("history_date")
    assert record.history_type == "+"
    assert record.history_user is None


def test_a_change_made_by_a_signed_in_user_is_recorded_with_that_user(org_a, api_as, admin_a):
    from tenants.models import Membership

    microsoft_user(org_a, "wanda")

    api_as(admin_a).post(f"{BASE}/memberships/", {"username": "wanda", "role": "viewer"}, format="json")

    with all_tenants():
        assert Membership.history.get(user__username="wanda").history_user == admin_a


# --- rate limits ---------------------------------------------------------------------------------


@pytest.fixture
def tight_token_limit(monkeypatch):
    monkeypatch.setitem(TokenManagementThrottle.THROTTLE_RATES, "token_management", "2/hour")


def test_creating_tokens_too_fast_gets_429_in_the_json_error_shape(org_a, api_as, admin_a, tight_token_limit):
    client = api_as(admin_a)

    codes = [
        client.post(f"{BASE}/tokens/", {"name": f"t{i}", "scope": "read"}, format="json").status_code
        for i in range(2)
    ]
    refused = client.post(f"{BASE}/tokens/", {"name": "t3", "scope": "read"}, format="json")

    assert codes == [201, 201]
    assert refused.status_code == 429
    body = refused.json()
    assert set(body) == {"error", "request_id"}
    assert body["error"]["code"] == "rate_limited"
    assert body["error"]["message"].startswith("Too many requests; try again in ")
    assert body["request_id"] == refused["X-Request-ID"]
    assert int(refused["Retry-After"]) > 0
    with all_tenants():
        assert ApiToken.objects.count() == 2


def test_reading_the_token_list_is_not_held_back_by_the_token_limit(
    org_a, api_as, admin_a, tight_token_limit
):
    client = api_as(admin_a)
    for i in range(2):
        client.post(f"{BASE}/tokens/", {"name": f"t{i}", "scope": "read"}, format="json")

    assert client.get(f"{BASE}/tokens/").status_code == 200


def test_the_token_limit_counts_each_administrator_apart(org_a, api_as, admin_a, tight_token_limit):
    from tenants.models import Role
    from tests.conftest import make_member

    other_admin = make_member(org_a, "second-admin", Role.ADMINISTRATOR)
    first = api_as(admin_a)
    for i in range(2):
        first.post(f"{BASE}/tokens/", {"name": f"t{i}", "scope": "read"}, format="json")

    response = api_as(other_admin).post(f"{BASE}/tokens/", {"name": "mine", "scope": "read"}, format="json")

    assert response.status_code == 201
