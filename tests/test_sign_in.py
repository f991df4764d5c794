"""Sign-in: Microsoft Entra ID through social-auth's real pipeline, the demo sign-in, rate limits.

Microsoft is faked at the HTTP edge (tests/conftest.py `entra`): the discovery
document, the signing keys and the token endpoint answer with an id_token
signed by a key made for the test run, and social-auth verifies it for real.
"""

import pytest
from django.contrib.auth import get_user_model
from social_django.models import UserSocialAuth

from tenants import services
from tenants.middleware import ACTIVE_TENANT_SESSION_KEY
from tenants.models import AccessRequest, Membership, Role, Tenant, TenantStatus
from tenants.scoping import tenant_scope
from tests.conftest import ENTRA_CLIENT_ID, ORG_A_TID, ORG_B_TID, make_member

UNKNOWN_TID = "55555555-5555-4555-8555-555555555555"


def _users() -> list[str]:
    return sorted(get_user_model().objects.values_list("username", flat=True))


def test_a_user_of_an_enabled_organization_is_created_signed_in_and_lands_in_it(client, org_a, org_b, entra):
    response = entra.sign_in(client, tid=ORG_A_TID, sub="sub-pat", email="pat@org-a.example")

    assert response.status_code == 302
    assert response["Location"] == "/"
    link = UserSocialAuth.objects.get(provider="azuread-v2-tenant-oauth2", uid="sub-pat")
    assert link.user.email == "pat@org-a.example"
    assert link.extra_data["tid"] == ORG_A_TID
    assert client.session["_auth_user_id"] == str(link.user.pk)
    assert client.session[ACTIVE_TENANT_SESSION_KEY] == org_a.pk


def test_only_the_stable_ids_are_kept_from_the_identity_provider(client, org_a, entra):
    entra.sign_in(client, tid=ORG_A_TID, sub="sub-pat")

    extra = UserSocialAuth.objects.get(uid="sub-pat").extra_data
    assert extra == {"tid": ORG_A_TID, "oid": "oid-sub-pat"}


def test_a_member_signing_in_again_lands_on_the_same_account_and_sees_their_organization(
    client, org_a, entra
):
    entra.sign_in(client, tid=ORG_A_TID, sub="sub-pat", email="pat@org-a.example")
    user = UserSocialAuth.objects.get(uid="sub-pat").user
    with tenant_scope(org_a):
        Membership.objects.create(tenant=org_a, user=user, role=Role.VIEWER)
    client.logout()

    entra.sign_in(client, tid=ORG_A_TID, sub="sub-pat", email="pat@org-a.example")

    assert get_user_model().objects.count() == 1
    page = client.get("/portal/").content.decode()
    assert "Org A Health" in page
    assert "Viewer" in page


def test_signing_in_through_b_opens_the_session_on_b_for_a_member_of_both(client, org_a, org_b, entra):
    entra.sign_in(client, tid=ORG_A_TID, sub="sub-both")
    user = UserSocialAuth.objects.get(uid="sub-both").user
    for tenant in (org_a, org_b):
        with tenant_scope(tenant):
            Membership.objects.create(tenant=tenant, user=user, role=Role.VIEWER)
    client.logout()

    entra.sign_in(client, tid=ORG_B_TID, sub="sub-both")

    assert client.session[ACTIVE_TENANT_SESSION_KEY] == org_b.pk
    assert "<code>" + ORG_B_TID in client.get("/portal/").content.decode()


def test_an_unknown_organization_is_refused_with_a_link_to_request_access_and_no_account(
    client, org_a, entra
):
    response = entra.sign_in(client, tid=UNKNOWN_TID, sub="sub-stranger", email="sam@unknown.example")

    assert response.status_code == 302
    assert response["Location"] == "/sign-in/refused/"
    assert _users() == []
    assert not UserSocialAuth.objects.exists()
    assert "_auth_user_id" not in client.session
    refused = client.get("/sign-in/refused/")
    page = refused.content.decode()
    assert refused.status_code == 403
    assert f"Microsoft 365 tenant <code>{UNKNOWN_TID}</code>) does not use the EHR connector yet" in page
    assert 'href="/access-request/"' in page
    assert "No account was created for you." in page


def test_the_refused_user_can_request_access_with_their_verified_identity(client, db, entra):
    entra.sign_in(client, tid=UNKNOWN_TID, sub="sub-stranger", email="sam@unknown.example")

    response = client.post(
        "/access-request/",
        {
            "organization_name": "Unknown Health",
            "microsoft_tenant_id": ORG_A_TID,  # ignored: the tid from Microsoft wins
            "ehr_vendor": "epic",
            "data_region": "americas",
            "technical_contact_email": "it@unknown.example",
        },
    )

    assert response.status_code == 302
    access_request = AccessRequest.objects.get()
    assert access_request.microsoft_tenant_id == UNKNOWN_TID
    assert access_request.requester_email == "sam@unknown.example"
    assert access_request.requester_subject == "sub-stranger"
    assert _users() == []


def test_after_approval_the_refused_requester_signs_in_as_the_new_organizations_administrator(
    client, entra, staff_user
):
    entra.sign_in(client, tid=UNKNOWN_TID, sub="sub-stranger", email="sam@unknown.example")
    client.post(
        "/access-request/",
        {
            "organization_name": "Unknown Health",
            "microsoft_tenant_id": UNKNOWN_TID,
            "ehr_vendor": "epic",
            "data_region": "americas",
            "technical_contact_email": "it@unknown.example",
        },
    )
    services.access_request_approve(access_request=AccessRequest.objects.get(), reviewed_by=staff_user)
    client.cookies.clear()

    response = entra.sign_in(client, tid=UNKNOWN_TID, sub="sub-stranger", email="sam@unknown.example")

    assert response["Location"] == "/"
    assert get_user_model().objects.filter(is_staff=False).count() == 1
    page = client.get("/portal/").content.decode()
    assert "Unknown Health" in page
    assert "Administrator" in page


@pytest.mark.parametrize(
    ("status", "says"),
    [
        (TenantStatus.ACCESS_REQUESTED, "has asked for access, and the request has not been approved yet"),
        (TenantStatus.SUSPENDED, "The EHR connector is suspended for Org A Health"),
    ],
)
def test_a_waiting_or_suspended_organization_is_refused_with_a_page_that_says_so(
    client, org_a, entra, status, says
):
    org_a.status = status
    org_a.save()

    response = entra.sign_in(client, tid=ORG_A_TID, sub="sub-pat")

    assert response["Location"] == "/sign-in/refused/"
    assert _users() == []
    page = client.get("/sign-in/refused/").content.decode()
    assert says in page


def test_an_existing_member_of_a_suspended_organization_is_refused_too(client, org_a, entra):
    entra.sign_in(client, tid=ORG_A_TID, sub="sub-pat")
    client.logout()
    org_a.status = TenantStatus.SUSPENDED
    org_a.save()

    response = entra.sign_in(client, tid=ORG_A_TID, sub="sub-pat")

    assert response["Location"] == "/sign-in/refused/"
    assert "_auth_user_id" not in client.session


def test_an_id_token_signed_by_another_key_signs_nobody_in(client, org_a, entra):
    from cryptography.hazmat.primitives.asymmetric import rsa

    entra.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    response = entra.sign_in(client, tid=ORG_A_TID, sub="sub-forger")

    assert response["Location"] == "/sign-in/"
    assert _users() == []
    assert "_auth_user_id" not in client.session


@pytest.mark.parametrize(
    "bad_claims",
    [
        {"aud": "another-application"},
        {"iss": f"https://login.microsoftonline.com/{ORG_B_TID}/v2.0"},
        {"exp": 1_000_000_000, "iat": 999_990_000, "nbf": 999_990_000},
    ],
    ids=["audience", "issuer-of-another-tenant", "expired"],
)
def test_an_id_token_with_a_wrong_claim_signs_nobody_in(client, org_a, entra, bad_claims):
    response = entra.sign_in(client, tid=ORG_A_TID, sub="sub-pat", **bad_claims)

    assert response.status_code == 302
    assert response["Location"] == "/sign-in/"
    assert _users() == []


def test_a_callback_with_a_forged_state_signs_nobody_in(client, org_a, entra):
    client.post("/auth/login/azuread-v2-tenant-oauth2/")

    response = client.get("/auth/complete/azuread-v2-tenant-oauth2/", {"code": "x", "state": "forged"})

    assert response.status_code == 302
    assert response["Location"] == "/sign-in/"
    assert _users() == []


def test_the_sign_in_page_offers_microsoft_as_a_post_form(client, db, entra):
    page = client.get("/sign-in/").content.decode()

    assert 'action="/auth/login/azuread-v2-tenant-oauth2/"' in page
    assert 'method="post"' in page
    assert ENTRA_CLIENT_ID not in page


def test_the_refused_page_without_a_refusal_sends_you_to_sign_in(client, db):
    response = client.get("/sign-in/refused/")

    assert response.status_code == 302
    assert response["Location"] == "/sign-in/"


# --- the demo sign-in ------------------------------------------------------------------------


@pytest.fixture
def demo_admin(org_a):
    return make_member(org_a, "demo-admin", Role.ADMINISTRATOR)


def test_the_demo_sign_in_signs_in_a_demo_user(client, settings, demo_admin):
    settings.DEMO_SIGN_IN = True

    response = client.post("/sign-in/demo/", {"username": "demo-admin"})

    assert response.status_code == 302
    assert response["Location"] == "/portal/"
    assert client.session["_auth_user_id"] == str(demo_admin.pk)


def test_the_sign_in_page_lists_the_demo_users_when_the_demo_sign_in_is_on(
    client, settings, demo_admin, admin_a
):
    settings.DEMO_SIGN_IN = True

    page = client.get("/sign-in/").content.decode()

    assert "Demo sign-in (local only)" in page
    assert "demo-admin" in page
    assert "alice-admin" not in page


def test_the_demo_sign_in_is_404_when_off(client, settings, demo_admin):
    settings.DEMO_SIGN_IN = False

    response = client.post("/sign-in/demo/", {"username": "demo-admin"})

    assert response.status_code == 404
    assert "_auth_user_id" not in client.session
    assert "Demo sign-in" not in client.get("/sign-in/").content.decode()


def test_the_demo_sign_in_refuses_users_who_are_not_demo_users(client, settings, admin_a, staff_user):
    settings.DEMO_SIGN_IN = True

    for username in ("alice-admin", "support-sam", "demo-nobody"):
        response = client.post("/sign-in/demo/", {"username": username}, follow=True)
        assert "That is not one of the demo users." in response.content.decode()
        assert "_auth_user_id" not in client.session


def test_the_demo_sign_in_refuses_a_deactivated_demo_user(client, settings, demo_admin):
    settings.DEMO_SIGN_IN = True
    demo_admin.is_active = False
    demo_admin.save()

    client.post("/sign-in/demo/", {"username": "demo-admin"})

    assert "_auth_user_id" not in client.session


def test_the_demo_sign_in_answers_post_only(client, settings, demo_admin):
    settings.DEMO_SIGN_IN = True

    assert client.get("/sign-in/demo/", {"username": "demo-admin"}).status_code == 405


def test_too_many_sign_in_attempts_from_one_address_get_429(client, settings, demo_admin):
    settings.DEMO_SIGN_IN = True
    settings.SIGN_IN_RATE = "3/m"

    codes = [client.post("/sign-in/demo/", {"username": "demo-nobody"}).status_code for _ in range(4)]

    assert codes == [302, 302, 302, 429]
    blocked = client.post("/sign-in/demo/", {"username": "demo-admin"})
    assert blocked.status_code == 429
    assert "Too many attempts from your address" in blocked.content.decode()
    assert "_auth_user_id" not in client.session


def test_the_sign_in_rate_limit_counts_each_address_apart(client, settings, demo_admin):
    settings.DEMO_SIGN_IN = True
    settings.SIGN_IN_RATE = "1/m"

    first = client.post("/sign-in/demo/", {"username": "demo-nobody"}, REMOTE_ADDR="10.0.0.1")
    other = client.post("/sign-in/demo/", {"username": "demo-admin"}, REMOTE_ADDR="10.0.0.2")

    assert first.status_code == 302
    assert other.status_code == 302
    assert client.session["_auth_user_id"] == str(demo_admin.pk)


def test_no_tenant_is_created_by_any_sign_in(client, org_a, entra):
    entra.sign_in(client, tid=UNKNOWN_TID, sub="s1")
    entra.sign_in(client, tid=ORG_A_TID, sub="s2")

    assert list(Tenant.objects.values_list("microsoft_tenant_id", flat=True)) == [ORG_A_TID]
