"""The portal in a real browser: demo sign-in, organization switcher, API tokens."""

import pytest
import requests

from tenants.models import Membership, Role
from tenants.scoping import tenant_scope
from tests.conftest import ORG_A_TID, ORG_B_TID, make_member

pytestmark = pytest.mark.browser


@pytest.fixture
def demo_admin(org_a, org_b):
    user = make_member(org_a, "demo-admin", Role.ADMINISTRATOR)
    with tenant_scope(org_b):
        Membership.objects.create(tenant=org_b, user=user, role=Role.VIEWER)
    return user


def test_an_administrator_signs_in_switches_organization_and_manages_an_api_token(
    live_server, page, settings, demo_admin
):
    settings.DEMO_SIGN_IN = True

    page.goto(f"{live_server.url}/sign-in/")
    page.get_by_role("button", name="Sign in as demo-admin").first.click()  # one row per organization

    page.wait_for_url(f"{live_server.url}/portal/")
    assert page.locator("h1").inner_text() == "Org A Health"
    assert ORG_A_TID in page.content()

    page.select_option("#tenant-switch", label="Org B Clinics")
    page.wait_for_selector("text=You are now working in Org B Clinics.")
    assert page.locator("h1").inner_text() == "Org B Clinics"
    assert ORG_B_TID in page.content()
    assert page.get_by_role("link", name="API tokens").count() == 0  # a viewer in B

    page.select_option("#tenant-switch", label="Org A Health")
    page.wait_for_selector("text=You are now working in Org A Health.")
    page.get_by_role("link", name="API tokens").click()
    page.fill("input[name=name]", "Reporting warehouse")
    page.select_option("select[name=scope]", "read")
    page.get_by_role("button", name="Create token").click()

    raw = page.locator("#issued-token code.secret").inner_text().strip()
    assert raw.startswith("ehc_")
    api = f"{live_server.url}/api/v1/tenants/{ORG_A_TID}/"
    assert requests.get(api, headers={"Authorization": f"Bearer {raw}"}, timeout=10).status_code == 200

    page.goto(f"{live_server.url}/portal/api-tokens/")  # shown once: coming back, it is gone
    assert page.locator("#issued-token").count() == 0
    assert raw not in page.content()
    assert "Reporting warehouse" in page.content()

    page.get_by_role("button", name="Revoke").click()
    page.wait_for_selector("text=Token Reporting warehouse was revoked; calls with it now fail.")
    assert page.locator(".badge.bad", has_text="revoked").count() == 1
    refused = requests.get(api, headers={"Authorization": f"Bearer {raw}"}, timeout=10)
    assert refused.status_code == 401


def test_the_sign_in_page_offers_only_demo_users(live_server, page, settings, demo_admin, admin_a):
    settings.DEMO_SIGN_IN = True

    page.goto(f"{live_server.url}/sign-in/")

    demo_box = page.locator("#demo-sign-in")
    assert "demo-admin" in demo_box.inner_text()
    assert "alice-admin" not in demo_box.inner_text()
