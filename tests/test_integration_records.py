"""Integration records hold everything an EHR team needs to register the connector.

Client ID, redirect and launch URLs, the JWKS URL, token endpoint authentication
(private_key_jwt, RS384), the scopes of launches and of backend services, and the
vendor's own setup (Epic FDI records, Oracle Health's code console). The last
tests register the connector at the third-party peer with nothing but what the
records say, and launch and get a backend token through it, over real HTTP.
"""

from __future__ import annotations

import json

import jwt
import pytest

from connector.models import EndpointApproval, EndpointStatus, FhirEndpoint, IntegrationRecord, RecordKind
from connector.services.endpoints import endpoint_create, endpoint_update, endpoint_validate
from connector.services.records import integration_records_produce
from connector.write_back_sender import BACKEND_SCOPES
from tenants.models import DataRegion, EhrVendor, Tenant, TenantStatus
from tenants.scoping import tenant_scope
from tests.conftest import signed_in

PUBLIC = "https://connector.example.org"


@pytest.fixture
def public(settings):
    settings.PUBLIC_BASE_URL = PUBLIC
    settings.SMART_CLIENT_ID = "client-123"


def usable(tenant, user=None, *, write_back=False, base_url="https://fhir.example.org/api/FHIR/R4"):
    with tenant_scope(tenant):
        endpoint = endpoint_create(
            tenant=tenant, base_url=base_url, environment="test", label="Main", write_back_enabled=write_back
        )
        FhirEndpoint.objects.filter(pk=endpoint.pk).update(
            status=EndpointStatus.VALIDATED,
            last_validation={
                "ok": True,
                "details": {"token_endpoint": "https://fhir.example.org/oauth2/token"},
            },
        )
        endpoint.refresh_from_db()
        integration_records_produce(endpoint=endpoint)
    return endpoint


def records_of(endpoint) -> dict[str, IntegrationRecord]:
    with tenant_scope(endpoint.tenant):
        return {r.kind: r for r in IntegrationRecord.objects.filter(endpoint=endpoint)}


# --- What the records say ------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_client_registration_record_has_everything_to_register_the_app(org_b, public):
    record = records_of(usable(org_b))[RecordKind.CLIENT_REGISTRATION]

    assert record.client_id == "client-123"
    assert record.redirect_uri == f"{PUBLIC}/launch/callback"
    assert record.details["redirect_uris"] == [
        f"{PUBLIC}/launch/callback",
        f"{PUBLIC}/portal/approval/callback/",
    ]
    assert record.details["launch_urls"] == [f"{PUBLIC}/launch/provider", f"{PUBLIC}/launch/patient"]
    assert record.details["jwks_url"] == f"{PUBLIC}/.well-known/jwks.json"
    assert record.details["token_endpoint_auth_method"] == "private_key_jwt"
    assert record.details["token_endpoint_auth_signing_alg"] == "RS384"
    assert record.details["client_type"] == "confidential-asymmetric"
    scopes = record.scopes.split()
    assert {"launch", "openid", "fhirUser", "user/Appointment.read", "patient/Appointment.read"} <= set(
        scopes
    )
    assert len(scopes) == len(set(scopes))


@pytest.mark.django_db
@pytest.mark.parametrize("kind", [RecordKind.PROVIDER_LAUNCH, RecordKind.PATIENT_LAUNCH])
def test_each_launch_record_says_how_the_connector_authenticates(org_b, public, kind):
    record = records_of(usable(org_b))[kind]

    assert record.details["jwks_url"] == f"{PUBLIC}/.well-known/jwks.json"
    assert record.details["token_endpoint_auth_method"] == "private_key_jwt"
    assert record.details["token_endpoint_auth_signing_alg"] == "RS384"
    assert record.as_export()["details"]["jwks_url"] == record.details["jwks_url"]


@pytest.mark.django_db
def test_the_backend_services_record_holds_the_write_back_scopes(org_b, public):
    endpoint = usable(org_b, write_back=True)
    record = records_of(endpoint)[RecordKind.BACKEND_SERVICES]

    assert record.scopes == BACKEND_SCOPES
    assert all(scope.startswith("system/") for scope in record.scopes.split())
    assert record.client_id == "client-123"
    assert record.details["grant_type"] == "client_credentials"
    assert record.details["token_endpoint"] == "https://fhir.example.org/oauth2/token"
    assert record.details["jwks_url"] == f"{PUBLIC}/.well-known/jwks.json"
    assert record.details["write_back_enabled"] is True

    with tenant_scope(org_b):
        endpoint_update(endpoint=endpoint, write_back_enabled=False)
    record = records_of(endpoint)[RecordKind.BACKEND_SERVICES]
    assert record.details["write_back_enabled"] is False
    assert "Write-back is off for this endpoint." in record.details["note"]


@pytest.mark.django_db
def test_an_epic_organization_gets_its_fdi_records(org_a, public):
    setup = records_of(usable(org_a))[RecordKind.VENDOR_SETUP].details

    assert setup["vendor"] == "epic"
    assert "FDI" in setup["title"]
    assert [r["launch_url"] for r in setup["fdi_records"]] == [
        f"{PUBLIC}/launch/provider",
        f"{PUBLIC}/launch/patient",
        f"{PUBLIC}/launch/provider?view=console",
    ]
    assert all(r["parameters"] == "appointment=<CSN>" for r in setup["fdi_records"])
    assert any("client-123" in step and f"{PUBLIC}/.well-known/jwks.json" in step for step in setup["steps"])


@pytest.mark.django_db
def test_an_oracle_health_organization_gets_its_code_console_registration(org_b, public):
    endpoint = usable(org_b)
    setup = records_of(endpoint)[RecordKind.VENDOR_SETUP].details

    assert setup["vendor"] == "oracle_health"
    assert "code console" in setup["title"]
    assert any("private_key_jwt, RS384" in step for step in setup["steps"])
    assert any("Encounter.appointment" in step for step in setup["steps"])
    assert any(endpoint.base_url in step for step in setup["steps"])


@pytest.mark.django_db
def test_any_other_smart_ehr_gets_the_generic_steps(public):
    tenant = Tenant.objects.create(
        name="Org C",
        microsoft_tenant_id="33333333-3333-4333-8333-333333333333",
        ehr_vendor=EhrVendor.SMART_ON_FHIR,
        data_region=DataRegion.AMERICAS,
        status=TenantStatus.ENABLED,
    )
    setup = records_of(usable(tenant))[RecordKind.VENDOR_SETUP].details

    assert setup["vendor"] == "smart_on_fhir"
    assert any("Backend Services" in step for step in setup["steps"])


@pytest.mark.django_db
def test_the_review_page_and_the_download_show_the_registration(client, org_a, admin_a, public):
    usable(org_a)
    signed_in(client, admin_a)

    page = client.get("/portal/setup/review/").content.decode()
    assert "JWKS URL" in page and f"{PUBLIC}/.well-known/jwks.json" in page
    assert "<code>private_key_jwt</code>, signed with <code>RS384</code>" in page
    assert f"{PUBLIC}/portal/approval/callback/" in page
    assert "Epic: FDI records and client registration" in page
    assert "Backend services (write-back)" in page

    download = json.loads(client.get("/portal/setup/records.json").content)
    kinds = {r["kind"]: r for r in download["records"]}
    assert set(kinds) == set(RecordKind.values)
    assert kinds["backend_services"]["scopes"] == BACKEND_SCOPES
    assert kinds["client_registration"]["details"]["token_endpoint_auth_method"] == "private_key_jwt"


@pytest.mark.django_db
def test_the_jwks_url_serves_an_rs384_signing_key(client, org_b, public):
    jwks_url = records_of(usable(org_b))[RecordKind.CLIENT_REGISTRATION].details["jwks_url"]

    keys = client.get(jwks_url.removeprefix(PUBLIC)).json()["keys"]

    assert keys and all("d" not in key for key in keys)  # public halves only
    assert any(key.get("alg") == "RS384" and key.get("kty") == "RSA" for key in keys)
    jwt.PyJWKSet.from_dict({"keys": keys})


# --- Registered at the third-party peer with nothing but the records --------------------------------


def peer_endpoint_from_records(tenant, smart_peer, registration: dict, **options) -> FhirEndpoint:
    """The peer's base URL with the client registered as the records say (client ID and JWKS URL)."""
    base = smart_peer.sim_base(
        client_id=registration["client_id"], jwks_url=registration["details"]["jwks_url"], **options
    )
    with tenant_scope(tenant):
        endpoint = endpoint_validate(
            endpoint=endpoint_create(
                tenant=tenant, base_url=base, environment="test", label="Peer", write_back_enabled=True
            )
        )
        if endpoint.status == EndpointStatus.AWAITING_APPROVAL:
            FhirEndpoint.objects.filter(pk=endpoint.pk).update(status=EndpointStatus.APPROVED)
            endpoint.refresh_from_db()
            integration_records_produce(endpoint=endpoint)
    assert endpoint.is_usable, endpoint.last_validation
    return endpoint


@pytest.mark.peer
@pytest.mark.django_db(transaction=True)
def test_a_backend_token_is_granted_to_the_client_the_records_describe(
    smart_peer, settings, live_server, org_b
):
    from connector.write_back_sender import WriteBackFailed, backend_services_token

    settings.EHR_INSECURE_HOSTS = ["localhost", "127.0.0.1"]
    settings.PUBLIC_BASE_URL = live_server.url
    settings.SMART_CLIENT_ID = f"connector-{org_b.pk}"
    first = usable(org_b, base_url="https://fhir.example.org/R4")
    registration = records_of(first)[RecordKind.BACKEND_SERVICES].as_export()

    endpoint = peer_endpoint_from_records(
        org_b, smart_peer, registration, launch_type="backend-service", client_type="backend-service"
    )

    # The peer verifies the connector's private_key_jwt against the JWKS URL of the record.
    assert backend_services_token(endpoint)
    with tenant_scope(org_b):
        assert not EndpointApproval.objects.exists()

    # Registered with another JWKS URL than the record's, the same request is refused.
    wrong = {**registration, "details": {**registration["details"], "jwks_url": f"{live_server.url}/nothing"}}
    elsewhere = peer_endpoint_from_records(
        org_b, smart_peer, wrong, launch_type="backend-service", client_type="backend-service"
    )
    with pytest.raises(WriteBackFailed):
        backend_services_token(elsewhere)
