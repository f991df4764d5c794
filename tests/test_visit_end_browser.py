"""Ending a visit from the clinician's console in Chromium, while a wall board polls the live
status over real HTTP (live_server): the board sees the change through its ETag."""

from __future__ import annotations

import json
import urllib.request
from urllib.error import HTTPError

import pytest
from playwright.sync_api import Page, expect

from connector.models import EventKind, ParticipantRole, Visit
from connector.visits.pages.console import console_url_for
from tenants.scoping import all_tenants, tenant_scope
from tenants.services import api_token_create
from tests.conftest import ORG_A_TID
from tests.test_api_visits import make_visit, record

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def poll(url: str, token: str, etag: str | None = None) -> tuple[int, str, dict | None]:
    headers = {"Authorization": f"Bearer {token}"}
    if etag:
        headers["If-None-Match"] = etag
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return response.status, response.headers["ETag"], json.loads(response.read())
    except HTTPError as answer:
        if answer.code != 304:
            raise
        return 304, answer.headers["ETag"], None


def test_a_clinician_ends_the_visit_and_the_wall_board_sees_it(live_server, settings, org_a, page: Page):
    settings.MEETING_BACKEND = "connector.meetings.demo.DemoMeetingBackend"
    settings.PUBLIC_BASE_URL = live_server.url
    visit = make_visit(org_a, "BOARD-1")
    record(visit, EventKind.JOINED, ParticipantRole.CLINICIAN, "c-1")
    record(visit, EventKind.JOINED, ParticipantRole.PATIENT, "p-1", 1)
    with tenant_scope(org_a):
        token = api_token_create(tenant=org_a, name="wall board", scope="read", created_by=None).raw
        console = console_url_for(visit, "c-1")
    board = f"{live_server.url}/api/v1/tenants/{ORG_A_TID}/live-status/"
    status, etag, body = poll(board, token)
    assert status == 200 and body["connected"] == 2
    assert poll(board, token, etag)[0] == 304

    page.goto(console)
    page.get_by_role("button", name="End the visit").click()
    expect(page.locator("#end-form")).to_have_count(0)
    with all_tenants():
        assert Visit.objects.get(pk=visit.pk).state == "completed"

    status, new_etag, body = poll(board, token, etag)
    assert status == 200 and new_etag != etag
    assert body["visits"] == [] and body["connected"] == 0
