"""Each endpoint can carry the client ID its EHR assigned (Epic gives one per environment).

The launch, the approval sign-in, the id_token's audience, backend services and the
integration records all use it; blank falls back to the installation's SMART_CLIENT_ID.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import requests

from connector.models import EndpointStatus, FhirEndpoint, IntegrationRecord, Visit
from connector.services.endpoints import endpoint_update
from connector.services.records import integration_records_produce
from tenants.scoping import tenant_scope
from tests.conftest import signed_in
from tests.test_launch import follow_to_connector, link_clinician, press_launch, sandbox, usable_endpoint

__all__ = ["sandbox"]  # the fixture, imported for the tests below

EPIC_NONPROD_CLIENT = "d6f0a2c1-nonprod-client"


def with_client_id(endpoint: FhirEndpoint, client_id: str) -> FhirEndpoint:
    FhirEndpoint.objects.filter(pk=endpoint.pk).update(smart_client_id=client_id)
    endpoint.refresh_from_db()
    return endpoint


def test_a_launch_presents_the_endpoints_own_client_id_and_accepts_its_id_token(sandbox, org_a, admin_a):
    endpoint = usable_endpoint(org_a, sandbox)
    with tenant_scope(org_a):
        endpoint = with_client_id(endpoint, EPIC_NONPROD_CLIENT)
    link_clinician(org_a, admin_a, f"{endpoint.base_url}/Practitioner/pract-smith")
    session = requests.Session()

    first = session.get(press_launch(sandbox), allow_redirects=False, timeout=15)
    authorize = parse_qs(urlsplit(first.headers["Location"]).query)
    assert authorize["client_id"] == [EPIC_NONPROD_CLIENT]

    # The sandbox issues the id_token to the client that asked; verifying it against the
    # installation's client ID would refuse the launch.
    final = follow_to_connector(session, press_launch(sandbox), sandbox)
    assert final.status_code == 302 and final.headers["Location"].startswith("https://meetings.invalid/")
    with tenant_scope(org_a):
        assert Visit.objects.count() == 1


def test_blank_uses_the_installations_client_id(sandbox, org_a, settings):
    usable_endpoint(org_a, sandbox)
    response = requests.get(press_launch(sandbox), allow_redirects=False, timeout=15)
    assert parse_qs(urlsplit(response.headers["Location"]).query)["client_id"] == [settings.SMART_CLIENT_ID]


def test_the_integration_records_name_the_endpoints_client_id(sandbox, org_a):
    endpoint = usable_endpoint(org_a, sandbox)
    with tenant_scope(org_a):
        endpoint = with_client_id(endpoint, EPIC_NONPROD_CLIENT)
        integration_records_produce(endpoint=endpoint)
        records = IntegrationRecord.objects.filter(endpoint=endpoint).exclude(client_id="")
        client_ids = {record.client_id for record in records}
        epic_setup = IntegrationRecord.objects.get(endpoint=endpoint, kind="vendor_setup")
    assert client_ids == {EPIC_NONPROD_CLIENT}
    assert EPIC_NONPROD_CLIENT in str(epic_setup.details)


def test_a_new_client_id_needs_validating_again_and_outdates_the_records(sandbox, org_a):
    endpoint = usable_endpoint(org_a, sandbox)
    with tenant_scope(org_a):
        integration_records_produce(endpoint=endpoint)
        version = endpoint.config_version
        endpoint = endpoint_update(endpoint=endpoint, smart_client_id=f"  {EPIC_NONPROD_CLIENT} ")
        assert endpoint.smart_client_id == EPIC_NONPROD_CLIENT  # trimmed
        assert endpoint.config_version == version + 1
        assert endpoint.status in (EndpointStatus.DRAFT, EndpointStatus.AWAITING_APPROVAL)
        assert not IntegrationRecord.objects.filter(endpoint=endpoint, out_of_date=False).exists()
        # Saving the same value again changes nothing.
        endpoint = endpoint_update(endpoint=endpoint, smart_client_id=EPIC_NONPROD_CLIENT)
        assert endpoint.config_version == version + 1


def test_the_api_sets_and_shows_the_client_id(org_a, admin_a, api_as):
    api = api_as(admin_a)
    created = api.post(
        f"/api/v1/tenants/{org_a.microsoft_tenant_id}/endpoints/",
        {
            "base_url": "https://fhir.example.org/api/FHIR/R4",
            "environment": "test",
            "label": "Main",
            "smart_client_id": EPIC_NONPROD_CLIENT,
        },
        format="json",
    )
    assert created.status_code == 201, created.content
    assert created.json()["smart_client_id"] == EPIC_NONPROD_CLIENT
    too_long = api.patch(
        f"/api/v1/tenants/{org_a.microsoft_tenant_id}/endpoints/{created.json()['id']}/",
        {"smart_client_id": "x" * 201},
        format="json",
    )
    assert too_long.status_code == 400
    assert "smart_client_id" in str(too_long.json())


def test_the_portal_form_offers_the_client_id(sandbox, client, org_a, admin_a):
    endpoint = usable_endpoint(org_a, sandbox)
    page = signed_in(client, admin_a).get(f"/portal/setup/endpoints/{endpoint.pk}/edit/")
    assert 'name="endpoint-smart_client_id"' in page.content.decode()
