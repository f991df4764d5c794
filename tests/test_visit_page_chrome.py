"""Visit pages carry only what their reader needs: no portal navigation, and a real one-time sign-in."""

from __future__ import annotations

import re

import pytest
from django.core import signing
from django.urls import reverse

from connector.models import LaunchState, ParticipantRole
from connector.visits.launch import LINK_SALT
from tenants.models import Role
from tests.conftest import make_member, signed_in
from tests.test_visit_pages import console_path, demo_url, join_path, make_visit, patient_token

PORTAL_LINKS = ("Setup", "API tokens", "Members", "EHR write-back", "Sign out")


@pytest.fixture
def visit(org_a):
    return make_visit(org_a)


def link_page_path(visit) -> str:
    state = LaunchState.objects.create(
        state_hash=f"h-{visit.pk}",
        endpoint=visit.endpoint,
        role=ParticipantRole.CLINICIAN,
        code_verifier="v" * 43,
        nonce="n",
        browser_binding="b",
        context={"fhir_user": f"{visit.endpoint.base_url}/Practitioner/dr-1"},
    )
    token = signing.dumps({"s": state.pk, "v": visit.pk}, salt=LINK_SALT)
    return reverse("visits:clinician-link", kwargs={"token": token})


def test_an_administrator_inside_a_visit_sees_no_portal_navigation(client, visit, admin_a, settings):
    settings.MEETING_BACKEND = "connector.meetings.demo.DemoMeetingBackend"
    signed_in(client, admin_a)
    portal = client.get(reverse("tenants:portal-home")).content.decode()
    assert "API tokens" in portal  # the portal itself still has it

    for path in (
        console_path(visit),
        join_path(patient_token(visit)),
        join_path(patient_token(visit), "visits:lobby"),
        demo_url(visit, ParticipantRole.CLINICIAN, "c-1"),
    ):
        response = client.get(path)
        assert response.status_code == 200, (path, response.status_code)
        page = response.content.decode()
        header = re.search(r"<header.*?</header>", page, re.S).group(0)
        for label in PORTAL_LINKS:
            assert label not in header, (path, label)
        assert 'href="/"' not in header


def test_the_demo_sign_in_offers_the_organizations_demo_users_not_a_text_field(
    client, visit, org_b, settings
):
    settings.DEMO_SIGN_IN = True
    make_member(visit.tenant, "demo-clinician-a", Role.VIEWER)
    make_member(org_b, "demo-clinician-b", Role.VIEWER)
    path = link_page_path(visit)

    page = client.get(path).content.decode()

    assert 'type="text"' not in page
    assert "Sign in as demo-clinician-a" in page
    assert "demo-clinician-b" not in page  # another organization's people are not offered
    assert f'name="next" value="{path}"' in page
    assert "Setup" not in re.search(r"<header.*?</header>", page, re.S).group(0)

    signed = client.post(reverse("tenants:demo-sign-in"), {"username": "demo-clinician-a", "next": path})
    assert signed.status_code == 302 and signed.headers["Location"] == path


def test_the_microsoft_sign_in_is_a_post_that_comes_back_to_the_visit(client, visit, settings):
    settings.DEMO_SIGN_IN = False
    settings.ENTRA_CONFIGURED = True
    path = link_page_path(visit)

    page = client.get(path).content.decode()

    form = re.search(r'<form method="post" action="([^"]+)">(.*?)</form>', page, re.S)
    assert form.group(1) == reverse("social:begin", args=["azuread-v2-tenant-oauth2"])
    assert "csrfmiddlewaretoken" in form.group(2) and f'name="next" value="{path}"' in form.group(2)
    assert "Demo sign-in" not in page


def test_without_any_sign_in_the_page_says_what_to_do(client, visit, settings):
    settings.DEMO_SIGN_IN = False
    settings.ENTRA_CONFIGURED = False

    page = client.get(link_page_path(visit)).content.decode()

    assert "Microsoft sign-in is not configured" in page and "ENTRA_CLIENT_ID" in page
