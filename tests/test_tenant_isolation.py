"""A member or token of organization A never sees nor changes organization B's rows."""

import pytest
from django.urls import URLPattern

from tenants import api_urls
from tenants.models import ApiToken, Membership, Role, TenantStatus
from tenants.scoping import all_tenants, tenant_scope
from tests.conftest import ORG_A_TID, ORG_B_TID, make_member, signed_in

B = f"/api/v1/tenants/{ORG_B_TID}"
A = f"/api/v1/tenants/{ORG_A_TID}"


@pytest.fixture
def b_rows(org_b, admin_b, token_client):
    """Org B's membership and token, and the ids an attacker from A would try."""
    with tenant_scope(org_b):
        membership = Membership.objects.get(user=admin_b)
    token = token_client(org_b, "read_write").issued.token
    return {"membership": membership.pk, "token": token.pk}


# Every tenant-owned endpoint of tenants/api_urls.py, with every method it answers.
TENANT_REQUESTS = [
    ("get", "api-tenant", "{base}/"),
    ("get", "api-memberships", "{base}/memberships/"),
    ("post", "api-memberships", "{base}/memberships/"),
    ("get", "api-membership", "{base}/memberships/{membership}/"),
    ("patch", "api-membership", "{base}/memberships/{membership}/"),
    ("delete", "api-membership", "{base}/memberships/{membership}/"),
    ("get", "api-tokens", "{base}/tokens/"),
    ("post", "api-tokens", "{base}/tokens/"),
    ("post", "api-token-revoke", "{base}/tokens/{token}/revoke/"),
]
BODIES = {
    "api-memberships": {"username": "alice-admin", "role": "administrator"},
    "api-membership": {"role": "viewer"},
    "api-tokens": {"name": "stolen", "scope": "read_write"},
}


def test_the_isolation_tests_cover_every_tenant_endpoint_of_the_api():
    named = {
        p.name for p in api_urls.urlpatterns if isinstance(p, URLPattern) and "tenant_id" in str(p.pattern)
    }

    assert named == {name for _, name, _ in TENANT_REQUESTS}


def _call(client, method: str, name: str, template: str, base: str, ids: dict):
    path = template.format(base=base, **ids)
    return getattr(client, method)(path, BODIES.get(name, {}), format="json")


def _b_is_untouched(org_b, admin_b, b_rows):
    with tenant_scope(org_b):
        assert Membership.objects.get(pk=b_rows["membership"]).role == Role.ADMINISTRATOR
        assert [m.user for m in Membership.objects.all()] == [admin_b]
        assert ApiToken.objects.get(pk=b_rows["token"]).revoked_at is None
        assert list(ApiToken.objects.values_list("name", flat=True)) == ["test token"]


@pytest.mark.parametrize(("method", "name", "template"), TENANT_REQUESTS)
def test_an_administrator_of_a_gets_404_for_every_endpoint_of_b(
    api_as, admin_a, org_b, admin_b, b_rows, method, name, template
):
    response = _call(api_as(admin_a), method, name, template, B, b_rows)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    _b_is_untouched(org_b, admin_b, b_rows)


@pytest.mark.parametrize(("method", "name", "template"), TENANT_REQUESTS)
def test_a_read_write_token_of_a_gets_404_for_every_endpoint_of_b(
    org_a, token_client, org_b, admin_b, b_rows, method, name, template
):
    response = _call(token_client(org_a, "read_write"), method, name, template, B, b_rows)

    assert response.status_code == 404
    _b_is_untouched(org_b, admin_b, b_rows)


@pytest.mark.parametrize(
    ("method", "name", "template"),
    [r for r in TENANT_REQUESTS if "{membership}" in r[2] or "{token}" in r[2]],
)
def test_b_s_row_ids_under_a_s_url_are_not_found(
    api_as, admin_a, org_b, admin_b, b_rows, method, name, template
):
    response = _call(api_as(admin_a), method, name, template, A, b_rows)

    assert response.status_code == 404
    _b_is_untouched(org_b, admin_b, b_rows)


def test_a_token_of_a_cannot_reach_b_s_memberships_through_a_s_url(
    org_a, token_client, org_b, admin_b, b_rows
):
    client = token_client(org_a, "read_write")

    read = client.get(f"{A}/memberships/{b_rows['membership']}/")
    changed = client.patch(f"{A}/memberships/{b_rows['membership']}/", {"role": "viewer"}, format="json")
    removed = client.delete(f"{A}/memberships/{b_rows['membership']}/")

    # Reading says "no such row"; tokens may not change memberships at all.
    assert read.status_code == 404
    assert changed.status_code in (403, 404) and removed.status_code in (403, 404)
    _b_is_untouched(org_b, admin_b, b_rows)


def test_lists_never_show_b(api_as, admin_a, approver_a, org_b, admin_b, b_rows, token_client):
    client = api_as(admin_a)

    tenants = client.get("/api/v1/tenants/").json()["results"]
    me = client.get("/api/v1/me/").json()["memberships"]
    members = client.get(f"{A}/memberships/").json()["results"]
    tokens = client.get(f"{A}/tokens/").json()["results"]

    assert [t["tenant_id"] for t in tenants] == [ORG_A_TID]
    assert [m["tenant"]["tenant_id"] for m in me] == [ORG_A_TID]
    assert {m["username"] for m in members} == {"alice-admin", "arthur-approver"}
    assert tokens == []


def test_a_token_lists_only_its_own_organization(org_a, org_b, token_client):
    client = token_client(org_a)

    tenants = client.get("/api/v1/tenants/").json()["results"]
    me = client.get("/api/v1/me/").json()

    assert [t["tenant_id"] for t in tenants] == [ORG_A_TID]
    assert [m["tenant"]["tenant_id"] for m in me["memberships"]] == [ORG_A_TID]
    assert me["memberships"][0]["role"] == "token:read"


def test_a_member_of_a_suspended_organization_gets_404_for_it(api_as, org_a, admin_a):
    org_a.status = TenantStatus.SUSPENDED
    org_a.save()
    client = api_as(admin_a)

    assert client.get(f"{A}/").status_code == 404
    assert client.get("/api/v1/tenants/").json()["results"] == []


def test_an_unknown_tenant_id_is_404_like_a_foreign_one(api_as, admin_a):
    client = api_as(admin_a)

    assert client.get("/api/v1/tenants/99999999-9999-4999-8999-999999999999/").status_code == 404
    assert client.get("/api/v1/tenants/not-a-guid/memberships/").status_code == 404


# --- the portal ---------------------------------------------------------------------------


def test_the_portal_shows_only_the_active_organization(client, admin_a, org_b, admin_b):
    page = signed_in(client, admin_a).get("/portal/").content.decode()

    assert "Org A Health" in page
    assert ORG_A_TID in page
    assert "Org B Clinics" not in page
    assert ORG_B_TID not in page


def test_the_members_page_lists_only_the_active_organizations_members(client, admin_a, viewer_a, admin_b):
    page = signed_in(client, admin_a).get("/portal/members/").content.decode()

    assert "vera-viewer" in page
    assert "bob-admin" not in page


def test_the_tokens_page_lists_only_the_active_organizations_tokens(
    client, org_a, admin_a, org_b, token_client
):
    token_client(org_a)  # named "test token"
    b_token = token_client(org_b).issued.token
    with all_tenants():
        ApiToken.objects.filter(pk=b_token.pk).update(name="B's secret integration")

    page = signed_in(client, admin_a).get("/portal/api-tokens/").content.decode()

    assert "test token" in page
    assert "B&#x27;s secret integration" not in page
    assert b_token.prefix not in page


def test_switching_to_an_organization_you_do_not_belong_to_is_404(client, admin_a, org_b, admin_b):
    signed_in(client, admin_a)

    response = client.post("/portal/switch/", {"tenant": str(org_b.pk)})

    assert response.status_code == 404
    page = client.get("/portal/").content.decode()
    assert "Org A Health" in page
    assert "Org B Clinics" not in page


def test_switching_to_an_organization_you_belong_to_changes_the_active_one(client, admin_a, org_b, admin_b):
    with tenant_scope(org_b):
        Membership.objects.create(tenant=org_b, user=admin_a, role=Role.VIEWER)
    signed_in(client, admin_a)

    response = client.post("/portal/switch/", {"tenant": str(org_b.pk)}, follow=True)

    page = response.content.decode()
    assert "You are now working in Org B Clinics." in page
    assert f"<code>{ORG_B_TID}</code>" in page
    # A viewer in B: the administrator's pages of A are closed now.
    assert client.get("/portal/api-tokens/").status_code == 403
    assert client.get("/portal/members/").status_code == 403


def test_revoking_b_s_token_from_the_portal_of_a_is_404(client, admin_a, org_b, admin_b, b_rows):
    signed_in(client, admin_a)

    response = client.post(f"/portal/api-tokens/{b_rows['token']}/revoke/")

    assert response.status_code == 404
    _b_is_untouched(org_b, admin_b, b_rows)


def test_a_member_of_b_only_never_lands_in_a(client, org_a, admin_a, admin_b):
    session = signed_in(client, admin_b).session
    session["active_tenant_id"] = org_a.pk  # a stale or forged session value
    session.save()

    page = client.get("/portal/").content.decode()

    assert "Org B Clinics" in page
    assert "Org A Health" not in page


def test_a_user_with_no_membership_sees_no_organization(client, org_a, admin_a):
    from django.contrib.auth import get_user_model

    stranger = get_user_model().objects.create_user(username="stranger")

    response = signed_in(client, stranger).get("/portal/")

    assert response.status_code == 403
    assert "No organization yet" in response.content.decode()
    assert "Org A Health" not in response.content.decode()


def test_portal_pages_run_inside_the_active_tenants_scope(client, org_a, org_b, admin_a, admin_b):
    """The members page queries Membership.objects without naming a tenant: the scope does it."""
    make_member(org_b, "b-viewer", Role.VIEWER)

    page = signed_in(client, admin_a).get("/portal/members/").content.decode()

    assert "b-viewer" not in page
    assert "alice-admin" in page


# --- the support admin works across organizations ---------------------------------------------


@pytest.mark.parametrize(
    "path", ["/admin/tenants/membership/", "/admin/tenants/apitoken/", "/admin/tenants/tenant/"]
)
def test_support_staff_see_every_organizations_rows_in_the_admin(
    client, staff_user, admin_a, admin_b, token_client, org_a, org_b, path
):
    token_client(org_a)
    token_client(org_b)

    response = signed_in(client, staff_user).get(path)

    page = response.content.decode()
    assert response.status_code == 200
    assert "Org A Health" in page
    assert "Org B Clinics" in page


def test_support_staff_open_an_organization_with_its_members_inline(
    client, staff_user, org_a, admin_a, viewer_a
):
    response = signed_in(client, staff_user).get(f"/admin/tenants/tenant/{org_a.pk}/change/")

    page = response.content.decode()
    assert response.status_code == 200
    assert "alice-admin" in page or f'value="{admin_a.pk}"' in page
    assert f'value="{viewer_a.pk}"' in page


def test_support_staff_suspend_and_enable_organizations_with_admin_actions(client, staff_user, org_a, org_b):
    signed_in(client, staff_user)

    client.post("/admin/tenants/tenant/", {"action": "suspend", "_selected_action": [org_a.pk]})
    org_a.refresh_from_db()
    org_b.refresh_from_db()
    assert (org_a.status, org_b.status) == (TenantStatus.SUSPENDED, TenantStatus.ENABLED)

    client.post("/admin/tenants/tenant/", {"action": "enable", "_selected_action": [org_a.pk]})
    org_a.refresh_from_db()
    assert org_a.status == TenantStatus.ENABLED


def test_a_member_without_staff_status_is_sent_to_the_admin_sign_in(client, admin_a):
    response = signed_in(client, admin_a).get("/admin/tenants/membership/")

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_a_suspended_organization_disappears_from_the_portal_of_its_members(client, api_as, admin_a, org_b):
    with tenant_scope(org_b):
        Membership.objects.create(tenant=org_b, user=admin_a, role=Role.ADMINISTRATOR)
    org_b.status = TenantStatus.SUSPENDED
    org_b.save()
    signed_in(client, admin_a)

    page = client.get("/portal/").content.decode()
    switched = client.post("/portal/switch/", {"tenant": str(org_b.pk)})
    me = api_as(admin_a).get("/api/v1/me/").json()

    assert "Org B Clinics" not in page
    assert switched.status_code == 404
    assert [m["tenant"]["tenant_id"] for m in me["memberships"]] == [ORG_A_TID]
