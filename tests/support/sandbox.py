"""Helpers for tests that use the sandbox EHR as a real HTTP peer (pytest-django live_server)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import requests

from connector.sandbox_ehr.seed import seed_sandbox_ehr
from connector.sandbox_ehr.testing import sign_in_as


def enable_sandbox(settings, live_server) -> str:
    """Turn the sandbox on, seed it, and return the origin of the live server."""
    settings.SANDBOX_EHR = True
    settings.EHR_INSECURE_HOSTS = ["localhost", "127.0.0.1"]
    settings.PUBLIC_BASE_URL = live_server.url
    seed_sandbox_ehr()
    return live_server.url


def sandbox_base(live_server, flavor: str = "r4") -> str:
    return f"{live_server.url}/sandbox-ehr/fhir/{flavor}"


def answer_sign_in(authorize_url: str, username: str) -> str:
    """Sign in on the sandbox's page as `username`; returns where the EHR sends the browser back."""
    session = requests.Session()
    page = session.get(authorize_url, timeout=10)
    redirect = sign_in_as(session, page, username)
    assert redirect.status_code in (302, 303), redirect.text[:300]
    return redirect.headers["Location"]


def local_path(url: str) -> str:
    """The path and query of an absolute URL, for Django's test client."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def query_value(url: str, name: str) -> str:
    return parse_qs(urlsplit(url).query)[name][0]


def move_appointment_to_now(
    appointment_id: str, *, servers: tuple[str, ...] = ("r4", "r4-other", "r4-generic")
) -> None:
    """Start a seeded appointment (and its encounter) five minutes ago: the connector reads the schedule,
    and a join link stops working two hours after the scheduled end, so a visit seeded for 09:00
    is over by the afternoon."""
    from datetime import timedelta

    from django.utils import timezone

    from connector.sandbox_ehr.models import Resource

    start = timezone.now().replace(microsecond=0) - timedelta(minutes=5)
    end = start + timedelta(minutes=30)
    for row in Resource.objects.filter(server__in=servers, resource_type__in=["Appointment", "Encounter"]):
        body = row.body
        if row.resource_type == "Appointment" and row.fhir_id == appointment_id:
            body.update(start=start.isoformat(), end=end.isoformat())
        elif f"Appointment/{appointment_id}" in [a.get("reference") for a in body.get("appointment", [])]:
            body["period"] = {"start": start.isoformat(), "end": end.isoformat()}
        else:
            continue
        row.body = body
        row.save(update_fields=["body"])
