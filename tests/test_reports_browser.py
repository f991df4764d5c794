"""The report pages in a real browser: no script errors, charts drawn, filters, sorting and the CSV download."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from connector.models import VisitState
from reports.services import rollup_build
from tenants.models import Role
from tests.conftest import make_member
from tests.test_reports_rollup import NY, at, make_endpoint, make_text, make_visit

pytestmark = pytest.mark.browser


def test_a_viewer_reads_filters_sorts_and_downloads_reports(live_server, page, settings, org_a):
    settings.DEMO_SIGN_IN = True
    make_member(org_a, "demo-viewer", Role.VIEWER)
    ny = make_endpoint(org_a)
    today = timezone.localdate()
    nine = at(NY, today.year, today.month, today.day, 9)
    for n in range(7):
        start = nine - timedelta(days=n + 2)
        visit = make_visit(org_a, ny, start=start, wait=30 * n, appointment=f"B-{n}")
        make_text(org_a, visit=visit, when=start - timedelta(hours=1))
    make_visit(org_a, ny, start=nine - timedelta(days=3), state=VisitState.NO_SHOW, appointment="B-NOSHOW")
    rollup_build(tenant=org_a, first=today - timedelta(days=40), last=today - timedelta(days=1))
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # (the site has no favicon yet: its 404 is not the reports' concern)
    page.on(
        "console",
        lambda message: (
            errors.append(message.text)
            if message.type == "error" and "favicon" not in message.location.get("url", "")
            else None
        ),
    )

    page.goto(f"{live_server.url}/sign-in/")
    page.get_by_role("button", name="Sign in as demo-viewer").first.click()
    page.wait_for_url(f"{live_server.url}/portal/")
    page.get_by_role("link", name="Reports").first.click()
    page.wait_for_url(f"{live_server.url}/portal/reports/")

    page.locator('a[data-report="usage"]').first.click()
    page.locator('a[data-period="30"]').click()
    assert page.locator("#report-charts svg.chart").count() == 3
    assert "Visits per day" in page.locator("#report-charts").inner_text()

    page.locator('a[data-report="virtual-appointments"]').first.click()
    page.locator('a[data-period="90"]').click()
    page.select_option("#id_state", "no_show")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_selector("text=1 row.")
    assert "B-NOSHOW" in page.locator("#report-table").inner_text()

    page.select_option("#id_state", "")
    page.get_by_role("button", name="Apply").click()
    page.locator('a[data-sort="lobby_wait_seconds"]').click()
    page.locator('a[data-sort="lobby_wait_seconds"]').click()  # again: descending
    first_row = page.locator("#report-table tbody tr").first.inner_text()
    assert "B-6" in first_row

    with page.expect_download() as download:
        page.locator("#download-csv").click()
    text = Path(download.value.path()).read_text(encoding="utf-8")
    assert text.startswith("Start (UTC),") and "B-NOSHOW" in text and "B-6" in text
    assert errors == [], errors
