"""The portal's Members page: invite by e-mail with a role, change roles, remove; the last administrator stays.

The invitee's Microsoft sign-in goes through social-auth's real pipeline (tests/conftest.py `entra`).
"""

from __future__ import annotations

import pytest
from django.core import mail
from django.urls import reverse

from tenants.middleware import ACTIVE_TENANT_SESSION_KEY
from tenants.models import Membership, MembershipInvite, Role
from tenants.scoping import all_tenants, tenant_scope
from tests.conftest import ORG_A_TID, ORG_B_TID, signed_in

MEMBERS = "/portal/members/"


def invite(client, email: str, role: str = Role.VIEWER, ehr_username: str = ""):
    return client.post(MEMBERS, {"email": email, "role": role, "ehr_username": ehr_username})


def roles(tenant) -> dict[str, str]:
    with tenant_scope(tenant):
        return {m.user.username: m.role for m in Membership.objects.select_related("user")}


def test_an_administrator_invites_by_e_mail_and_the_invitee_lands_in_the_organization(
    client, org_a, admin_a, entra, django_capture_on_commit_callbacks
):
    signed_in(client, admin_a)
    with django_capture_on_commit_callbacks(execute=True):
        response = invite(client, "Nora@Org-A.example", Role.EHR_APPROVER, "NORA1")

    assert response.status_code == 302
    with tenant_scope(org_a):
        [open_invite] = MembershipInvite.objects.all()
    assert (open_invite.email, open_invite.role, open_invite.invited_by) == (
        "nora@org-a.example",
        Role.EHR_APPROVER,
        admin_a,
    )
    [message] = mail.outbox
    assert message.to == ["nora@org-a.example"] and "/sign-in/" in message.body
    assert "nora@org-a.example" in client.get(MEMBERS).content.decode()
    client.logout()

    invitee = entra.sign_in(client, tid=ORG_A_TID, sub="sub-nora", email="nora@org-a.example")

    assert invitee.status_code == 302
    assert client.session[ACTIVE_TENANT_SESSION_KEY] == org_a.pk
    with tenant_scope(org_a):
        membership = Membership.objects.select_related("user").get(user__email="nora@org-a.example")
        open_invite.refresh_from_db()
    assert (membership.role, membership.ehr_username) == (Role.EHR_APPROVER, "NORA1")
    assert open_invite.accepted_by == membership.user and not open_invite.is_open
    assert "Org A Health" in client.get("/portal/").content.decode()


def test_an_invitation_cannot_be_accepted_from_another_microsoft_tenant(client, org_a, org_b, admin_a, entra):
    signed_in(client, admin_a)
    invite(client, "nora@org-a.example")
    client.logout()

    # Same address, but signing in through organization B's Microsoft tenant.
    entra.sign_in(client, tid=ORG_B_TID, sub="sub-impostor", email="nora@org-a.example")

    with all_tenants():
        assert not Membership.objects.filter(user__email="nora@org-a.example").exists()
        assert MembershipInvite.objects.get().is_open


def test_the_invite_form_says_what_is_wrong(client, org_a, admin_a):
    signed_in(client, admin_a)
    cases = [
        ({"email": "not-an-address", "role": Role.VIEWER}, "Enter a valid email address."),
        ({"email": "x@org-a.example", "role": "owner"}, "Select a valid choice."),
        ({"email": "x@org-a.example", "role": Role.EHR_APPROVER}, "needs their EHR username"),
        ({"email": admin_a.email, "role": Role.VIEWER}, "already a member"),
    ]
    for data, expected in cases:
        response = client.post(MEMBERS, data)
        assert response.status_code == 400, data
        assert expected in response.content.decode(), data
    invite(client, "x@org-a.example")
    again = invite(client, "X@org-a.example")
    assert again.status_code == 400 and "already has an open invitation" in again.content.decode()


def test_roles_change_and_members_go_but_never_the_last_administrator(client, org_a, admin_a, viewer_a):
    signed_in(client, admin_a)
    with tenant_scope(org_a):
        admin_membership = Membership.objects.get(user=admin_a)
        viewer_membership = Membership.objects.get(user=viewer_a)

    demoted = client.post(
        reverse("tenants:member-change", args=[admin_membership.pk]), {"role": Role.VIEWER}, follow=True
    )
    assert "last administrator" in demoted.content.decode()
    removed = client.post(reverse("tenants:member-remove", args=[admin_membership.pk]), follow=True)
    assert "last administrator" in removed.content.decode()
    assert roles(org_a)["alice-admin"] == Role.ADMINISTRATOR

    client.post(reverse("tenants:member-change", args=[viewer_membership.pk]), {"role": Role.ADMINISTRATOR})
    assert roles(org_a)["vera-viewer"] == Role.ADMINISTRATOR
    client.post(reverse("tenants:member-change", args=[admin_membership.pk]), {"role": Role.VIEWER})
    assert roles(org_a)["alice-admin"] == Role.VIEWER

    signed_in(client, viewer_a)  # now the administrator
    gone = client.post(reverse("tenants:member-remove", args=[admin_membership.pk]), follow=True)
    assert "alice-admin is no longer a member" in gone.content.decode()
    assert set(roles(org_a)) == {"vera-viewer"}


@pytest.mark.parametrize("who", ["approver_a", "viewer_a"])
def test_only_administrators_manage_members(client, org_a, admin_a, who, request):
    user = request.getfixturevalue(who)
    signed_in(client, user)
    with tenant_scope(org_a):
        target = Membership.objects.get(user=admin_a)

    assert invite(client, "x@org-a.example").status_code == 403
    assert client.post(reverse("tenants:member-remove", args=[target.pk])).status_code == 403
    assert (
        client.post(reverse("tenants:member-change", args=[target.pk]), {"role": Role.VIEWER}).status_code
        == 403
    )
    if who == "approver_a":
        page = client.get(MEMBERS).content.decode()
        assert "alice-admin" in page and "Send invitation" not in page and "Remove" not in page
    assert roles(org_a)["alice-admin"] == Role.ADMINISTRATOR


def test_another_organizations_members_are_out_of_reach(client, org_a, org_b, admin_a, admin_b):
    signed_in(client, admin_b)
    with tenant_scope(org_a):
        target = Membership.objects.get(user=admin_a)
    with tenant_scope(org_a):
        invitation = MembershipInvite.objects.create(tenant=org_a, email="z@org-a.example", role=Role.VIEWER)

    assert client.post(reverse("tenants:member-remove", args=[target.pk])).status_code == 404
    assert (
        client.post(reverse("tenants:member-change", args=[target.pk]), {"role": "viewer"}).status_code == 404
    )
    assert client.post(reverse("tenants:member-invite-withdraw", args=[invitation.pk])).status_code == 404
    page = client.get(MEMBERS).content.decode()
    assert "alice-admin" not in page and "z@org-a.example" not in page


def test_a_withdrawn_invitation_is_kept_and_no_longer_works(client, org_a, admin_a, entra):
    signed_in(client, admin_a)
    invite(client, "nora@org-a.example")
    with tenant_scope(org_a):
        invitation = MembershipInvite.objects.get()
    client.post(reverse("tenants:member-invite-withdraw", args=[invitation.pk]))
    assert 'data-invite="nora@org-a.example"' not in client.get(MEMBERS).content.decode()
    client.logout()

    entra.sign_in(client, tid=ORG_A_TID, sub="sub-nora", email="nora@org-a.example")

    with tenant_scope(org_a):
        invitation.refresh_from_db()
        assert invitation.withdrawn_at is not None
        assert not Membership.objects.filter(user__email="nora@org-a.example").exists()


def test_in_demo_mode_the_sign_in_chooser_offers_the_invitation(client, org_a, admin_a, settings):
    settings.DEMO_SIGN_IN = True
    signed_in(client, admin_a)
    invite(client, "nora@org-a.example", Role.VIEWER)
    client.logout()
    with tenant_scope(org_a):
        invitation = MembershipInvite.objects.get()

    page = client.get(reverse("tenants:sign-in")).content.decode()
    assert "Sign in as nora@org-a.example" in page

    landed = client.post(reverse("tenants:demo-sign-in"), {"invite": str(invitation.pk)})

    assert landed.status_code == 302 and landed.headers["Location"] == reverse("tenants:portal-home")
    assert client.session[ACTIVE_TENANT_SESSION_KEY] == org_a.pk
    assert roles(org_a)["demo-nora"] == Role.VIEWER
    again = client.post(reverse("tenants:demo-sign-in"), {"invite": str(invitation.pk)}, follow=True)
    assert "already used or withdrawn" in again.content.decode()
