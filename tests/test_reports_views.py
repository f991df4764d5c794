"""Report pages in the portal and the admin, the reports API, CSV, filters, isolation and query counts."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.urls import reverse

from connector.models import VisitState
from reports.services import rollup_build
from sms.models import MessageKind, MessageState
from tenants.scoping import tenant_scope
from tests.conftest import ORG_A_TID, ORG_B_TID, signed_in
from tests.test_reports_rollup import CPH, NY, at, make_endpoint, make_text, make_visit

NOW = datetime(2026, 4, 20, 15, tzinfo=UTC)  # 11:00 in New York
REPORTS = ["usage", "virtual-appointments", "sms"]


@pytest.fixture(autouse=True)
def _frozen_time():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def april(org_a, org_b):
    """Org A: visits in two zones and environments, texts; org B: visits that must never show to A."""
    ny = make_endpoint(org_a, zone=NY, environment="production")
    cph = make_endpoint(org_a, zone=CPH, environment="test")
    clinician = get_user_model().objects.create_user(username="dr-who", email="who@org-a.example")
    visits = {
        "A-CARD-1": make_visit(
            org_a,
            ny,
            start=at(NY, 2026, 4, 18, 9),
            minutes=20,
            wait=45,
            appointment="A-CARD-1",
            clinician=clinician,
        ),
        "A-CARD-2": make_visit(
            org_a, ny, start=at(NY, 2026, 4, 19, 23, 30), minutes=50, wait=200, appointment="A-CARD-2"
        ),
        "A-NOSHOW": make_visit(
            org_a, ny, start=at(NY, 2026, 4, 19, 14), state=VisitState.NO_SHOW, appointment="A-NOSHOW"
        ),
        "A-PEDS": make_visit(
            org_a, ny, start=at(NY, 2026, 4, 10, 10), department="PEDS", appointment="A-PEDS"
        ),
        "A-ORTO": make_visit(
            org_a, cph, start=at(CPH, 2026, 4, 19, 8), department="ORTO", appointment="A-ORTO"
        ),
        "A-OLD": make_visit(org_a, ny, start=at(NY, 2026, 2, 1, 9), appointment="A-OLD"),
    }
    make_text(
        org_a,
        visit=visits["A-CARD-1"],
        when=at(NY, 2026, 4, 17, 9),
        kind=MessageKind.CONFIRMATION,
        last_four="4321",
    )
    make_text(
        org_a,
        visit=visits["A-CARD-1"],
        when=at(NY, 2026, 4, 18, 8),
        state=MessageState.SENT,
        last_four="4321",
    )
    make_text(
        org_a,
        visit=visits["A-CARD-1"],
        when=at(NY, 2026, 4, 18, 8, 30),
        state=MessageState.FAILED,
        error="30003",
    )
    make_text(org_a, when=at(NY, 2026, 4, 18, 12), kind=MessageKind.OPT_OUT, last_four="9999")
    b_endpoint = make_endpoint(org_b)
    visit_b = make_visit(
        org_b, b_endpoint, start=at(NY, 2026, 4, 18, 9), appointment="B-SECRET", department="B-DEPT"
    )
    make_text(org_b, visit=visit_b, when=at(NY, 2026, 4, 18, 8), last_four="0000")
    for tenant in (org_a, org_b):
        rollup_build(tenant=tenant, first=date(2026, 1, 1), last=date(2026, 4, 19), scheduled=True)
    return visits


def csv_rows(response) -> list[dict]:
    body = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(body)))


# --- portal ---------------------------------------------------------------------------------


@pytest.mark.parametrize("report", REPORTS)
def test_every_organization_role_sees_the_reports(
    client, org_a, admin_a, approver_a, viewer_a, april, report
):
    for user in (admin_a, approver_a, viewer_a):
        response = signed_in(client, user).get(f"/portal/reports/{report}/")
        assert response.status_code == 200
        assert b"A-SECRET" not in response.content


def test_the_reports_link_is_in_the_navigation_for_a_viewer(client, viewer_a, april):
    response = signed_in(client, viewer_a).get("/portal/reports/")
    assert response.status_code == 200
    assert f'href="{reverse("reports:index")}"'.encode() in response.content
    for report in REPORTS:
        assert f'href="/portal/reports/{report}/"'.encode() in response.content


def test_someone_without_a_membership_cannot_open_reports(client, db):
    outsider = get_user_model().objects.create_user(username="outsider")
    response = signed_in(client, outsider).get("/portal/reports/usage/")
    assert response.status_code == 403
    assert client.get("/portal/reports/sms/?format=csv").status_code == 403


def test_signed_out_visitors_are_sent_to_sign_in(client, db):
    response = client.get("/portal/reports/usage/")
    assert response.status_code == 302


def test_a_viewer_never_sees_another_organizations_rows_in_pages_or_csv(client, viewer_a, april):
    signed_in(client, viewer_a)
    for report in REPORTS:
        page = client.get(f"/portal/reports/{report}/?period=90")
        assert (
            b"B-SECRET" not in page.content and b"B-DEPT" not in page.content and b"0000" not in page.content
        )
        body = b"".join(client.get(f"/portal/reports/{report}/?period=90&format=csv").streaming_content)
        assert b"B-SECRET" not in body and b"B-DEPT" not in body and b"\xe2\x80\xa60000" not in body
    rows = csv_rows(client.get("/portal/reports/virtual-appointments/?period=90&format=csv"))
    assert {r["Appointment ID"] for r in rows} == {
        "A-CARD-1",
        "A-CARD-2",
        "A-NOSHOW",
        "A-PEDS",
        "A-ORTO",
        "A-OLD",
    }


def test_the_virtual_appointments_csv_has_every_column(client, viewer_a, april):
    response = signed_in(client, viewer_a).get("/portal/reports/virtual-appointments/?period=7&format=csv")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert 'filename="virtual-appointments_2026-04-14_2026-04-20.csv"' in response["Content-Disposition"]
    rows = {r["Appointment ID"]: r for r in csv_rows(response)}
    assert rows["A-CARD-1"] == {
        "Start (UTC)": "2026-04-18T13:00:00+00:00",
        "Start (department time)": "2026-04-18T09:00:00-04:00",
        "Time zone": NY,
        "Duration (seconds)": "1200",
        "Primary clinician": "dr-who",
        "Clinician EHR user ID": "Practitioner/dr-1",
        "Department": "CARD",
        "Environment": "production",
        "Attendees (peak)": "2",
        "Lobby wait (seconds)": "45",
        "State": "completed",
        "Within allotment": "yes",
        "Appointment ID": "A-CARD-1",
        "SMS sent": "2",  # the delivered confirmation and the sent reminder; not the failed one
    }
    # 23:30 in New York on the 19th is the 20th in UTC.
    assert rows["A-CARD-2"]["Start (UTC)"] == "2026-04-20T03:30:00+00:00"
    assert rows["A-CARD-2"]["Start (department time)"] == "2026-04-19T23:30:00-04:00"
    assert rows["A-NOSHOW"]["Duration (seconds)"] == "" and rows["A-NOSHOW"]["Within allotment"] == ""
    assert rows["A-ORTO"]["Start (department time)"] == "2026-04-19T08:00:00+02:00"
    assert "A-PEDS" not in rows  # the 10th is outside the last 7 days


def test_the_sms_csv_masks_numbers_and_names_types(client, viewer_a, april):
    rows = csv_rows(signed_in(client, viewer_a).get("/portal/reports/sms/?period=7&format=csv&ordering=time"))
    assert [(r["Number"], r["Type"], r["State"], r["Error"], r["Appointment ID"]) for r in rows] == [
        ("…4321", "Confirmation", "delivered", "", "A-CARD-1"),
        ("…4321", "Reminder", "sent", "", "A-CARD-1"),
        ("…1234", "Reminder", "failed", "30003", "A-CARD-1"),
        ("…9999", "Opt-out confirmation", "delivered", "", ""),
    ]


def test_the_csv_streams_in_chunks_for_any_size(client, viewer_a, org_a, django_assert_max_num_queries):
    ny = make_endpoint(org_a)
    for i in range(45):
        make_visit(org_a, ny, start=at(NY, 2026, 4, 1 + i % 15, 9, i), appointment=f"BULK-{i:03d}")
    from reports.definitions.visits import VirtualAppointmentsReport

    VirtualAppointmentsReport.csv_chunk_size = 10
    try:
        signed_in(client, viewer_a)
        response = client.get("/portal/reports/virtual-appointments/?period=30&format=csv")
        assert response.streaming
        with django_assert_max_num_queries(12):
            rows = csv_rows(response)
    finally:
        VirtualAppointmentsReport.csv_chunk_size = 2000
    assert len(rows) == 45


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("period=7", {"A-CARD-1", "A-CARD-2", "A-NOSHOW", "A-ORTO"}),
        ("period=30", {"A-CARD-1", "A-CARD-2", "A-NOSHOW", "A-ORTO", "A-PEDS"}),
        ("period=90", {"A-CARD-1", "A-CARD-2", "A-NOSHOW", "A-ORTO", "A-PEDS", "A-OLD"}),
        ("from=2026-04-19&to=2026-04-19", {"A-CARD-2", "A-NOSHOW", "A-ORTO"}),
        ("from=2026-04-01&to=2026-04-18", {"A-CARD-1", "A-PEDS"}),
        ("period=30&department=PEDS", {"A-PEDS"}),
        ("period=30&environment=test", {"A-ORTO"}),
        ("period=30&environment=production&state=no_show", {"A-NOSHOW"}),
        ("period=30&state=completed&department=CARD", {"A-CARD-1", "A-CARD-2"}),
    ],
)
def test_every_filter_of_the_virtual_appointments_report(client, viewer_a, april, query, expected):
    rows = csv_rows(
        signed_in(client, viewer_a).get(f"/portal/reports/virtual-appointments/?{query}&format=csv")
    )
    assert {r["Appointment ID"] for r in rows} == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("period=7&state=failed", ["30003"]),
        ("period=7&kind=opt_out", [""]),
        ("period=7&department=CARD&state=delivered", [""]),
        ("period=7&environment=test", []),
    ],
)
def test_the_sms_report_filters(client, viewer_a, april, query, expected):
    rows = csv_rows(signed_in(client, viewer_a).get(f"/portal/reports/sms/?{query}&format=csv"))
    assert [r["Error"] for r in rows] == expected


def test_sorting_and_paging(client, viewer_a, april, api_as):
    api = api_as(viewer_a)
    url = f"/api/v1/tenants/{ORG_A_TID}/reports/virtual-appointments/"
    body = api.get(url, {"period": 90, "ordering": "start_utc", "page_size": 2}).json()
    assert [r["appointment_id"] for r in body["results"]] == ["A-OLD", "A-PEDS"]
    assert (body["count"], body["pages"], body["previous"]) == (6, 3, None)
    second = api.get(body["next"]).json()
    assert [r["appointment_id"] for r in second["results"]] == ["A-CARD-1", "A-ORTO"]
    by_wait = api.get(url, {"period": 90, "ordering": "-lobby_wait_seconds"}).json()["results"]
    assert [r["appointment_id"] for r in by_wait][:2] == ["A-CARD-2", "A-CARD-1"]
    assert by_wait[-1]["lobby_wait_seconds"] is None  # empty values last, on every database
    by_texts = api.get(url, {"period": 90, "ordering": "-sms_sent"}).json()["results"]
    assert (by_texts[0]["appointment_id"], by_texts[0]["sms_sent"]) == ("A-CARD-1", 2)
    assert {r["sms_sent"] for r in by_texts[1:]} == {0}
    page = signed_in(api, viewer_a).get(
        "/portal/reports/virtual-appointments/?period=90&ordering=-department"
    )
    assert page.status_code == 200 and b'aria-sort="descending"' in page.content


def test_the_usage_page_shows_totals_charts_and_the_allotment(client, viewer_a, org_a, april):
    response = signed_in(client, viewer_a).get("/portal/reports/usage/?period=30")
    assert response.status_code == 200
    content = response.content.decode()
    assert content.count("<svg") == 3 and "Visits per day" in content
    summary = response.context["summary"]
    assert summary["totals"]["visits"] == 5
    assert summary["totals"]["no_shows"] == 1
    assert summary["allotment"]["used"] == 4  # started visits in April
    assert summary["built_through"] == date(2026, 4, 19)
    assert 'id="allotment"' in content and 'data-level=""' in content


def test_the_allotment_warning_shows_in_the_portal_and_the_admin(client, viewer_a, staff_user, org_a, april):
    org_a.monthly_visit_allotment = 5
    org_a.save()
    content = signed_in(client, viewer_a).get("/portal/reports/usage/").content.decode()
    assert 'data-level="80"' in content and "80% of the allotment used" in content
    org_a.monthly_visit_allotment = 4
    org_a.save()
    content = client.get("/portal/reports/").content.decode()
    assert 'data-level="100"' in content and "Allotment used up" in content
    client.logout()
    overview = signed_in(client, staff_user).get(reverse("admin:reports_overview"))
    assert overview.status_code == 200
    assert f'data-tenant="{org_a.pk}" data-level="100"' in overview.content.decode()


def test_invalid_filters_are_explained(client, viewer_a, april, api_as):
    page = signed_in(client, viewer_a).get("/portal/reports/usage/?from=2026-04-10&to=2026-04-01")
    assert page.status_code == 400
    assert "before its start" in page.content.decode()
    response = api_as(viewer_a).get(
        f"/api/v1/tenants/{ORG_A_TID}/reports/usage/?from=2026-04-10&to=2026-04-01"
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid" and "to" in response.json()["error"]["fields"]
    response = api_as(viewer_a).get(f"/api/v1/tenants/{ORG_A_TID}/reports/sms/?state=lost")
    assert response.status_code == 400
    assert client.get("/portal/reports/no-such-report/").status_code == 404


# --- API ------------------------------------------------------------------------------------


def test_the_api_lists_the_reports(api_as, viewer_a, april):
    body = api_as(viewer_a).get(f"/api/v1/tenants/{ORG_A_TID}/reports/").json()
    assert [r["id"] for r in body["results"]] == REPORTS


def test_the_api_answers_json_with_the_same_filters(api_as, viewer_a, april):
    body = (
        api_as(viewer_a)
        .get(
            f"/api/v1/tenants/{ORG_A_TID}/reports/virtual-appointments/",
            {"from": "2026-04-19", "to": "2026-04-19", "environment": "production"},
        )
        .json()
    )
    assert body["parameters"]["from"] == "2026-04-19" and body["parameters"]["environment"] == "production"
    assert {r["appointment_id"] for r in body["results"]} == {"A-CARD-2", "A-NOSHOW"}
    assert body["summary"]["totals"] == {"visits": 2, "completed": 1, "no_shows": 1}
    row = next(r for r in body["results"] if r["appointment_id"] == "A-CARD-2")
    assert row["start_local"] == "2026-04-19T23:30:00-04:00" and row["duration_seconds"] == 3000
    usage = api_as(viewer_a).get(f"/api/v1/tenants/{ORG_A_TID}/reports/usage/", {"period": 7}).json()
    assert usage["summary"]["totals"]["visits"] == 4
    sms = api_as(viewer_a).get(f"/api/v1/tenants/{ORG_A_TID}/reports/sms/", {"period": 7}).json()
    assert sms["summary"]["per_state"]["failed"] == 1 and sms["summary"]["total"] == 4


def test_the_api_streams_csv(api_as, viewer_a, april):
    response = api_as(viewer_a).get(
        f"/api/v1/tenants/{ORG_A_TID}/reports/virtual-appointments/?period=7&format=csv"
    )
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert {r["Appointment ID"] for r in csv_rows(response)} == {"A-CARD-1", "A-CARD-2", "A-NOSHOW", "A-ORTO"}


def test_the_api_keeps_organizations_apart(api_as, token_client, viewer_a, admin_b, org_a, org_b, april):
    assert api_as(viewer_a).get(f"/api/v1/tenants/{ORG_B_TID}/reports/usage/").status_code == 404
    assert api_as(viewer_a).get(f"/api/v1/tenants/{ORG_B_TID}/reports/sms/?format=csv").status_code == 404
    token_b = token_client(org_b)
    assert token_b.get(f"/api/v1/tenants/{ORG_A_TID}/reports/virtual-appointments/").status_code == 404
    rows = token_b.get(f"/api/v1/tenants/{ORG_B_TID}/reports/virtual-appointments/?period=7").json()[
        "results"
    ]
    assert [r["appointment_id"] for r in rows] == ["B-SECRET"]
    body = b"".join(
        token_client(org_a)
        .get(f"/api/v1/tenants/{ORG_A_TID}/reports/sms/?period=7&format=csv")
        .streaming_content
    )
    assert b"0000" not in body


def test_the_openapi_schema_lists_the_reports(client, db):
    schema = client.get("/api/schema/").content.decode()
    assert "/api/v1/tenants/{tenant_id}/reports/{report_id}/" in schema


# --- admin ----------------------------------------------------------------------------------


def test_support_staff_open_any_organizations_report_in_the_admin(client, staff_user, org_a, org_b, april):
    signed_in(client, staff_user)
    assert client.get(reverse("admin:reports_dailyrollup_changelist")).status_code == 200
    page = client.get(reverse("admin:reports_report", args=[org_b.pk, "virtual-appointments"]) + "?period=7")
    assert page.status_code == 200
    assert b"B-SECRET" in page.content and b"A-CARD-1" not in page.content
    response = client.get(reverse("admin:reports_report", args=[org_a.pk, "sms"]) + "?period=7&format=csv")
    assert len(csv_rows(response)) == 4
    for report in REPORTS:
        assert client.get(reverse("admin:reports_report", args=[org_a.pk, report])).status_code == 200
    assert client.get(reverse("admin:reports_reportbuild_changelist")).status_code == 200
    assert client.get(reverse("admin:reports_allotmentwarning_changelist")).status_code == 200


def test_organization_members_cannot_open_the_admin_reports(client, admin_a, org_a):
    response = signed_in(client, admin_a).get(reverse("admin:reports_report", args=[org_a.pk, "usage"]))
    assert response.status_code == 302  # to the admin sign-in


# --- query counts ---------------------------------------------------------------------------


def _grow(org_a, n: int) -> None:
    ny = make_endpoint(org_a, label=f"grow {n}")
    for i in range(n):
        visit = make_visit(
            org_a, ny, start=at(NY, 2026, 4, 1 + i % 18, 8 + i % 10), department=f"D{i % 9}", wait=i * 7
        )
        make_text(org_a, visit=visit, when=visit.scheduled_start - timedelta(hours=2))
    rollup_build(tenant=org_a, first=date(2026, 4, 1), last=date(2026, 4, 19))


@pytest.mark.parametrize("report", REPORTS)
def test_report_pages_make_the_same_number_of_queries_however_many_rows(
    client, api_as, viewer_a, org_a, report, django_assert_max_num_queries
):
    signed_in(client, viewer_a)
    api = api_as(viewer_a)
    budget = {"usage": 16, "virtual-appointments": 18, "sms": 16}[report]
    for size in (3, 60):
        _grow(org_a, size)
        with django_assert_max_num_queries(budget):
            assert client.get(f"/portal/reports/{report}/?period=30").status_code == 200
        with django_assert_max_num_queries(budget - 4):
            assert api.get(f"/api/v1/tenants/{ORG_A_TID}/reports/{report}/?period=30").status_code == 200
    with tenant_scope(org_a):
        from connector.models import Visit

        assert Visit.objects.count() == 63
