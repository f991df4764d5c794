"""Issue 12, item 9: a strict Content-Security-Policy, API docs not public in production,
`page_size` checked. The browser tests' fixtures (tests/support/browser.py) fail any test
whose pages report a CSP violation; the browser tests here prove that watch works."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from tests.conftest import ORG_A_TID, signed_in

# --- the policy ------------------------------------------------------------------------------


def _policy(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    return {part.split()[0]: part.split()[1:] for part in (p.strip() for p in header.split(";")) if part}


@pytest.mark.parametrize("path", ["/sign-in/", "/admin/login/", "/api/docs/", "/sandbox-ehr/", "/healthz"])
def test_every_response_carries_a_strict_policy(client, db, settings, path):
    settings.SANDBOX_EHR = True
    policy = _policy(client.get(path))

    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert not any("unsafe" in source for sources in policy.values() for source in sources)


def test_visit_pages_the_ehr_frames_may_be_framed_and_keep_the_rest_of_the_policy(client, org_a):
    """Epic and other EHRs open the lobby, join and console pages inside their own frames."""
    from tests.test_visit_pages import console_path, join_path, make_visit, patient_token

    visit = make_visit(org_a)
    for path in (console_path(visit), join_path(patient_token(visit))):
        response = client.get(path)
        assert response.status_code == 200, path
        assert "X-Frame-Options" not in response
        policy = _policy(response)
        assert "frame-ancestors" not in policy, path
        assert policy["script-src"] == ["'self'"] and policy["default-src"] == ["'self'"]
    # The portal is never framed.
    assert _policy(client.get("/sign-in/"))["frame-ancestors"] == ["'none'"]


def _template_files() -> list[Path]:
    base = Path(django_settings.BASE_DIR)
    return sorted(
        p for app in ("connector", "tenants", "sms", "reports") for p in (base / app).rglob("*.html")
    )


INLINE = {
    "inline <script>": re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I),
    "<style> element": re.compile(r"<style\b", re.I),
    "style attribute": re.compile(r"\sstyle\s*=", re.I),
    "inline event handler": re.compile(r"\son[a-z]+\s*=", re.I),
    "javascript: URL": re.compile(r"javascript:", re.I),
}


def test_no_template_has_inline_scripts_styles_or_event_handlers():
    """What the policy would refuse in a browser, found before any browser runs: move it to a
    static file (connector/static/js/, or the app's static/<app>/js/)."""
    found = [
        f"{path.relative_to(django_settings.BASE_DIR)}:{text[: match.start()].count(chr(10)) + 1}: {kind}"
        for path in _template_files()
        for text in [path.read_text()]
        for kind, pattern in INLINE.items()
        for match in pattern.finditer(text)
    ]
    assert len(_template_files()) > 40
    assert not found, "\n".join(found)


def test_the_policy_can_be_switched_to_report_only():
    """CSP_REPORT_ONLY=true (to try a change of policy on a live site) reports instead of blocking."""
    import subprocess
    import sys

    code = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'connector.settings'; "
        "from django.conf import settings as s; "
        "print(s.CONTENT_SECURITY_POLICY is None, bool(s.CONTENT_SECURITY_POLICY_REPORT_ONLY))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**__import__("os").environ, "CSP_REPORT_ONLY": "true"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == ["True", "True"]


# --- API docs and schema -------------------------------------------------------------------


@pytest.fixture
def docs_private(settings):
    settings.API_DOCS_PUBLIC = False


def test_the_schema_is_refused_to_anonymous_callers_in_production(client, db, docs_private):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/json")

    assert response.status_code == 401
    assert "sign in to the portal" in response.json()["error"]["message"]


@pytest.mark.parametrize("path", ["/api/docs/", "/api/docs/?script"])
def test_the_docs_page_sends_anonymous_visitors_to_sign_in_in_production(client, db, docs_private, path):
    response = client.get(path)

    assert response.status_code == 302
    assert response["Location"] == "/sign-in/?" + urlencode({"next": path})


def test_someone_signed_in_without_an_organization_cannot_read_the_api_docs(client, db, docs_private):
    nobody = get_user_model().objects.create_user(username="no-org")

    assert signed_in(client, nobody).get("/api/schema/").status_code == 403
    page = client.get("/api/docs/")
    assert page.status_code == 403
    assert "Ask an administrator of your organization to add you." in page.content.decode()


@pytest.mark.parametrize("who", ["viewer_a", "staff_user"])
def test_members_and_staff_read_the_api_docs_in_production(request, client, docs_private, who):
    signed_in(client, request.getfixturevalue(who))

    assert client.get("/api/docs/").status_code == 200
    assert client.get("/api/docs/?script").status_code == 200
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    assert "/api/v1/tenants/{tenant_id}/" in schema.json()["paths"]


def test_an_api_token_reads_the_schema_in_production(org_a, token_client, docs_private):
    response = token_client(org_a, "read").get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")

    assert response.status_code == 200


def test_the_docs_page_loads_swagger_ui_from_this_origin(client, db):
    """No CDN: the policy allows this origin only (drf-spectacular-sidecar's files)."""
    page = client.get("/api/docs/").content.decode()

    assert "cdn." not in page and "https://" not in page
    assert re.search(
        r'<script src="/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle\.js', page
    )
    assert '<script src="/api/docs/?script=' in page


# --- page_size -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["abc", "0", "-5", "2.5", "1e3", "１０"])
def test_a_page_size_that_is_not_a_whole_number_is_refused_clearly(org_a, token_client, value):
    response = token_client(org_a, "read").get(f"/api/v1/tenants/{ORG_A_TID}/memberships/?page_size={value}")

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["fields"]["page_size"] == [
        "page_size must be a whole number from 1 to 500 (larger values are cut to 500); leave it out for 50."
    ]


def test_a_whole_page_size_is_used(org_a, admin_a, viewer_a, token_client):
    response = token_client(org_a, "read").get(f"/api/v1/tenants/{ORG_A_TID}/memberships/?page_size=1")

    assert response.status_code == 200
    assert len(response.json()["results"]) == 1 and response.json()["next"]


def test_the_schema_says_page_size_is_a_positive_integer(client, db):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    parameters = schema["paths"]["/api/v1/tenants/{tenant_id}/memberships/"]["get"]["parameters"]
    page_size = next(p for p in parameters if p["name"] == "page_size")

    assert page_size["schema"] == {"type": "integer", "minimum": 1}


# --- in the browser ------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_browser_watch_catches_a_csp_violation(live_server, browser):
    """The fixtures' watch is real: an inline script the policy refuses is reported."""
    from tests.support.browser import open_context

    context = open_context(browser)
    page = context.new_page()
    page.goto(f"{live_server.url}/sign-in/")
    with pytest.raises(Exception):  # noqa: B017 - Playwright's error when the browser refuses the script
        page.add_script_tag(content="window.ranInline = true;")
    page.wait_for_timeout(200)
    assert page.evaluate("window.ranInline === undefined")
    assert any("script-src" in v for v in context.csp_violations), context.csp_violations
    context.close()


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_member_reads_the_api_docs_in_the_browser_without_csp_violations(
    live_server, page, settings, viewer_a
):
    """Swagger UI renders from this origin under the strict policy (the page fixture fails on a violation)."""
    from django.test import Client

    settings.API_DOCS_PUBLIC = False
    client = Client()
    client.force_login(viewer_a, backend="django.contrib.auth.backends.ModelBackend")
    page.context.add_cookies(
        [{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}]
    )
    page.goto(f"{live_server.url}/api/docs/")

    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Open EHR Connector API")
    expect(page.locator(".opblock-summary-path").first).to_be_visible()
