"""Deleting an endpoint in the portal (kept in history, gone from lists, refused while needed) and the
new endpoint form's defaults (the organization's time zone, the environment it lacks)."""

from __future__ import annotations

import re
from datetime import timedelta

from django.urls import reverse
from django.utils import timezone

from connector.models import EndpointStatus, FhirEndpoint, VisitState
from connector.services.endpoints import endpoint_create
from sms.models import MessageState
from tenants.scoping import tenant_scope
from tests.conftest import signed_in
from tests.test_reports_rollup import make_text, make_visit

CONFIGURE = "/portal/setup/configure/"


def endpoint(tenant, url="https://fhir.example.org/api/FHIR/R4", **fields):
    with tenant_scope(tenant):
        made = endpoint_create(tenant=tenant, base_url=url, environment="test", label="Main campus", **fields)
        FhirEndpoint.objects.filter(pk=made.pk).update(status=EndpointStatus.VALIDATED)
        made.refresh_from_db()
        return made


def delete(client, pk: int):
    return client.post(reverse("portal:endpoint-delete", args=[pk]), follow=True)


def test_a_deleted_endpoint_is_kept_with_its_visits_and_gone_from_the_lists(client, org_a, admin_a, api_as):
    main = endpoint(org_a)
    past = make_visit(org_a, main, start=timezone.now() - timedelta(days=3))
    signed_in(client, admin_a)

    page = delete(client, main.pk).content.decode()

    assert "Main campus was deleted" in page
    assert (
        "fhir.example.org"
        not in client.get(CONFIGURE).content.decode().split('id="endpoints"')[1].split("</table>")[0]
    )
    with tenant_scope(org_a):
        main.refresh_from_db()
        past.refresh_from_db()
        assert main.deleted_at is not None and main.status == EndpointStatus.DISABLED
        assert past.endpoint_id == main.pk
        assert main.history.count() >= 2  # the deletion is in its history
    listed = api_as(admin_a).get(f"/api/v1/tenants/{org_a.microsoft_tenant_id}/endpoints/").json()
    rows = listed["results"] if isinstance(listed, dict) and "results" in listed else listed
    assert all(row["id"] != main.pk for row in rows)


def test_deletion_is_refused_with_the_reason_while_visits_or_texts_need_it(client, org_a, admin_a):
    main = endpoint(org_a)
    soon = make_visit(org_a, main, start=timezone.now() + timedelta(hours=2), state=VisitState.SCHEDULED)
    make_text(org_a, when=timezone.now() + timedelta(hours=1), state=MessageState.SCHEDULED, visit=soon)
    signed_in(client, admin_a)

    page = delete(client, main.pk).content.decode()

    assert "cannot be deleted while it has 1 visit not over yet and 1 text message still to be sent" in page
    assert "Disable it now" in page
    with tenant_scope(org_a):
        main.refresh_from_db()
        assert main.deleted_at is None


def test_only_administrators_delete_and_only_their_own_endpoints(client, org_a, org_b, approver_a, admin_b):
    main = endpoint(org_a)
    signed_in(client, approver_a)
    assert client.post(reverse("portal:endpoint-delete", args=[main.pk])).status_code == 403
    signed_in(client, admin_b)
    assert client.post(reverse("portal:endpoint-delete", args=[main.pk])).status_code == 404
    with tenant_scope(org_a):
        main.refresh_from_db()
        assert main.deleted_at is None


def test_adding_a_deleted_endpoints_url_again_brings_it_back(client, org_a, admin_a):
    main = endpoint(org_a)
    signed_in(client, admin_a)
    delete(client, main.pk)

    with tenant_scope(org_a):
        again = endpoint_create(
            tenant=org_a, base_url=main.base_url, environment="production", label="Main campus again"
        )
    assert again.pk == main.pk
    assert (again.deleted_at, again.status, again.environment) == (None, EndpointStatus.DRAFT, "production")
    assert again.config_version == main.config_version + 1


def checked_environment(page: str) -> list[str]:
    return re.findall(r'<input[^>]*name="endpoint-environment" value="(\w+)"[^>]*checked', page)


def test_a_new_endpoint_form_starts_with_the_organizations_zone_and_the_missing_environment(
    client, org_a, admin_a
):
    signed_in(client, admin_a)
    first = client.get(CONFIGURE).content.decode()
    # No endpoint yet: test first, and the browser's zone proposed by static/js/endpoint-form.js.
    assert checked_environment(first) == ["test"]
    assert 'data-browser-default="true"' in first
    assert "/static/js/endpoint-form.js" in first

    endpoint(org_a, time_zone="America/Chicago")
    second = client.get(CONFIGURE).content.decode()

    assert '<option value="America/Chicago" selected>' in second
    assert 'data-browser-default="true"' not in second
    assert checked_environment(second) == ["production"]
