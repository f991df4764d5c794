"""Endpoint validation tells the truth about the third-party SMART peer (smart-launcher-v2 + Medplum).

The peer offers EHR launch, private_key_jwt, the context capabilities and every
interaction the connector uses, but its `scopes_supported` lists no `system/`
scope: write-back through SMART Backend Services is something to confirm, so the
result is "OK with gaps", never "everything the connector needs". The same
result shows in the portal wizard, the API and the admin. Real HTTP to the peer.
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from connector.models import EndpointStatus, FhirEndpoint
from connector.services.endpoints import endpoint_create, endpoint_validate
from tenants.scoping import tenant_scope
from tests.conftest import signed_in

pytestmark = [pytest.mark.peer, pytest.mark.django_db]


@pytest.fixture
def peer_endpoint(smart_peer, settings, org_b) -> FhirEndpoint:
    """The launcher's base URL, validated for an Oracle Health organization (no approval step)."""
    settings.EHR_INSECURE_HOSTS = ["127.0.0.1"]
    with tenant_scope(org_b):
        endpoint = endpoint_create(
            tenant=org_b, base_url=smart_peer.fhir_base, environment="test", label="Peer EHR"
        )
        return endpoint_validate(endpoint=endpoint)


def test_the_peer_is_ok_with_write_back_to_confirm(peer_endpoint):
    result = peer_endpoint.last_validation

    assert peer_endpoint.status == EndpointStatus.VALIDATED
    assert result["ok"] is True
    assert result["code"] == "ok_with_gaps"
    assert "everything the connector needs" not in result["message"]
    assert result["message"].startswith("OK with gaps. This is a SMART on FHIR R4 server (FHIR 4.0.1)")
    assert "To confirm with your EHR team: Write-back to the EHR" in result["message"]
    features = {f["key"]: f for f in result["details"]["features"]}
    assert {key for key, f in features.items() if f["status"] != "available"} == {"write_back"}
    assert features["ehr_launch"]["status"] == "available"
    assert features["write_back"]["missing"] == []
    assert "the scope system/Communication.create" in features["write_back"]["unconfirmed"]
    assert "private_key_jwt" in result["details"]["token_endpoint_auth_methods"]
    assert "user/*.*" in result["details"]["scopes_supported"]


def test_the_portal_wizard_shows_the_gap_and_what_it_costs(peer_endpoint, client, admin_b):
    page = signed_in(client, admin_b).get(reverse("portal:configure")).content.decode()

    assert 'class="validation-message warning"' in page
    assert "OK with gaps." in page
    assert "To confirm</span> Write-back to the EHR" in page
    assert "the scope system/Encounter.update" in page

    status = client.get(reverse("portal:endpoint-status", args=[peer_endpoint.pk])).json()
    assert status["code"] == "ok_with_gaps"
    assert status["gaps"] == [
        {
            "feature": "Write-back to the EHR: Encounter status and period, Appointment status, Communication "
            "(SMART Backend Services)",
            "status": "unconfirmed",
        }
    ]


def test_the_api_lists_the_gaps(peer_endpoint, api_as, admin_b, org_b):
    response = api_as(admin_b).get(
        f"/api/v1/tenants/{org_b.microsoft_tenant_id}/endpoints/{peer_endpoint.pk}/"
    )

    assert response.status_code == 200
    body = response.json()
    assert body["last_validation"]["code"] == "ok_with_gaps"
    assert [gap["key"] for gap in body["validation_gaps"]] == ["write_back"]


def test_the_admin_shows_every_feature_and_its_state(peer_endpoint, client, staff_user):
    page = signed_in(client, staff_user).get(f"/admin/connector/fhirendpoint/{peer_endpoint.pk}/change/")

    assert page.status_code == 200
    text = page.content.decode()
    assert "Features (last validation)" in text
    assert "<strong>available</strong>: Visits started from the EHR" in text
    assert "<strong>to confirm</strong>: Write-back to the EHR" in text
