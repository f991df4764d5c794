"""What each role may do through the API in its own organization."""

import pytest
from social_django.models import UserSocialAuth

from tenants.models import Membership, Role
from tenants.scoping import all_tenants, tenant_scope
from tests.conftest import ORG_A_TID, make_member, microsoft_user

BASE = f"/api/v1/tenants/{ORG_A_TID}"
LAST_ADMIN = "This is the organization's last administrator. Make someone else an administrator first."


def _membership(tenant, user) -> Membership:
    with tenant_scope(tenant):
        return Membership.objects.get(user=user)


def _is_member(user) -> bool:
    with all_tenants():
        return Membership.objects.filter(user=user).exists()


@pytest.fixture
def newcomer(org_a):
    return microsoft_user(org_a, "nina-new", email="nina@org-a.example")


def test_every_member_reads_their_organization(api_as, admin_a, approver_a, viewer_a):
    for user in (admin_a, approver_a, viewer_a):
        response = api_as(user).get(f"{BASE}/")
        assert response.status_code == 200
        assert response.json()["tenant_id"] == ORG_A_TID
        assert response.json()["name"] == "Org A Health"


def test_a_viewer_cannot_read_memberships(org_a, api_as, viewer_a, admin_a):
    client = api_as(viewer_a)

    listed = client.get(f"{BASE}/memberships/")
    one = client.get(f"{BASE}/memberships/{_membership(org_a, admin_a).pk}/")

    assert listed.status_code == 403
    assert listed.json()["error"] == {
        "code": "permission_denied",
        "message": "Your role in this organization does not allow this.",
    }
    assert one.status_code == 403


def test_a_viewer_cannot_add_members(api_as, viewer_a, newcomer):
    response = api_as(viewer_a).post(
        f"{BASE}/memberships/", {"username": "nina-new", "role": "viewer"}, format="json"
    )

    assert response.status_code == 403
    assert not _is_member(newcomer)


def test_an_ehr_approver_reads_memberships(org_a, api_as, approver_a, admin_a, viewer_a):
    client = api_as(approver_a)

    listed = client.get(f"{BASE}/memberships/")
    one = client.get(f"{BASE}/memberships/{_membership(org_a, admin_a).pk}/")

    assert listed.status_code == 200
    rows = {row["username"]: row for row in listed.json()["results"]}
    assert set(rows) == {"alice-admin", "arthur-approver", "vera-viewer"}
    assert rows["arthur-approver"]["ehr_username"] == "ANALYST1"
    assert one.status_code == 200
    assert one.json()["role"] == "administrator"


def test_an_ehr_approver_cannot_change_memberships(org_a, api_as, approver_a, viewer_a, newcomer):
    client = api_as(approver_a)
    viewer_membership = _membership(org_a, viewer_a)

    created = client.post(f"{BASE}/memberships/", {"username": "nina-new", "role": "viewer"}, format="json")
    patched = client.patch(
        f"{BASE}/memberships/{viewer_membership.pk}/", {"role": "administrator"}, format="json"
    )
    deleted = client.delete(f"{BASE}/memberships/{viewer_membership.pk}/")

    assert [created.status_code, patched.status_code, deleted.status_code] == [403, 403, 403]
    assert _membership(org_a, viewer_a).role == Role.VIEWER
    assert not _is_member(newcomer)


def test_an_administrator_adds_a_member(org_a, api_as, admin_a, newcomer):
    response = api_as(admin_a).post(
        f"{BASE}/memberships/",
        {"username": "nina-new", "role": "ehr_approver", "ehr_username": " NINA01 "},
        format="json",
    )

    assert response.status_code == 201
    assert response.json()["username"] == "nina-new"
    assert response.json()["ehr_username"] == "NINA01"
    assert _membership(org_a, newcomer).role == Role.EHR_APPROVER


def test_adding_an_ehr_approver_without_an_ehr_username_is_refused_on_that_field(api_as, admin_a, newcomer):
    response = api_as(admin_a).post(
        f"{BASE}/memberships/", {"username": "nina-new", "role": "ehr_approver"}, format="json"
    )

    assert response.status_code == 400
    assert response.json()["error"]["fields"]["ehr_username"] == [
        "An EHR approver needs their EHR username, as they sign in to the EHR."
    ]
    assert not _is_member(newcomer)


def test_adding_someone_who_never_signed_in_is_refused_with_the_reason(api_as, admin_a):
    response = api_as(admin_a).post(
        f"{BASE}/memberships/", {"username": "ghost", "role": "viewer"}, format="json"
    )

    assert response.status_code == 400
    assert "Ask them to sign in once with their Microsoft account" in response.json()["error"]["message"]


def test_adding_an_existing_member_again_is_refused(org_a, api_as, admin_a, viewer_a):
    UserSocialAuth.objects.create(
        user=viewer_a, provider="azuread-v2-tenant-oauth2", uid="sub-vera", extra_data={"tid": ORG_A_TID}
    )
    response = api_as(admin_a).post(
        f"{BASE}/memberships/", {"username": "vera-viewer", "role": "administrator"}, format="json"
    )

    assert response.status_code == 400
    assert "already a member" in response.json()["error"]["fields"]["user"][0]


def test_an_unknown_role_is_refused(api_as, admin_a, newcomer):
    response = api_as(admin_a).post(
        f"{BASE}/memberships/", {"username": "nina-new", "role": "owner"}, format="json"
    )

    assert response.status_code == 400
    assert "role" in response.json()["error"]["fields"]


def test_an_administrator_changes_a_role(org_a, api_as, admin_a, viewer_a):
    membership = _membership(org_a, viewer_a)

    response = api_as(admin_a).patch(
        f"{BASE}/memberships/{membership.pk}/",
        {"role": "ehr_approver", "ehr_username": "VERA9"},
        format="json",
    )

    assert response.status_code == 200
    membership = _membership(org_a, viewer_a)
    assert (membership.role, membership.ehr_username) == (Role.EHR_APPROVER, "VERA9")


def test_making_someone_an_ehr_approver_without_an_ehr_username_is_refused(org_a, api_as, admin_a, viewer_a):
    membership = _membership(org_a, viewer_a)

    response = api_as(admin_a).patch(
        f"{BASE}/memberships/{membership.pk}/", {"role": "ehr_approver"}, format="json"
    )

    assert response.status_code == 400
    assert "ehr_username" in response.json()["error"]["fields"]
    assert _membership(org_a, viewer_a).role == Role.VIEWER


def test_an_administrator_removes_a_member(org_a, api_as, admin_a, viewer_a):
    membership = _membership(org_a, viewer_a)

    response = api_as(admin_a).delete(f"{BASE}/memberships/{membership.pk}/")

    assert response.status_code == 204
    with tenant_scope(org_a):
        assert not Membership.objects.filter(user=viewer_a).exists()


def test_the_last_administrator_cannot_be_removed(org_a, api_as, admin_a):
    membership = _membership(org_a, admin_a)

    response = api_as(admin_a).delete(f"{BASE}/memberships/{membership.pk}/")

    assert response.status_code == 400
    assert LAST_ADMIN in response.json()["error"]["message"]
    assert _membership(org_a, admin_a).role == Role.ADMINISTRATOR


def test_the_last_administrator_cannot_be_demoted(org_a, api_as, admin_a):
    membership = _membership(org_a, admin_a)

    response = api_as(admin_a).patch(
        f"{BASE}/memberships/{membership.pk}/", {"role": "viewer"}, format="json"
    )

    assert response.status_code == 400
    assert LAST_ADMIN in response.json()["error"]["message"]
    assert _membership(org_a, admin_a).role == Role.ADMINISTRATOR


def test_an_administrator_may_step_down_once_there_is_another(org_a, api_as, admin_a):
    make_member(org_a, "second-admin", Role.ADMINISTRATOR)
    membership = _membership(org_a, admin_a)

    response = api_as(admin_a).patch(
        f"{BASE}/memberships/{membership.pk}/", {"role": "viewer"}, format="json"
    )

    assert response.status_code == 200
    assert _membership(org_a, admin_a).role == Role.VIEWER


def test_an_administrator_of_another_organization_does_not_count_as_the_last_one(
    org_a, org_b, api_as, admin_a, admin_b
):
    # org B has an administrator, org A only one: A's must stay.
    response = api_as(admin_a).delete(f"{BASE}/memberships/{_membership(org_a, admin_a).pk}/")

    assert response.status_code == 400


@pytest.mark.parametrize("member", ["approver_a", "viewer_a"])
def test_only_administrators_reach_the_tokens_endpoints(
    request, org_a, api_as, admin_a, member, token_client
):
    existing = token_client(org_a).issued.token
    client = api_as(request.getfixturevalue(member))

    responses = [
        client.get(f"{BASE}/tokens/"),
        client.post(f"{BASE}/tokens/", {"name": "mine", "scope": "read"}, format="json"),
        client.post(f"{BASE}/tokens/{existing.pk}/revoke/"),
    ]

    assert [r.status_code for r in responses] == [403, 403, 403]
    existing.refresh_from_db()
    assert existing.revoked_at is None


@pytest.mark.parametrize("scope", ["read", "read_write"])
def test_an_api_token_cannot_use_the_tokens_endpoints(org_a, token_client, scope):
    client = token_client(org_a, scope)

    listed = client.get(f"{BASE}/tokens/")
    created = client.post(f"{BASE}/tokens/", {"name": "minted", "scope": "read_write"}, format="json")
    revoked = client.post(f"{BASE}/tokens/{client.issued.token.pk}/revoke/")

    for response in (listed, created, revoked):
        assert response.status_code == 403
        assert response.json()["error"]["message"] == (
            "API tokens cannot use this endpoint; sign in as an administrator."
        )
    client.issued.token.refresh_from_db()
    assert client.issued.token.revoked_at is None


def test_a_signed_in_administrator_lists_the_tokens(org_a, api_as, admin_a, token_client):
    token_client(org_a)

    response = api_as(admin_a).get(f"{BASE}/tokens/")

    assert response.status_code == 200
    assert [t["name"] for t in response.json()["results"]] == ["test token"]


def test_the_me_endpoint_lists_the_callers_organizations_and_roles(api_as, org_b, admin_a):
    with tenant_scope(org_b):
        Membership.objects.create(tenant=org_b, user=admin_a, role=Role.VIEWER)

    body = api_as(admin_a).get("/api/v1/me/").json()

    assert body["username"] == "alice-admin"
    assert [(m["tenant"]["name"], m["role"]) for m in body["memberships"]] == [
        ("Org A Health", "administrator"),
        ("Org B Clinics", "viewer"),
    ]


def test_anonymous_callers_get_401(client, org_a):
    for path in ("/api/v1/me/", "/api/v1/tenants/", f"{BASE}/", f"{BASE}/memberships/", f"{BASE}/tokens/"):
        response = client.get(path)
        assert response.status_code == 401, path
        assert response.json()["error"]["code"] == "not_authenticated"
