"""No page loads anything from outside the installation.

Every page (every URL pattern that answers a browser with HTML, the admin's too) is
rendered with the demo's own data, as each kind of reader: anonymous, patient (by
token), clinician (console link), every organization role, support staff. Any
`src`, `href`, `action`, `srcset`, or CSS `url()` pointing at another host fails,
except the outbound links documented in docs/security.md ("Outbound links"): links a
person may follow, never anything the page loads by itself.
"""

from __future__ import annotations

import re
from datetime import timedelta
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from django.contrib import admin
from django.core.management import call_command
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone
from django.utils.crypto import get_random_string

from connector.demo import DEMO_EPIC_TENANT_ID, configure_demo_endpoints, configure_demo_sms, demo_endpoint
from connector.models import EndpointStatus, GuestInvite, ParticipantRole, RecordKind, Visit
from connector.services.participants import guest_invite_create
from connector.services.records import integration_records_produce
from connector.services.visits import join_token_make, join_url_for, meeting_ensure, participant_id_for
from connector.visits.pages import console_url_for
from tenants.models import DataRegion, EhrVendor, Tenant
from tenants.scoping import all_tenants, tenant_scope
from tenants.services import access_request_create

PUBLIC = "https://connector.example.org"
OWN_HOSTS = {"testserver", "connector.example.org"}

# Links a person may follow to another site (docs/security.md, "Outbound links").
# Only ever on <a href>; nothing here is loaded by a page itself.
OUTBOUND_LINKS: tuple[str, ...] = (
    "https://www.standardwebhooks.com/",  # the webhook signature specification (portal, Webhooks)
)

# Patterns that are not pages a browser renders: JSON, POST-only actions, redirects into
# OAuth, webhooks, machine endpoints. Each with why.
NOT_PAGES = {
    "healthz": "probe",
    "readyz": "probe",
    "jwks": "JSON keys",
    "region-lookup": "internal JSON",
    "region-directory": "internal JSON",
    "api-schema": "OpenAPI YAML",
    "sign-out": "POST only",
    "portal:endpoint-validate": "POST only",
    "portal:endpoint-disable": "POST only",
    "portal:endpoint-status": "JSON",
    "portal:sms-number-status": "JSON",
    "portal:approval-begin": "redirect to the EHR's sign-in",
    "portal:approval-decide": "POST only",
    "portal:approval-callback": "OAuth callback",
    "portal:write-back-retry": "POST only",
    "portal:webhook-endpoint-action": "POST only",
    "portal:webhook-redeliver": "POST only",
    "portal:records-download": "JSON download",
    "portal:record-rotate-token": "POST only",
    "visits:provider-launch": "redirect to the EHR's authorize",
    "visits:patient-launch": "redirect to the EHR's authorize",
    "visits:launch-callback": "OAuth callback",
    "visits:clinician-link": "redirect to a launch",
    "visits:lobby-status": "JSON",
    "visits:join-device-test": "POST of the device test's results (JSON)",
    "visits:ping": "JSON",
    "visits:demo-meeting-status": "JSON",
    "visits:demo-meeting-event": "POST only",
    "visits:console-status": "JSON",
    "visits:console-admit": "POST only",
    "visits:console-end": "POST only",
    "visits:console-heartbeat": "POST only (presence)",
    "visits:lobby-heartbeat": "POST only (presence)",
    "visits:demo-meeting-heartbeat": "POST only (presence)",
    "portal:endpoint-delete": "POST only",
    "tenants:member-change": "POST only",
    "tenants:member-remove": "POST only",
    "tenants:member-invite-withdraw": "POST only",
    "visits:console-invite": "POST only",
    "visits:console-revoke": "POST only",
    "visits:console-invite-text": "POST only",
    "visits:meeting-webhook": "webhook",
    "visits:meeting-webhook-path": "webhook",
    "sandbox_ehr:launch-start": "redirect into a launch",
    "sandbox_ehr:authorize": "OAuth endpoint (its sign-in page is rendered through the launch below)",
    "sandbox_ehr:token": "OAuth token endpoint",
    "sandbox_ehr:jwks": "JSON keys",
    "sandbox_ehr:try-callback": "OAuth callback",
    "sandbox_ehr:fhir-base": "FHIR JSON",
    "sandbox_ehr:metadata": "FHIR JSON",
    "sandbox_ehr:smart-configuration": "JSON",
    "sandbox_ehr:openid-configuration": "JSON",
    "sandbox_ehr:fhir-type": "FHIR JSON",
    "sandbox_ehr:fhir-instance": "FHIR JSON",
    "sms:hl7-ingest": "HL7v2 feed",
    "sms:provider-callback": "webhook",
    "social:begin": "redirect to Microsoft",
    "social:complete": "OAuth callback",
    "social:idp_launch": "OAuth",
    "social:app_launch": "OAuth",
    "social:disconnect": "POST only",
    "social:disconnect_individual": "POST only",
    "tenants:switch-tenant": "POST only",
    "tenants:api-token-revoke": "POST only",
    "tenants:demo-sign-in": "POST only",
    "short-join": "redirect to the join page (rendered below)",
}


class _References(HTMLParser):
    """Every URL a page refers to: (tag, attribute, value)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, str, str]] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if not value:
                continue
            if name in ("src", "href", "action", "formaction", "poster", "data", "background"):
                self.found.append((tag, name, value.strip()))
            elif name in ("srcset", "imagesrcset"):
                self.found += [
                    (tag, name, part.strip().split(" ")[0]) for part in value.split(",") if part.strip()
                ]
            elif name == "style":
                self.found += [(tag, "style", url) for url in _css_urls(value)]
            elif name == "content" and value.startswith(("http://", "https://", "//")):
                self.found.append((tag, name, value))
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.found += [("style", "url()", url) for url in _css_urls(data)]


class _Fields(HTMLParser):
    """Form fields a person fills in that have no label: (tag, name)."""

    SKIPPED_TYPES = {"hidden", "submit", "button", "reset", "image"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.fields: list[tuple[str, str, str]] = []  # (tag, name, id)
        self.label_for: set[str] = set()
        self._label_depth = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "label":
            self._label_depth += 1
            if attrs.get("for"):
                self.label_for.add(attrs["for"])
        elif tag in ("input", "select", "textarea"):
            if tag == "input" and (attrs.get("type") or "text") in self.SKIPPED_TYPES:
                return
            # A read-only box that shows a link to copy is named by aria-label; anything typed into needs a label.
            if self._label_depth or ("readonly" in attrs and attrs.get("aria-label")):
                return
            self.fields.append((tag, attrs.get("name") or "", attrs.get("id") or ""))

    def handle_endtag(self, tag):
        if tag == "label" and self._label_depth:
            self._label_depth -= 1


def unlabelled_fields(html: str) -> list[tuple[str, str]]:
    parser = _Fields()
    parser.feed(html)
    return [(tag, name) for tag, name, id_ in parser.fields if not id_ or id_ not in parser.label_for]


def _css_urls(css: str) -> list[str]:
    return [m.strip("'\" ") for m in re.findall(r"url\(([^)]*)\)", css)] + re.findall(
        r"@import\s+['\"]([^'\"]+)", css
    )


def external_references(html: str, outbound: tuple[str, ...] = OUTBOUND_LINKS) -> list[tuple[str, str, str]]:
    parser = _References()
    parser.feed(html)
    bad = []
    for tag, attribute, value in parser.found:
        parts = urlsplit(value)
        if parts.scheme in ("data", "mailto", "tel", "javascript", "blob") or value.startswith("#"):
            continue
        host = parts.hostname or ""
        if not parts.netloc or host in OWN_HOSTS:
            continue
        if tag == "a" and attribute == "href" and outbound and value.startswith(outbound):
            continue
        bad.append((tag, attribute, value))
    return bad


def _pattern_names(patterns, namespace: str = "") -> set[str]:
    names = set()
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            inner = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            if str(pattern.pattern) in ("admin/", "api/v1/"):
                continue  # the admin is walked through its registry below; the API answers JSON
            names |= _pattern_names(pattern.url_patterns, inner)
        elif isinstance(pattern, URLPattern) and pattern.name:
            names.add(f"{namespace}{pattern.name}")
    return names


def test_the_reference_finder_catches_what_a_page_could_load_from_outside():
    page = (
        '<link rel="stylesheet" href="https://cdn.example.com/x.css"><script src="//cdn.example.com/x.js">'
        '</script><img srcset="/a.png 1x, https://img.example.com/b.png 2x"><div style="background:url('
        "'https://x.example.com/bg.png')\"></div><style>@import 'https://fonts.example.com/f.css';</style>"
        '<a href="https://learn.microsoft.com/azure">docs</a><a href="https://evil.example.com/">x</a>'
        '<form action="https://collect.example.com/"></form><a href="/portal/">in</a>'
        f'<a href="{PUBLIC}/portal/">own</a><a href="mailto:a@b.c">mail</a>'
    )
    found = external_references(page, outbound=("https://learn.microsoft.com/",))
    hosts = sorted(urlsplit(v if "//" in v else "//" + v).hostname for _, _, v in found)
    assert hosts == [
        "cdn.example.com",
        "cdn.example.com",
        "collect.example.com",
        "evil.example.com",
        "fonts.example.com",
        "img.example.com",
        "x.example.com",
    ]


@pytest.fixture
def demo(settings, db):
    """The demo's organizations, users, endpoints, SMS set-up and a few days of activity."""
    settings.DEBUG = True  # the demo commands refuse production mode
    settings.PUBLIC_BASE_URL = PUBLIC
    settings.SANDBOX_EHR = True
    settings.DEMO_SIGN_IN = True
    settings.MEETING_BACKEND = "connector.meetings.demo.DemoMeetingBackend"
    call_command("seed_demo", "--support-password", "a-long-support-pass-phrase", verbosity=0)
    configure_demo_endpoints()
    configure_demo_sms()
    call_command("generate_demo_activity", "--days", "3", verbosity=0)
    settings.DEBUG = False
    with all_tenants():
        contoso = Tenant.objects.get(microsoft_tenant_id=DEMO_EPIC_TENANT_ID)
    endpoint = demo_endpoint(contoso)
    with tenant_scope(contoso):
        endpoint.status = EndpointStatus.APPROVED
        endpoint.save(update_fields=["status"])
        start = timezone.now() + timedelta(minutes=10)
        visit = Visit.objects.create(
            tenant=contoso,
            public_id=get_random_string(24),
            endpoint=endpoint,
            appointment_id="WALK-1",
            scheduled_start=start,
            scheduled_end=start + timedelta(minutes=30),
        )
        meeting = meeting_ensure(visit=visit)
        # A guest: the console then shows its link and the phone field to text it.
        guest_invite_create(visit=visit, kind=GuestInvite.Kind.INTERPRETER)
    return {"tenant": contoso, "endpoint": endpoint, "visit": visit, "meeting": meeting}


def _users():
    from django.contrib.auth import get_user_model

    users = get_user_model().objects
    return {
        "administrator": users.get(username="demo-admin"),
        "approver": users.get(username="demo-approver"),
        "viewer": users.get(username="demo-viewer"),
        "support": users.get(username="support"),
    }


def _page_urls(demo) -> dict[str, list[str]]:
    """pattern name -> concrete URLs of that page, with the demo's data."""
    visit, endpoint = demo["visit"], demo["endpoint"]
    patient = participant_id_for(ParticipantRole.PATIENT, "Patient/walk")
    token = join_token_make(visit=visit, role=ParticipantRole.PATIENT, participant_id=patient)
    clinician = participant_id_for(ParticipantRole.CLINICIAN, "Practitioner/walk")
    console = urlsplit(console_url_for(visit, clinician))
    with tenant_scope(visit.tenant):
        records = integration_records_produce(endpoint=endpoint)
    device_record = next(r for r in records if r.kind == RecordKind.DEVICE_TEST_CONFIGURATION)
    access = access_request_create(
        requested_by=None,
        requester_email="newcomer@northwind.example",
        organization_name="Northwind Clinics",
        microsoft_tenant_id="33333333-3333-4333-8333-333333333333",
        ehr_vendor=EhrVendor.EPIC,
        data_region=DataRegion.AMERICAS,
        technical_contact_email="it@northwind.example",
    )
    urls = {
        "api-docs": [reverse("api-docs")],
        "portal:setup": [reverse("portal:setup")],
        "portal:configure": [reverse("portal:configure")],
        "portal:endpoint-edit": [reverse("portal:endpoint-edit", args=[endpoint.pk])],
        "portal:sms": [reverse("portal:sms")],
        "portal:sms-endpoint-settings": [reverse("portal:sms-endpoint-settings", args=[endpoint.pk])],
        "portal:approve": [reverse("portal:approve")],
        "portal:write-backs": [reverse("portal:write-backs")],
        "portal:webhooks": [reverse("portal:webhooks")],
        "portal:review": [reverse("portal:review")],
        "visits:join": [reverse("visits:join", kwargs={"token": token})],
        "visits:lobby": [reverse("visits:lobby", kwargs={"token": token})],
        "visits:device-test": [f"{reverse('visits:device-test')}?token={device_record.context_token}"],
        "visits:demo-meeting": [
            join_url_for(visit=visit, role=role, participant_id=who, display_name="")
            for role, who in ((ParticipantRole.PATIENT, patient), (ParticipantRole.CLINICIAN, clinician))
        ],
        "visits:console": [
            f"{reverse('visits:console', kwargs={'public_id': visit.public_id})}?{console.query}"
        ],
        "sandbox_ehr:home": [reverse("sandbox_ehr:home")],
        "tenants:home": [reverse("tenants:home")],
        "tenants:sign-in": [reverse("tenants:sign-in")],
        "tenants:sign-in-refused": [reverse("tenants:sign-in-refused")],
        "tenants:access-request": [reverse("tenants:access-request")],
        "tenants:portal-home": [reverse("tenants:portal-home")],
        "tenants:members": [reverse("tenants:members")],
        "tenants:api-tokens": [reverse("tenants:api-tokens")],
        "admin-region-directory": [reverse("admin-region-directory")],
        "admin-usage-summary": [reverse("admin-usage-summary")],
    }
    urls["tenants:access-request-status"] = [
        reverse("tenants:access-request-status", args=[access.status_token])
    ]
    from reports.registry import all_reports

    urls["reports:index"] = [reverse("reports:index")]
    urls["reports:report"] = [reverse("reports:report", args=[report.identifier]) for report in all_reports()]
    return urls


def _admin_urls() -> list[str]:
    from django.test import RequestFactory

    request = RequestFactory().get("/admin/")
    request.user = _users()["support"]
    urls = [reverse("admin:index")]
    for model, model_admin in admin.site._registry.items():
        info = (model._meta.app_label, model._meta.model_name)
        urls.append(reverse("admin:{}_{}_changelist".format(*info)))
        if model_admin.has_add_permission(request):
            urls.append(reverse("admin:{}_{}_add".format(*info)))
        with all_tenants():
            first = model._default_manager.order_by("pk").first()
        if first is not None:
            urls.append(reverse("admin:{}_{}_change".format(*info), args=[first.pk]))
    return urls


def test_the_label_finder_catches_a_field_without_one():
    page = (
        '<label for="a">A</label><input id="a" name="a"><label>B <input name="b"></label>'
        '<input type="tel" name="phone" aria-label="Mobile number"><input type="hidden" name="h">'
        '<input readonly aria-label="Your link" value="https://x"><select name="s"></select>'
    )
    assert unlabelled_fields(page) == [("input", "phone"), ("select", "s")]


def test_every_page_loads_nothing_from_outside_and_labels_every_field(demo, client):
    urls = _page_urls(demo)
    covered = set(urls) | set(NOT_PAGES)
    missing = _pattern_names(get_resolver().url_patterns) - covered
    assert not missing, f"pages this test does not render yet (add them, or to NOT_PAGES with why): {missing}"

    readers = {"anonymous": None, **_users()}
    rendered, problems, direct, unlabelled = 0, [], set(), []
    for reader, user in readers.items():
        browser = Client()
        if user is not None:
            browser.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
        pages = [url for group in urls.values() for url in group]
        if reader == "support":
            pages += _admin_urls()
        for url in pages:
            response = browser.get(url, follow=True)
            assert response.status_code < 500, f"{url} as {reader}: {response.status_code}"
            if response.status_code == 200 and not response.redirect_chain:
                direct.add((reader, url))
            if "text/html" not in response.get("Content-Type", ""):
                continue
            rendered += 1
            for tag, attribute, value in external_references(response.content.decode()):
                problems.append(f"{url} as {reader}: <{tag} {attribute}={value!r}>")
            if not url.startswith("/admin/"):  # Django's own admin forms are its business
                for tag, name in unlabelled_fields(response.content.decode()):
                    unlabelled.append(f"{url} as {reader}: <{tag} name={name!r}> has no <label>")
    assert not problems, "pages refer to other hosts:\n" + "\n".join(sorted(set(problems)))
    assert not unlabelled, "fields without a label:\n" + "\n".join(sorted(set(unlabelled)))
    # The walk really rendered the pages, not only sign-in redirects.
    assert rendered > 100
    # They send each reader to their page (a signed-in person does not see the sign-in page).
    routers = {"tenants:home", "portal:setup", "tenants:sign-in", "tenants:sign-in-refused"}
    staff_only = {"admin-region-directory", "admin-usage-summary"}
    wanted = {
        ("administrator", url)
        for name, group in urls.items()
        if name not in routers | staff_only
        for url in group
    }
    wanted |= {("support", url) for name in staff_only for url in urls[name]}
    wanted |= {("support", url) for url in _admin_urls()}
    wanted |= {
        ("anonymous", url)
        for name in ("visits:join", "visits:lobby", "visits:device-test")
        for url in urls[name]
    }
    assert not wanted - direct, sorted(wanted - direct)
