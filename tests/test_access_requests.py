"""An organization asks for access; support staff approve or reject; the requester hears back."""

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from social_django.models import UserSocialAuth

from tenants import services
from tenants.auth_pipeline import REFUSAL_SESSION_KEY
from tenants.models import AccessRequest, AccessRequestState, Membership, Role, Tenant, TenantStatus
from tenants.scoping import tenant_scope
from tests.conftest import ORG_A_TID, signed_in

NEW_TID = "33333333-3333-4333-8333-333333333333"
DUPLICATE_MESSAGE = "An access request for this Microsoft 365 tenant ID is already waiting for review."


def _request(
    *, tid: str = NEW_TID, requested_by=None, subject: str = "", email: str = "ravi@newclinic.example"
):
    return services.access_request_create(
        requested_by=requested_by,
        requester_email=email,
        requester_subject=subject,
        organization_name="  New Clinic  ",
        microsoft_tenant_id=tid,
        ehr_vendor="epic",
        data_region="europe",
        technical_contact_email="ehr-team@newclinic.example",
    )


@pytest.fixture
def requester(db):
    return get_user_model().objects.create_user(username="ravi", email="ravi@newclinic.example")


def _admins_of(tenant: Tenant) -> list[str]:
    with tenant_scope(tenant):
        return sorted(m.user.username for m in Membership.objects.filter(role=Role.ADMINISTRATOR))


# --- the service ---------------------------------------------------------------------


def test_a_request_is_recorded_open_with_a_normalized_tenant_id_and_a_status_token(requester):
    access_request = _request(tid=NEW_TID.upper(), requested_by=requester)

    assert access_request.state == AccessRequestState.OPEN
    assert access_request.microsoft_tenant_id == NEW_TID
    assert access_request.organization_name == "New Clinic"
    assert len(access_request.status_token) >= 40
    assert access_request.requested_by == requester
    assert not Tenant.objects.filter(microsoft_tenant_id=NEW_TID).exists()


def test_it_refuses_a_request_whose_tenant_id_is_not_a_guid(requester):
    with pytest.raises(ValidationError, match="is not a Microsoft 365 tenant ID"):
        _request(tid="newclinic.onmicrosoft.com", requested_by=requester)

    assert AccessRequest.objects.count() == 0


def test_it_refuses_a_second_open_request_for_the_same_tenant_id(requester):
    _request(requested_by=requester)

    with pytest.raises(ValidationError) as caught:
        _request(tid=NEW_TID.upper(), email="someone-else@newclinic.example")

    assert DUPLICATE_MESSAGE in caught.value.message_dict["microsoft_tenant_id"][0]
    assert AccessRequest.objects.count() == 1


def test_the_database_itself_refuses_a_second_open_request_for_one_tenant_id(requester):
    first = _request(requested_by=requester)

    with pytest.raises(IntegrityError), transaction.atomic():
        AccessRequest.objects.create(
            organization_name="Racer",
            microsoft_tenant_id=first.microsoft_tenant_id,
            ehr_vendor="epic",
            data_region="europe",
            technical_contact_email="x@example.org",
            requester_email="x@example.org",
            status_token="another-token",
        )


def test_it_refuses_a_request_for_an_organization_that_already_uses_the_connector(org_a, requester):
    with pytest.raises(ValidationError, match="already uses the connector"):
        _request(tid=ORG_A_TID, requested_by=requester)


def test_a_new_request_may_follow_a_rejected_one(requester, staff_user):
    first = _request(requested_by=requester)
    services.access_request_reject(access_request=first, reviewed_by=staff_user, reason="Incomplete.")

    second = _request(requested_by=requester)

    assert second.state == AccessRequestState.OPEN
    assert second.pk != first.pk


def test_approving_creates_the_enabled_tenant_and_makes_the_requester_administrator(requester, staff_user):
    access_request = _request(requested_by=requester)

    tenant = services.access_request_approve(access_request=access_request, reviewed_by=staff_user)

    assert tenant.status == TenantStatus.ENABLED
    assert (tenant.name, tenant.microsoft_tenant_id, tenant.ehr_vendor, tenant.data_region) == (
        "New Clinic",
        NEW_TID,
        "epic",
        "europe",
    )
    assert _admins_of(tenant) == ["ravi"]
    access_request.refresh_from_db()
    assert access_request.state == AccessRequestState.APPROVED
    assert access_request.reviewed_by == staff_user
    assert access_request.reviewed_at is not None
    assert access_request.tenant == tenant


@pytest.mark.parametrize("previous_status", [TenantStatus.SUSPENDED, TenantStatus.ACCESS_REQUESTED])
def test_approving_re_enables_an_existing_tenant_instead_of_making_a_second_one(
    requester, staff_user, previous_status
):
    existing = Tenant.objects.create(
        name="Old Name",
        microsoft_tenant_id=NEW_TID,
        ehr_vendor="epic",
        data_region="europe",
        status=previous_status,
    )
    access_request = _request(requested_by=requester)

    tenant = services.access_request_approve(access_request=access_request, reviewed_by=staff_user)

    assert tenant.pk == existing.pk
    assert Tenant.objects.filter(microsoft_tenant_id=NEW_TID).count() == 1
    existing.refresh_from_db()
    assert existing.status == TenantStatus.ENABLED
    assert _admins_of(tenant) == ["ravi"]


def test_approving_a_request_from_someone_without_an_account_creates_one_linked_to_their_entra_subject(
    staff_user,
):
    access_request = _request(subject="entra-sub-ravi", email="Ravi@NewClinic.example")

    tenant = services.access_request_approve(access_request=access_request, reviewed_by=staff_user)

    link = UserSocialAuth.objects.get(provider="azuread-v2-tenant-oauth2", uid="entra-sub-ravi")
    assert link.user.email == "ravi@newclinic.example"
    assert _admins_of(tenant) == [link.user.username]
    access_request.refresh_from_db()
    assert access_request.requested_by == link.user


def test_approving_reuses_the_account_already_linked_to_the_requesters_subject(staff_user):
    existing = get_user_model().objects.create_user(username="already-here")
    UserSocialAuth.objects.create(user=existing, provider="azuread-v2-tenant-oauth2", uid="entra-sub-ravi")
    access_request = _request(subject="entra-sub-ravi")

    tenant = services.access_request_approve(access_request=access_request, reviewed_by=staff_user)

    assert _admins_of(tenant) == ["already-here"]
    assert get_user_model().objects.count() == 2  # the staff user and the existing one


def test_it_refuses_to_approve_a_request_twice(requester, staff_user):
    access_request = _request(requested_by=requester)
    services.access_request_approve(access_request=access_request, reviewed_by=staff_user)

    with pytest.raises(ValidationError, match="This request was already approved."):
        services.access_request_approve(access_request=access_request, reviewed_by=staff_user)


def test_it_refuses_to_approve_a_rejected_request(requester, staff_user):
    access_request = _request(requested_by=requester)
    services.access_request_reject(access_request=access_request, reviewed_by=staff_user, reason="No.")

    with pytest.raises(ValidationError, match="already rejected"):
        services.access_request_approve(access_request=access_request, reviewed_by=staff_user)

    assert not Tenant.objects.filter(microsoft_tenant_id=NEW_TID).exists()


@pytest.mark.parametrize("reason", ["", "   \n"])
def test_it_refuses_to_reject_without_a_reason(requester, staff_user, reason):
    access_request = _request(requested_by=requester)

    with pytest.raises(ValidationError) as caught:
        services.access_request_reject(access_request=access_request, reviewed_by=staff_user, reason=reason)

    assert caught.value.message_dict["rejection_reason"] == [
        "Say why the request is rejected; the requester will read it."
    ]
    access_request.refresh_from_db()
    assert access_request.state == AccessRequestState.OPEN


def test_rejecting_records_the_reason_and_who_decided(requester, staff_user):
    access_request = _request(requested_by=requester)

    services.access_request_reject(
        access_request=access_request, reviewed_by=staff_user, reason="  Not a healthcare organization.  "
    )

    access_request.refresh_from_db()
    assert access_request.state == AccessRequestState.REJECTED
    assert access_request.rejection_reason == "Not a healthcare organization."
    assert access_request.reviewed_by == staff_user
    assert access_request.tenant is None


def test_it_refuses_to_reject_an_approved_request(requester, staff_user):
    access_request = _request(requested_by=requester)
    services.access_request_approve(access_request=access_request, reviewed_by=staff_user)

    with pytest.raises(ValidationError, match="already approved"):
        services.access_request_reject(access_request=access_request, reviewed_by=staff_user, reason="Oops")


def test_approval_emails_the_requester_and_the_technical_contact(
    requester, staff_user, django_capture_on_commit_callbacks
):
    access_request = _request(requested_by=requester)

    with django_capture_on_commit_callbacks(execute=True):
        services.access_request_approve(access_request=access_request, reviewed_by=staff_user)

    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.subject == "Access approved for New Clinic"
    assert sorted(message.to) == ["ehr-team@newclinic.example", "ravi@newclinic.example"]
    assert f"/access-request/{access_request.status_token}/" in message.body


def test_rejection_emails_the_reason(requester, staff_user, django_capture_on_commit_callbacks):
    access_request = _request(requested_by=requester)

    with django_capture_on_commit_callbacks(execute=True):
        services.access_request_reject(
            access_request=access_request, reviewed_by=staff_user, reason="Not a healthcare organization."
        )

    assert len(mail.outbox) == 1
    assert mail.outbox[0].subject == "Access request for New Clinic was not approved"
    assert "Not a healthcare organization." in mail.outbox[0].body


def test_no_email_is_sent_while_a_request_waits_or_when_a_decision_is_refused(
    requester, staff_user, django_capture_on_commit_callbacks
):
    access_request = _request(requested_by=requester)
    with django_capture_on_commit_callbacks(execute=True):
        services.access_request_approve(access_request=access_request, reviewed_by=staff_user)
    mail.outbox.clear()

    with django_capture_on_commit_callbacks(execute=True) as callbacks, pytest.raises(ValidationError):
        services.access_request_approve(access_request=access_request, reviewed_by=staff_user)

    assert callbacks == []
    assert mail.outbox == []


# --- the admin actions -----------------------------------------------------------------

CHANGELIST = "/admin/tenants/accessrequest/"


def _action(client, action: str, *requests, **extra):
    data = {"action": action, "_selected_action": [r.pk for r in requests], **extra}
    return client.post(CHANGELIST, data, follow=True)


def test_the_admin_approve_action_enables_the_organization_and_says_so(
    client, staff_user, requester, django_capture_on_commit_callbacks
):
    access_request = _request(requested_by=requester)
    signed_in(client, staff_user)

    with django_capture_on_commit_callbacks(execute=True):
        response = _action(client, "approve", access_request)

    assert response.status_code == 200
    assert "1 request(s) approved." in response.content.decode()
    tenant = Tenant.objects.get(microsoft_tenant_id=NEW_TID)
    assert tenant.status == TenantStatus.ENABLED
    assert _admins_of(tenant) == ["ravi"]
    assert len(mail.outbox) == 1


def test_the_admin_approve_action_reports_a_request_that_was_already_decided(client, staff_user, requester):
    access_request = _request(requested_by=requester)
    services.access_request_approve(access_request=access_request, reviewed_by=staff_user)
    signed_in(client, staff_user)

    response = _action(client, "approve", access_request)

    page = response.content.decode()
    assert "New Clinic: This request was already approved." in page
    assert "request(s) approved" not in page


def test_the_admin_reject_action_first_asks_for_a_reason_on_an_intermediate_page(
    client, staff_user, requester
):
    access_request = _request(requested_by=requester)
    signed_in(client, staff_user)

    response = client.post(CHANGELIST, {"action": "reject", "_selected_action": [access_request.pk]})

    assert response.status_code == 200
    assert "admin/tenants/reject_access_requests.html" in [t.name for t in response.templates]
    page = response.content.decode()
    assert "These requests will be rejected" in page
    assert f"New Clinic ({NEW_TID})" in page
    assert 'name="reason"' in page
    access_request.refresh_from_db()
    assert access_request.state == AccessRequestState.OPEN


def test_the_admin_reject_action_with_a_reason_rejects_and_emails(
    client, staff_user, requester, django_capture_on_commit_callbacks
):
    access_request = _request(requested_by=requester)
    signed_in(client, staff_user)

    with django_capture_on_commit_callbacks(execute=True):
        response = _action(
            client, "reject", access_request, apply="1", reason="Duplicate of another request."
        )

    assert "1 request(s) rejected." in response.content.decode()
    access_request.refresh_from_db()
    assert access_request.state == AccessRequestState.REJECTED
    assert access_request.rejection_reason == "Duplicate of another request."
    assert access_request.reviewed_by == staff_user
    assert "Duplicate of another request." in mail.outbox[0].body


def test_the_admin_reject_action_without_a_reason_shows_the_form_again_and_rejects_nothing(
    client, staff_user, requester
):
    access_request = _request(requested_by=requester)
    signed_in(client, staff_user)

    response = client.post(
        CHANGELIST, {"action": "reject", "_selected_action": [access_request.pk], "apply": "1", "reason": ""}
    )

    assert response.status_code == 200
    assert "This field is required." in response.content.decode()
    access_request.refresh_from_db()
    assert access_request.state == AccessRequestState.OPEN
    assert mail.outbox == []


def test_the_admin_lists_access_requests_and_offers_no_add_button(client, staff_user, requester):
    _request(requested_by=requester)
    signed_in(client, staff_user)

    response = client.get(CHANGELIST)

    assert response.status_code == 200
    assert "New Clinic" in response.content.decode()
    assert client.get(CHANGELIST + "add/").status_code == 403


def test_someone_without_staff_status_cannot_reach_the_admin_actions(client, requester):
    access_request = _request(requested_by=requester)
    signed_in(client, requester)

    response = client.post(CHANGELIST, {"action": "approve", "_selected_action": [access_request.pk]})

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
    access_request.refresh_from_db()
    assert access_request.state == AccessRequestState.OPEN


# --- the request access page -------------------------------------------------------------

FORM = {
    "organization_name": "New Clinic",
    "microsoft_tenant_id": NEW_TID,
    "ehr_vendor": "oracle_health",
    "data_region": "asia_pacific",
    "technical_contact_email": "ehr-team@newclinic.example",
}


def _refused(client, *, tid: str = NEW_TID, reason: str = "unknown"):
    """The session as tenants/auth_pipeline.py leaves it after a refused Microsoft sign-in."""
    session = client.session
    session[REFUSAL_SESSION_KEY] = {
        "reason": reason,
        "tid": tid,
        "email": "nia@newclinic.example",
        "subject": "entra-sub-nia",
        "organization": "",
    }
    session.save()
    return client


def test_a_signed_in_user_sends_a_request_and_lands_on_its_status_page(client, requester):
    signed_in(client, requester)

    response = client.post("/access-request/", FORM)

    access_request = AccessRequest.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/access-request/{access_request.status_token}/"
    assert access_request.requested_by == requester
    assert access_request.requester_email == "ravi@newclinic.example"
    assert (access_request.ehr_vendor, access_request.data_region) == ("oracle_health", "asia_pacific")


def test_a_signed_in_user_without_an_email_must_give_one(client, db):
    user = get_user_model().objects.create_user(username="no-mail")
    signed_in(client, user)

    response = client.post("/access-request/", FORM)

    assert response.status_code == 200
    assert "Give an email address we can answer to." in response.content.decode()
    assert AccessRequest.objects.count() == 0

    response = client.post("/access-request/", {**FORM, "requester_email": "no-mail@newclinic.example"})
    assert response.status_code == 302
    assert AccessRequest.objects.get().requester_email == "no-mail@newclinic.example"


def test_the_form_shows_the_duplicate_message_for_a_second_open_request(client, requester):
    _request(requested_by=requester)
    signed_in(client, requester)

    response = client.post("/access-request/", FORM)

    assert response.status_code == 200
    assert DUPLICATE_MESSAGE in response.content.decode()
    assert AccessRequest.objects.count() == 1


def test_the_form_says_what_is_wrong_with_a_bad_tenant_id(client, requester):
    signed_in(client, requester)

    response = client.post("/access-request/", {**FORM, "microsoft_tenant_id": "newclinic.example"})

    assert response.status_code == 200
    assert "newclinic.example is not a Microsoft 365 tenant ID" in response.content.decode()
    assert AccessRequest.objects.count() == 0


@pytest.mark.parametrize("entra", [True, False])
def test_in_production_an_anonymous_visitor_is_told_to_sign_in_with_microsoft_first(
    client, db, settings, entra
):
    settings.DEMO_SIGN_IN = False
    settings.ENTRA_CONFIGURED = entra

    response = client.get("/access-request/")

    # A page that explains, not a redirect back to the sign-in page that links here (a loop).
    assert response.status_code == 200
    page = response.content.decode()
    assert "first sign in with your Microsoft work account" in page
    assert ('id="sign-in-microsoft"' in page) is entra
    assert ('id="entra-missing"' in page) is not entra
    assert 'href="/access-request/"' not in page
    assert (
        client.post("/access-request/", {**FORM, "requester_email": "x@newclinic.example"}).status_code == 200
    )
    assert AccessRequest.objects.count() == 0


def test_in_demo_mode_a_person_without_an_account_requests_access_and_signs_in_once_approved(
    client, db, settings, staff_user
):
    settings.DEMO_SIGN_IN = True
    page = client.get("/access-request/").content.decode()
    assert 'id="access-request-demo"' in page
    assert "In production you sign in with your Microsoft work" in page
    assert 'name="requester_email"' in page

    missing = client.post("/access-request/", FORM)
    assert "Give an email address we can answer to." in missing.content.decode()
    response = client.post("/access-request/", {**FORM, "requester_email": "Nia@NewClinic.example"})

    access_request = AccessRequest.objects.get()
    assert response["Location"] == f"/access-request/{access_request.status_token}/"
    assert (access_request.requested_by, access_request.requester_email) == (None, "Nia@NewClinic.example")

    tenant = services.access_request_approve(access_request=access_request, reviewed_by=staff_user)
    status_page = client.get(response["Location"]).content.decode()
    assert 'id="demo-requester-sign-in"' in status_page

    # Their account can be signed in only with the status link's token, and only in demo mode.
    username = "nia@newclinic.example"
    refused = client.post("/sign-in/demo/", {"username": username, "access_request": "wrong"}, follow=True)
    assert "That is not one of the demo users." in refused.content.decode()
    signed = client.post(
        "/sign-in/demo/", {"username": username, "access_request": access_request.status_token}
    )
    assert signed["Location"] == "/portal/"
    assert _admins_of(tenant) == [username]
    assert client.get("/portal/").status_code == 200

    settings.DEMO_SIGN_IN = False
    client.logout()
    off = client.post("/sign-in/demo/", {"username": username, "access_request": access_request.status_token})
    assert off.status_code == 404


def test_someone_whose_sign_in_was_refused_gets_the_form_with_their_tenant_id_locked(client, db):
    _refused(client)

    response = client.get("/access-request/")

    page = response.content.decode()
    assert response.status_code == 200
    assert f'value="{NEW_TID}" readonly' in page
    assert "Taken from your Microsoft sign-in." in page


def test_a_refused_requester_cannot_change_the_verified_tenant_id(client, db):
    _refused(client)

    response = client.post("/access-request/", {**FORM, "microsoft_tenant_id": ORG_A_TID})

    assert response.status_code == 302
    access_request = AccessRequest.objects.get()
    assert access_request.microsoft_tenant_id == NEW_TID
    assert access_request.requested_by is None
    assert access_request.requester_email == "nia@newclinic.example"
    assert access_request.requester_subject == "entra-sub-nia"


def test_a_refused_requester_is_made_administrator_of_their_new_organization_on_approval(client, staff_user):
    _refused(client)
    client.post("/access-request/", FORM)
    access_request = AccessRequest.objects.get()

    tenant = services.access_request_approve(access_request=access_request, reviewed_by=staff_user)

    link = UserSocialAuth.objects.get(provider="azuread-v2-tenant-oauth2", uid="entra-sub-nia")
    assert _admins_of(tenant) == [link.user.username]
    assert link.user.email == "nia@newclinic.example"


def test_the_status_page_shows_a_waiting_request(client, requester):
    access_request = _request(requested_by=requester)

    response = client.get(f"/access-request/{access_request.status_token}/")

    page = response.content.decode()
    assert response.status_code == 200
    assert "Access request for New Clinic" in page
    assert "Waiting for review" in page


def test_the_status_page_shows_the_reason_of_a_rejection(client, requester, staff_user):
    access_request = _request(requested_by=requester)
    services.access_request_reject(
        access_request=access_request, reviewed_by=staff_user, reason="Not eligible."
    )

    page = client.get(f"/access-request/{access_request.status_token}/").content.decode()

    assert "Rejected" in page
    assert "Reason: Not eligible." in page


def test_the_status_page_of_an_approved_request_links_to_sign_in(client, requester, staff_user):
    access_request = _request(requested_by=requester)
    services.access_request_approve(access_request=access_request, reviewed_by=staff_user)

    page = client.get(f"/access-request/{access_request.status_token}/").content.decode()

    assert "Approved" in page
    assert 'href="/sign-in/"' in page


def test_an_unknown_status_token_is_not_found(client, db):
    assert client.get("/access-request/not-a-real-token/").status_code == 404


# --- the API ---------------------------------------------------------------------------------


def test_a_signed_in_user_can_request_access_through_the_api_and_read_only_their_own_requests(
    api_as, requester
):
    other = get_user_model().objects.create_user(username="other", email="o@other.example")
    theirs = _request(tid="44444444-4444-4444-8444-444444444444", requested_by=other)
    client = api_as(requester)

    created = client.post("/api/v1/access-requests/", FORM, format="json")

    assert created.status_code == 201
    assert created.json()["state"] == "open"
    listed = client.get("/api/v1/access-requests/").json()["results"]
    assert [r["microsoft_tenant_id"] for r in listed] == [NEW_TID]
    assert client.get(f"/api/v1/access-requests/{theirs.pk}/").status_code == 404
    assert client.get(f"/api/v1/access-requests/{created.json()['id']}/").status_code == 200


def test_the_api_refuses_a_duplicate_request_with_the_message(api_as, requester):
    _request(requested_by=requester)

    response = api_as(requester).post("/api/v1/access-requests/", FORM, format="json")

    assert response.status_code == 400
    body = response.json()
    assert body["error"]["code"] == "invalid"
    assert DUPLICATE_MESSAGE in body["error"]["fields"]["microsoft_tenant_id"][0]


def test_an_api_token_cannot_make_or_read_access_requests(org_a, token_client, requester):
    _request(requested_by=requester)
    client = token_client(org_a, "read_write")

    listed = client.get("/api/v1/access-requests/")
    response = client.post("/api/v1/access-requests/", FORM, format="json")

    for refused in (listed, response):
        assert refused.status_code == 403
        assert (
            refused.json()["error"]["message"] == "This endpoint is for a signed-in person, not an API token."
        )
