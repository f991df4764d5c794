"""FHIR endpoints: configuration rules, the API, roles and isolation (no EHR calls here)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from connector.models import EndpointApproval, EndpointStatus, FhirEndpoint, IntegrationRecord, RecordKind
from connector.services.endpoints import ehr_approvers_set, endpoint_create, endpoint_update
from connector.services.records import integration_record_rotate_token, integration_records_produce
from tenants.scoping import ScopeError, all_tenants, tenant_scope

pytestmark = pytest.mark.django_db


def make_endpoint(tenant, url="https://fhir.example.org/api/FHIR/R4", status=EndpointStatus.DRAFT, **extra):
    with tenant_scope(tenant):
        endpoint = endpoint_create(
            tenant=tenant, base_url=url, environment="test", label="Main campus", **extra
        )
        if status != EndpointStatus.DRAFT:
            FhirEndpoint.objects.filter(pk=endpoint.pk).update(status=status)
            endpoint.refresh_from_db()
    return endpoint


def approve_directly(endpoint, user):
    """Mark an endpoint approved as the approval service would (for set-up only)."""
    with tenant_scope(endpoint.tenant):
        EndpointApproval.objects.create(
            tenant=endpoint.tenant,
            endpoint=endpoint,
            config_version=endpoint.config_version,
            base_url=endpoint.base_url,
            decision="approved",
            decided_by=user,
            ehr_username="ANALYST1",
        )
        FhirEndpoint.objects.filter(pk=endpoint.pk).update(status=EndpointStatus.APPROVED)
        endpoint.refresh_from_db()
        integration_records_produce(endpoint=endpoint)
    return endpoint


def test_it_normalizes_the_base_url(org_a):
    endpoint = make_endpoint(org_a, url="  HTTPS://FHIR.Example.ORG/api/FHIR/R4/  ")
    assert endpoint.base_url == "https://fhir.example.org/api/FHIR/R4"
    assert endpoint.status == EndpointStatus.DRAFT


def test_it_refuses_plain_http_for_a_host_not_allowed(org_a, settings):
    settings.EHR_INSECURE_HOSTS = []
    with pytest.raises(ValidationError) as error:
        make_endpoint(org_a, url="http://fhir.example.org/R4")
    assert "https" in str(error.value)


def test_it_refuses_the_same_url_twice_in_one_organization(org_a, org_b):
    make_endpoint(org_a)
    with pytest.raises(ValidationError) as error:
        make_endpoint(org_a, url="https://FHIR.example.org/api/FHIR/R4/")
    assert "already configured" in str(error.value)
    # Another organization may use the same URL.
    assert make_endpoint(org_b).pk


def test_changing_the_url_of_an_approved_endpoint_asks_for_approval_again(org_a, admin_a):
    endpoint = approve_directly(make_endpoint(org_a), admin_a)
    with tenant_scope(org_a):
        assert IntegrationRecord.objects.filter(endpoint=endpoint, out_of_date=False).count() == len(
            RecordKind.values
        )
        endpoint = endpoint_update(endpoint=endpoint, base_url="https://fhir2.example.org/api/FHIR/R4")
        assert endpoint.status == EndpointStatus.AWAITING_APPROVAL
        assert endpoint.config_version == 2
        assert IntegrationRecord.objects.filter(endpoint=endpoint, out_of_date=True).count() == len(
            RecordKind.values
        )


def test_changing_the_environment_also_counts_as_a_new_configuration(org_a, admin_a):
    endpoint = approve_directly(make_endpoint(org_a), admin_a)
    with tenant_scope(org_a):
        endpoint = endpoint_update(endpoint=endpoint, environment="production")
    assert endpoint.status == EndpointStatus.AWAITING_APPROVAL


def test_changing_only_the_label_keeps_the_approval_and_refreshes_records(org_a, admin_a):
    endpoint = approve_directly(make_endpoint(org_a), admin_a)
    with tenant_scope(org_a):
        endpoint = endpoint_update(endpoint=endpoint, label="North campus", time_zone="America/Chicago")
        record = IntegrationRecord.objects.get(endpoint=endpoint, kind=RecordKind.PROVIDER_LAUNCH)
    assert endpoint.status == EndpointStatus.APPROVED
    assert record.details["time_zone"] == "America/Chicago"
    assert not record.out_of_date


def test_records_hold_what_the_ehr_team_types_in(org_a, admin_a, settings):
    settings.PUBLIC_BASE_URL = "https://connector.example.org"
    settings.SMART_CLIENT_ID = "client-123"
    endpoint = approve_directly(make_endpoint(org_a), admin_a)
    with tenant_scope(org_a):
        records = {r.kind: r for r in IntegrationRecord.objects.filter(endpoint=endpoint)}
    provider = records[RecordKind.PROVIDER_LAUNCH]
    assert provider.launch_url == "https://connector.example.org/launch/provider"
    assert provider.redirect_uri == "https://connector.example.org/launch/callback"
    assert provider.client_id == "client-123"
    assert "launch" in provider.scopes.split() and "fhirUser" in provider.scopes.split()
    assert {p["name"] for p in provider.context_parameters} == {
        "appointment",
        "conference_id",
        "department_id",
    }
    assert records[RecordKind.PATIENT_LAUNCH].launch_url.endswith("/launch/patient")
    assert "/sms/ingest/" in records[RecordKind.SMS_CONFIGURATION].launch_url
    token = records[RecordKind.DEVICE_TEST_CONFIGURATION].context_token
    assert len(token) >= 22  # at least 128 bits, url-safe base64


def test_a_rotated_context_token_replaces_the_old_one_and_survives_a_refresh(org_a, admin_a):
    endpoint = approve_directly(make_endpoint(org_a), admin_a)
    with tenant_scope(org_a):
        record = IntegrationRecord.objects.get(endpoint=endpoint, kind=RecordKind.DEVICE_TEST_CONFIGURATION)
        old = record.context_token
        rotated = integration_record_rotate_token(record=record)
        assert rotated.context_token != old
        integration_records_produce(endpoint=endpoint)
        record.refresh_from_db()
        assert record.context_token == rotated.context_token


def test_only_the_device_test_record_has_a_token_to_rotate(org_a, admin_a):
    endpoint = approve_directly(make_endpoint(org_a), admin_a)
    with tenant_scope(org_a):
        record = IntegrationRecord.objects.get(endpoint=endpoint, kind=RecordKind.PROVIDER_LAUNCH)
        with pytest.raises(ValueError):
            integration_record_rotate_token(record=record)


def test_approver_usernames_are_one_word_each_and_deduplicated(org_a):
    with tenant_scope(org_a):
        saved = ehr_approvers_set(tenant=org_a, usernames=["ANALYST1", "analyst1", " ANALYST2 ", ""])
        assert [a.ehr_username for a in saved] == ["ANALYST1", "ANALYST2"]
        with pytest.raises(ValidationError) as error:
            ehr_approvers_set(tenant=org_a, usernames=["Jane Doe"])
        assert "one word" in str(error.value)


def test_endpoints_cannot_be_read_without_a_tenant_scope(org_a):
    make_endpoint(org_a)
    with pytest.raises(ScopeError):
        list(FhirEndpoint.objects.all())


# --- API -------------------------------------------------------------------------


def api_path(tenant, rest=""):
    return f"/api/v1/tenants/{tenant.microsoft_tenant_id}/{rest}"


def test_an_administrator_creates_an_endpoint_and_validation_starts(api_as, admin_a, org_a, monkeypatch):
    queued = []
    monkeypatch.setattr("connector.background.async_task", lambda *a, **k: queued.append(a))
    client = api_as(admin_a)
    response = client.post(
        api_path(org_a, "endpoints/"),
        {
            "base_url": "https://fhir.example.org/R4/",
            "environment": "test",
            "label": "Main",
            "time_zone": "UTC",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["base_url"] == "https://fhir.example.org/R4"
    assert response.json()["status"] == "validating"


def test_a_bad_url_gets_a_field_error_in_the_one_error_shape(api_as, admin_a, org_a):
    response = api_as(admin_a).post(
        api_path(org_a, "endpoints/"),
        {"base_url": "ftp://fhir.example.org", "environment": "test", "label": "Main"},
        format="json",
    )
    assert response.status_code == 400
    body = response.json()
    assert body["error"]["code"] == "invalid"
    assert "base_url" in body["error"]["fields"]


def test_a_viewer_cannot_read_or_change_endpoints(api_as, viewer_a, org_a):
    make_endpoint(org_a)
    client = api_as(viewer_a)
    assert client.get(api_path(org_a, "endpoints/")).status_code == 403
    response = client.post(
        api_path(org_a, "endpoints/"),
        {"base_url": "https://x.example.org", "environment": "test", "label": "x"},
    )
    assert response.status_code == 403


def test_an_approver_reads_but_cannot_create_endpoints(api_as, approver_a, org_a):
    make_endpoint(org_a)
    client = api_as(approver_a)
    assert client.get(api_path(org_a, "endpoints/")).json()["count"] == 1
    response = client.post(
        api_path(org_a, "endpoints/"),
        {"base_url": "https://x.example.org", "environment": "test", "label": "x"},
    )
    assert response.status_code == 403


def test_organization_a_never_sees_organization_bs_endpoints_or_records(
    api_as, admin_a, admin_b, org_a, org_b
):
    endpoint_b = approve_directly(make_endpoint(org_b), admin_b)
    client = api_as(admin_a)
    assert client.get(api_path(org_a, "endpoints/")).json()["count"] == 0
    assert client.get(api_path(org_a, f"endpoints/{endpoint_b.pk}/")).status_code == 404
    assert (
        client.patch(
            api_path(org_a, f"endpoints/{endpoint_b.pk}/"), {"label": "mine"}, format="json"
        ).status_code
        == 404
    )
    assert client.post(api_path(org_a, f"endpoints/{endpoint_b.pk}/disable/")).status_code == 404
    assert client.post(api_path(org_a, f"endpoints/{endpoint_b.pk}/validate/")).status_code == 404
    assert client.get(api_path(org_a, "integration-records/")).json()["count"] == 0
    with all_tenants():
        record_b = IntegrationRecord.objects.filter(
            endpoint=endpoint_b, kind=RecordKind.DEVICE_TEST_CONFIGURATION
        ).get()
    assert client.post(api_path(org_a, f"integration-records/{record_b.pk}/rotate-token/")).status_code == 404
    # And B's own URLs are not A's to use.
    assert client.get(api_path(org_b, "endpoints/")).status_code == 404
    assert client.get(api_path(org_b, "integration-records/")).status_code == 404


def test_records_are_readable_with_a_read_token(token_client, admin_a, org_a):
    approve_directly(make_endpoint(org_a), admin_a)
    response = token_client(org_a, "read").get(api_path(org_a, "integration-records/"))
    assert response.status_code == 200
    assert response.json()["count"] == len(RecordKind.values)


def test_a_read_token_cannot_disable_an_endpoint(token_client, org_a):
    endpoint = make_endpoint(org_a)
    response = token_client(org_a, "read").post(api_path(org_a, f"endpoints/{endpoint.pk}/disable/"))
    assert response.status_code == 403


def test_disabling_an_endpoint_marks_its_records_out_of_date(api_as, admin_a, org_a):
    endpoint = approve_directly(make_endpoint(org_a), admin_a)
    response = api_as(admin_a).post(api_path(org_a, f"endpoints/{endpoint.pk}/disable/"))
    assert response.json()["status"] == "disabled"
    with tenant_scope(org_a):
        assert not IntegrationRecord.objects.filter(endpoint=endpoint, out_of_date=False).exists()


def test_approvers_list_is_replaced_through_the_api(api_as, admin_a, approver_a, org_a):
    response = api_as(admin_a).put(
        api_path(org_a, "ehr-approvers/"), {"usernames": ["ANALYST1", "ANALYST2"]}, format="json"
    )
    assert response.json() == {"usernames": ["ANALYST1", "ANALYST2"]}
    assert (
        api_as(approver_a)
        .put(api_path(org_a, "ehr-approvers/"), {"usernames": []}, format="json")
        .status_code
        == 403
    )


def test_a_patch_changes_only_the_fields_it_names(api_as, admin_a, org_a):
    endpoint = make_endpoint(org_a, time_zone="Europe/Copenhagen", write_back_enabled=True)
    response = api_as(admin_a).patch(
        api_path(org_a, f"endpoints/{endpoint.pk}/"), {"label": "North"}, format="json"
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["label"], body["time_zone"], body["write_back_enabled"]) == (
        "North",
        "Europe/Copenhagen",
        True,
    )
