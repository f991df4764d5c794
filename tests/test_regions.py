"""Data residency: one deployment per region, requests for another region's organizations
routed there without data, and the signed lookup the regions share (tenants/regions.py,
tenants/internal_api.py, tenants/region_routing.py).

The "other region" is a real HTTP server on 127.0.0.1 that checks each lookup's signature
with its own HMAC code (not the connector's), and answers like a deployment would.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import parse_qsl, urlsplit

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from connector.models import EndpointStatus, Environment, FhirEndpoint
from tenants.internal_api import sign
from tenants.models import AccessRequest, AccessRequestState, DataRegion, Tenant
from tenants.regions import RegionConfigError, config_problems, parse_region_lines
from tenants.scoping import tenant_scope
from tests.conftest import ORG_A_TID, signed_in
from tests.support.local_server import Route

SECRET = "shared-region-secret-for-tests-0123456789"
EU_HOSTED_TID = "33333333-3333-4333-8333-333333333333"
EU_HOSTED_ISS = "https://fhir.eu-hospital.example/api/FHIR/R4"


def _independent_signature_ok(seen) -> bool:
    parts = dict(p.split("=", 1) for p in seen.headers.get("x-region-signature", "").split(",") if "=" in p)
    if "t" not in parts or abs(int(parts["t"]) - time.time()) > 300:
        return False
    expected = hmac.new(SECRET.encode(), f"{parts['t']}.GET.{seen.path}".encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))


@pytest.fixture
def europe(local_server):
    """The Europe region's deployment: hosts EU_HOSTED_TID and EU_HOSTED_ISS."""

    def lookup(seen):
        if not _independent_signature_ok(seen):
            return Route(status=403, body={"error": "unsigned"})
        query = dict(parse_qsl(urlsplit(seen.path).query))
        if query.get("tenant_id") == EU_HOSTED_TID or query.get("iss") == EU_HOSTED_ISS:
            return Route(body={"hosted": True, "region": "europe"})
        return Route(status=404, body={"hosted": False})

    def directory(seen):
        if not _independent_signature_ok(seen):
            return Route(status=403, body={"error": "unsigned"})
        return Route(
            body={
                "region": "europe",
                "organizations": [
                    {"name": "Klinikum Nord", "tenant_id": EU_HOSTED_TID, "status": "enabled", "region": "europe"}
                ],
            }
        )

    local_server.add("/internal/regions/lookup", lookup)
    local_server.add("/internal/regions/directory", directory)
    return local_server


@pytest.fixture
def two_regions(settings, europe):
    """This deployment serves the Americas; Europe is the local server."""
    settings.CONNECTOR_REGION = "americas"
    settings.PUBLIC_BASE_URL = "https://us.connector.example.org"
    settings.CONNECTOR_REGIONS_TEXT = f"americas=https://us.connector.example.org\neurope={europe.base}"
    settings.REGION_LOOKUP_SECRET = SECRET
    return europe


def _lookups(server) -> list[str]:
    return [seen.path for seen in server.seen if seen.route == "/internal/regions/lookup"]


# --- configuration -------------------------------------------------------------------------


def test_region_lines_are_read_one_per_line_or_separated_by_commas():
    assert parse_region_lines("americas=https://us.example.org/\n europe = https://eu.example.org") == {
        "americas": "https://us.example.org",
        "europe": "https://eu.example.org",
    }
    assert parse_region_lines("americas=https://us.example.org,asia_pacific=https://ap.example.org") == {
        "americas": "https://us.example.org",
        "asia_pacific": "https://ap.example.org",
    }
    assert parse_region_lines("") == {}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("americas https://us.example.org", "is not region=https://base-url"),
        ("mars=https://mars.example.org", "known regions are americas, europe, asia_pacific"),
        ("europe=https://eu.example.org/connector", "scheme and host only"),
        ("europe=https://a.example.org\neurope=https://b.example.org", "names europe twice"),
    ],
)
def test_a_bad_region_line_says_what_is_wrong_and_how_it_should_look(text, says):
    with pytest.raises(RegionConfigError, match=says):
        parse_region_lines(text)


def test_a_single_region_installation_needs_no_region_settings(settings):
    settings.CONNECTOR_REGION = ""
    settings.CONNECTOR_REGIONS_TEXT = ""
    assert config_problems() == []


def test_a_half_configured_multi_region_deployment_fails_the_system_check(settings):
    settings.CONNECTOR_REGION = "europe"
    settings.PUBLIC_BASE_URL = "https://eu.connector.example.org"
    settings.CONNECTOR_REGIONS_TEXT = "americas=https://us.connector.example.org"
    settings.REGION_LOOKUP_SECRET = ""
    problems = config_problems()
    assert any("no line for this deployment's region 'europe'" in p for p in problems)
    with pytest.raises(SystemCheckError, match="connector.E008"):
        call_command("check")


def test_public_base_url_must_be_the_regions_own_address_and_the_secret_long(settings):
    settings.CONNECTOR_REGION = "europe"
    settings.PUBLIC_BASE_URL = "https://connector.example.org"
    settings.CONNECTOR_REGIONS_TEXT = "americas=https://us.example.org\neurope=https://eu.example.org"
    settings.REGION_LOOKUP_SECRET = "short"
    problems = " ".join(config_problems())
    assert "PUBLIC_BASE_URL (https://connector.example.org) differs" in problems
    assert "REGION_LOOKUP_SECRET must be set" in problems


# --- the signed lookup this deployment answers ---------------------------------------------


@pytest.fixture
def answering(settings, org_a):
    settings.CONNECTOR_REGION = "americas"
    settings.PUBLIC_BASE_URL = "https://us.connector.example.org"
    settings.CONNECTOR_REGIONS_TEXT = "americas=https://us.connector.example.org\neurope=https://eu.example.org"
    settings.REGION_LOOKUP_SECRET = SECRET
    return org_a


def test_the_lookup_names_this_region_for_an_organization_it_hosts_and_nothing_else(client, answering):
    path = f"/internal/regions/lookup?tenant_id={ORG_A_TID}"
    response = client.get(path, HTTP_X_REGION_SIGNATURE=sign("GET", path))
    assert response.status_code == 200
    assert response.json() == {"hosted": True, "region": "americas"}


def test_the_lookup_answers_404_for_an_organization_hosted_elsewhere(client, answering):
    path = f"/internal/regions/lookup?tenant_id={EU_HOSTED_TID}"
    response = client.get(path, HTTP_X_REGION_SIGNATURE=sign("GET", path))
    assert response.status_code == 404
    assert response.json() == {"hosted": False}


def test_the_lookup_by_fhir_base_url_finds_the_organization_of_an_endpoint(client, answering):
    with tenant_scope(answering):
        FhirEndpoint.objects.create(
            tenant=answering,
            base_url="https://fhir.us-hospital.example/api/FHIR/R4",
            environment=Environment.PRODUCTION,
            status=EndpointStatus.APPROVED,
        )
    path = "/internal/regions/lookup?iss=https%3A%2F%2Ffhir.us-hospital.example%2Fapi%2FFHIR%2FR4"
    assert client.get(path, HTTP_X_REGION_SIGNATURE=sign("GET", path)).status_code == 200


@pytest.mark.parametrize(
    ("header", "says"),
    [
        (None, "Sign the request"),
        ("t=notanumber,v1=abc", "Sign the request"),
        ("stale", "more than five minutes off"),
        ("wrong-secret", "every region must share the same REGION_LOOKUP_SECRET"),
        ("other-path", "every region must share the same REGION_LOOKUP_SECRET"),
    ],
)
def test_the_lookup_is_refused_without_a_valid_signature(client, answering, header, says):
    path = f"/internal/regions/lookup?tenant_id={ORG_A_TID}"
    if header == "stale":
        header = sign("GET", path, now=time.time() - 600)
    elif header == "wrong-secret":
        header = sign("GET", path, secret="another-secret-of-enough-length-000000")
    elif header == "other-path":
        header = sign("GET", f"/internal/regions/lookup?tenant_id={EU_HOSTED_TID}")
    extra = {"HTTP_X_REGION_SIGNATURE": header} if header else {}
    response = client.get(path, **extra)
    assert response.status_code == 403
    assert says in response.json()["error"]["message"]
    assert "americas" not in response.content.decode()


def test_without_a_secret_the_deployment_answers_no_lookups(client, answering, settings):
    settings.REGION_LOOKUP_SECRET = ""
    path = f"/internal/regions/lookup?tenant_id={ORG_A_TID}"
    response = client.get(path, HTTP_X_REGION_SIGNATURE=sign("GET", path, secret="x" * 40))
    assert response.status_code == 403


def test_the_directory_lists_names_ids_and_status_only(client, answering):
    path = "/internal/regions/directory"
    response = client.get(path, HTTP_X_REGION_SIGNATURE=sign("GET", path))
    assert response.json() == {
        "region": "americas",
        "organizations": [
            {"name": "Org A Health", "tenant_id": ORG_A_TID, "status": "enabled", "region": "americas"}
        ],
    }
    assert client.get(path).status_code == 403


# --- requests that reached the wrong region --------------------------------------------------


def test_an_api_call_for_another_regions_organization_gets_421_with_the_right_base_url(
    client, db, two_regions
):
    response = client.get(f"/api/v1/tenants/{EU_HOSTED_TID}/endpoints/?page=2")
    assert response.status_code == 421
    error = response.json()["error"]
    assert error["code"] == "wrong_region"
    assert error["region"] == "europe"
    assert error["base_url"] == two_regions.base
    assert f"{two_regions.base}/api/v1/tenants/{EU_HOSTED_TID}/endpoints/?page=2" in error["message"]


def test_the_hl7_feed_of_another_regions_organization_gets_421_not_an_ack(client, db, two_regions):
    response = client.post(
        f"/sms/ingest/{EU_HOSTED_TID}/production/", data=b"MSH|^~\\&|...", content_type="application/hl7-v2"
    )
    assert response.status_code == 421
    assert response.json()["error"]["base_url"] == two_regions.base


def test_the_answer_is_cached_so_a_burst_asks_the_other_region_once(client, db, two_regions):
    for _ in range(5):
        assert client.get(f"/api/v1/tenants/{EU_HOSTED_TID}/endpoints/").status_code == 421
    assert len(_lookups(two_regions)) == 1


def test_an_organization_hosted_nowhere_is_a_plain_404_after_one_lookup(client, db, two_regions):
    unknown = "44444444-4444-4444-8444-444444444444"
    for _ in range(2):
        response = client.get(f"/api/v1/tenants/{unknown}/endpoints/")
        assert response.status_code in (401, 403, 404)
        assert "wrong_region" not in response.content.decode()
    assert len(_lookups(two_regions)) == 1


def test_an_organization_hosted_here_never_asks_the_other_regions(client, org_a, admin_a, two_regions):
    signed_in(client, admin_a)
    response = client.get(f"/api/v1/tenants/{ORG_A_TID}/endpoints/")
    assert response.status_code == 200
    assert _lookups(two_regions) == []


def test_an_unreachable_region_is_not_guessed_and_not_cached(client, db, settings, two_regions):
    settings.CONNECTOR_REGIONS_TEXT = (
        "americas=https://us.connector.example.org\neurope=http://127.0.0.1:9"  # nothing listens
    )
    response = client.get(f"/api/v1/tenants/{EU_HOSTED_TID}/endpoints/")
    assert response.status_code != 421
    settings.CONNECTOR_REGIONS_TEXT = f"americas=https://us.connector.example.org\neurope={two_regions.base}"
    assert client.get(f"/api/v1/tenants/{EU_HOSTED_TID}/endpoints/").status_code == 421


def test_a_launch_from_an_ehr_hosted_in_another_region_is_redirected_there(client, db, two_regions):
    response = client.get("/launch/provider", {"iss": EU_HOSTED_ISS, "launch": "abc123"})
    assert response.status_code == 302
    location = response["Location"]
    assert location.startswith(f"{two_regions.base}/launch/provider?")
    assert dict(parse_qsl(urlsplit(location).query)) == {"iss": EU_HOSTED_ISS, "launch": "abc123"}


def test_a_single_region_installation_never_asks_anyone(client, db, settings, europe):
    settings.CONNECTOR_REGION = ""
    settings.CONNECTOR_REGIONS_TEXT = ""
    client.get(f"/api/v1/tenants/{EU_HOSTED_TID}/endpoints/")
    client.get("/launch/provider", {"iss": EU_HOSTED_ISS, "launch": "x"})
    assert europe.seen == []


def test_microsoft_sign_in_for_another_regions_organization_continues_there(client, db, two_regions, entra):
    entra.mock.add_passthru(two_regions.base)
    response = entra.sign_in(client, tid=EU_HOSTED_TID, sub="sub-eu", email="eva@klinikum.example")
    assert response.status_code == 302
    assert response["Location"] == f"{two_regions.base}/auth/login/azuread-v2-tenant-oauth2/"
    assert not Tenant.objects.filter(microsoft_tenant_id=EU_HOSTED_TID).exists()
    assert "_auth_user_id" not in client.session


def test_an_access_request_for_another_region_is_sent_there_and_nothing_is_kept(
    client, admin_a, two_regions
):
    signed_in(client, admin_a)
    response = client.post(
        "/access-request/",
        {
            "organization_name": "Klinikum Süd",
            "microsoft_tenant_id": "55555555-5555-4555-8555-555555555555",
            "ehr_vendor": "epic",
            "data_region": "europe",
            "technical_contact_email": "it@klinikum.example",
            "requester_email": "eva@klinikum.example",
        },
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert "will be kept in Europe" in page
    assert f'href="{two_regions.base}/access-request/"' in page
    assert not AccessRequest.objects.exists()


def test_approval_is_refused_for_a_request_whose_region_is_another_deployments(
    client, staff_user, settings, two_regions
):
    request = AccessRequest.objects.create(
        organization_name="Klinikum West",
        microsoft_tenant_id="66666666-6666-4666-8666-666666666666",
        ehr_vendor="epic",
        data_region=DataRegion.EUROPE,
        technical_contact_email="it@west.example",
        requester_email="eva@west.example",
    )
    signed_in(client, staff_user)
    response = client.post(
        "/admin/tenants/accessrequest/",
        {"action": "approve", "_selected_action": [request.pk]},
        follow=True,
    )
    page = response.content.decode()
    assert "data region is Europe, but this deployment serves Americas" in page
    request.refresh_from_db()
    assert request.state == AccessRequestState.OPEN
    assert not Tenant.objects.filter(microsoft_tenant_id=request.microsoft_tenant_id).exists()


# --- support staff ------------------------------------------------------------------------------


def test_every_admin_page_names_the_region(client, staff_user, two_regions):
    signed_in(client, staff_user)
    for url in ("/admin/", "/admin/tenants/tenant/"):
        assert "Region: Americas" in client.get(url).content.decode()


def test_the_directory_lists_every_regions_organizations(client, staff_user, org_a, two_regions):
    signed_in(client, staff_user)
    page = client.get("/admin/region-directory/").content.decode()
    assert "Org A Health" in page and ORG_A_TID in page
    assert "Klinikum Nord" in page and EU_HOSTED_TID in page
    assert two_regions.base in page


def test_the_directory_shows_a_region_that_does_not_answer_instead_of_failing(
    client, staff_user, org_a, settings, two_regions
):
    settings.CONNECTOR_REGIONS_TEXT = "americas=https://us.connector.example.org\neurope=http://127.0.0.1:9"
    signed_in(client, staff_user)
    response = client.get("/admin/region-directory/")
    assert response.status_code == 200
    assert "http://127.0.0.1:9 did not answer" in response.content.decode()


def test_the_directory_needs_a_staff_sign_in(client, admin_a):
    assert client.get("/admin/region-directory/").status_code == 302
    signed_in(client, admin_a)
    assert client.get("/admin/region-directory/").status_code == 302


# --- what a hospital configures points at its region ----------------------------------------


def test_records_and_feed_addresses_carry_the_regional_base_url(client, org_a, admin_a, two_regions, settings):
    from connector.models import IntegrationRecord, RecordKind
    from tests.test_endpoints import approve_directly, make_endpoint

    settings.MLLP_PUBLIC_ADDRESS = ""
    assert config_problems() == []
    endpoint = approve_directly(make_endpoint(org_a), admin_a)
    with tenant_scope(org_a):
        records = {r.kind: r for r in IntegrationRecord.objects.filter(endpoint=endpoint)}
    assert records[RecordKind.PROVIDER_LAUNCH].launch_url == "https://us.connector.example.org/launch/provider"
    assert records[RecordKind.SMS_CONFIGURATION].launch_url.startswith("https://us.connector.example.org/sms/ingest/")
    signed_in(client, admin_a)
    page = client.get("/portal/setup/sms/").content.decode()
    assert f"https://us.connector.example.org/sms/ingest/{ORG_A_TID}/production/" in page
    assert "us.connector.example.org:2575" in page


# --- usage across regions, assembled from each region's usage API --------------------------------


def _rollup(tenant, day, **figures):
    from reports.models import DailyRollup

    with tenant_scope(tenant):
        DailyRollup.objects.create(tenant=tenant, day=day, **figures)


def test_the_usage_api_sums_this_regions_rollups_for_staff_or_the_support_token(
    client, org_a, org_b, staff_user, admin_a, settings
):
    import datetime

    settings.SUPPORT_REPORTS_TOKEN = "support-token-" + "x" * 30
    _rollup(org_a, datetime.date(2026, 11, 3), visits=5, completed=4, no_shows=1, sms_sent=7)
    _rollup(org_a, datetime.date(2026, 11, 4), department="cardio", visits=2, completed=2)
    _rollup(org_a, datetime.date(2026, 12, 1), visits=100)  # outside the range
    url = "/api/v1/support/usage/?from=2026-11-01&to=2026-11-30"

    assert client.get(url).status_code in (401, 403)
    assert client.get(url, HTTP_AUTHORIZATION="Bearer wrong").status_code in (401, 403)
    signed_in(client, admin_a)  # an organization's administrator is not support staff
    assert client.get(url).status_code == 403
    client.logout()

    body = client.get(url, HTTP_AUTHORIZATION=f"Bearer {settings.SUPPORT_REPORTS_TOKEN}").json()
    by_org = {o["name"]: o for o in body["organizations"]}
    assert (by_org["Org A Health"]["visits"], by_org["Org A Health"]["completed"]) == (7, 6)
    assert by_org["Org A Health"]["sms_sent"] == 7
    assert by_org["Org B Clinics"]["visits"] == 0
    signed_in(client, staff_user)
    assert client.get(url).json() == body


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("from=2026-11-01", "YYYY-MM-DD"),
        ("from=2026-11-30&to=2026-11-01", "on or after"),
        ("from=2020-01-01&to=2026-01-01", "at most a year"),
    ],
)
def test_the_usage_api_explains_a_bad_range(client, staff_user, query, says):
    signed_in(client, staff_user)
    response = client.get(f"/api/v1/support/usage/?{query}")
    assert response.status_code == 400
    assert says in response.json()["error"]["message"]


def test_the_admin_summary_adds_every_regions_usage_api_and_marks_a_missing_region(
    client, staff_user, org_a, settings, two_regions
):
    import datetime

    settings.SUPPORT_REPORTS_TOKEN = "support-token-" + "y" * 30

    def usage(seen):
        if seen.headers.get("authorization") != f"Bearer {settings.SUPPORT_REPORTS_TOKEN}":
            return Route(status=403, body={"error": "no"})
        organization = {"tenant_id": EU_HOSTED_TID, "name": "Klinikum Nord", "status": "enabled", "region": "europe"}
        figures = {"visits": 40, "completed": 38, "no_shows": 2, "sms_sent": 90, "sms_delivered": 88, "sms_failed": 2}
        return Route(body={"region": "europe", "organizations": [{**organization, **figures}]})

    two_regions.add("/api/v1/support/usage/", usage)
    _rollup(org_a, datetime.date(2026, 11, 3), visits=5, completed=5, sms_sent=3)
    signed_in(client, staff_user)
    page = client.get("/admin/usage-summary/?from=2026-11-01&to=2026-11-30").content.decode()
    assert "Klinikum Nord" in page and "Org A Health" in page
    assert "<td>Total</td><td>45</td><td>43</td>" in page
    assert "Incomplete" not in page

    settings.CONNECTOR_REGIONS_TEXT = "americas=https://us.connector.example.org\neurope=http://127.0.0.1:9"
    page = client.get("/admin/usage-summary/?from=2026-11-01&to=2026-11-30").content.decode()
    assert "Incomplete: a region did not answer" in page
    assert "http://127.0.0.1:9 did not answer" in page
