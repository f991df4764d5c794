"""Endpoint validation against the sandbox EHR's flavors, over real HTTP (pytest-django live_server).

Every check goes through connector/ehr_http.py to a sandbox FHIR server served by
the live server: the good R4 servers, and servers that are wrong in one way
each (DSTU2, no SMART configuration, no PKCE, too slow, redirecting to http).
Tasks run inline (tests/conftest.py), so queueing a validation runs it at once.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest
from django.core.exceptions import ValidationError

from connector import tasks
from connector.models import EndpointStatus, FhirEndpoint, IntegrationRecord, RecordKind
from connector.services import endpoints as endpoint_services
from connector.services.endpoints import (
    endpoint_create,
    endpoint_disable,
    endpoint_request_validation,
    endpoint_update,
    endpoint_validate,
)
from tenants.scoping import tenant_scope

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sandbox(settings, live_server) -> str:
    """The live server's origin, with the sandbox on and local hosts allowed for EHR calls."""
    settings.SANDBOX_EHR = True
    settings.EHR_INSECURE_HOSTS = ["localhost", "127.0.0.1"]
    settings.PUBLIC_BASE_URL = live_server.url
    return live_server.url


def fhir_base(origin: str, flavor: str) -> str:
    return f"{origin}/sandbox-ehr/fhir/{flavor}"


def add_endpoint(tenant, base_url: str, label: str = "Main campus") -> FhirEndpoint:
    with tenant_scope(tenant):
        return endpoint_create(
            tenant=tenant, base_url=base_url, environment="test", label=label, time_zone="America/Chicago"
        )


def validated(endpoint: FhirEndpoint) -> FhirEndpoint:
    """Run the validation task as the queue would, and read the endpoint back."""
    assert tasks.endpoint_validate(endpoint.pk, endpoint.config_version) in EndpointStatus.values
    with tenant_scope(endpoint.tenant):
        endpoint.refresh_from_db()
    return endpoint


def records_of(endpoint: FhirEndpoint) -> list[IntegrationRecord]:
    with tenant_scope(endpoint.tenant):
        return list(IntegrationRecord.objects.filter(endpoint=endpoint))


@pytest.fixture
def no_checks(monkeypatch):
    """Fail the test if the checks (any call to the EHR) run at all."""

    def refuse(*args, **kwargs):
        raise AssertionError("the endpoint checks ran, but this validation should have been dropped")

    monkeypatch.setattr(endpoint_services, "check_fhir_endpoint", refuse)


# --- the good servers ------------------------------------------------------------------------


def test_a_good_r4_server_of_an_epic_organization_waits_for_approval(sandbox, org_a):
    endpoint = add_endpoint(org_a, fhir_base(sandbox, "r4"))
    with tenant_scope(org_a):
        endpoint = endpoint_request_validation(endpoint=endpoint)  # queued, and run inline

    assert endpoint.status == EndpointStatus.AWAITING_APPROVAL
    assert endpoint.validation_step == ""
    assert endpoint.last_validated_at is not None
    result = endpoint.last_validation
    assert result["ok"] is True
    assert result["code"] == "ok"
    assert "SMART on FHIR R4 server (FHIR 4.0.1)" in result["message"]
    assert result["details"]["steps"] == {
        "metadata": {"status": "ok"},
        "smart_configuration": {"status": "ok"},
    }
    assert result["details"]["authorization_endpoint"] == f"{sandbox}/sandbox-ehr/oauth2/authorize"
    assert result["details"]["token_endpoint"] == f"{sandbox}/sandbox-ehr/oauth2/token"
    assert "S256" in result["details"]["code_challenge_methods"]
    assert "launch-ehr" in result["details"]["capabilities"]
    # Not usable before an analyst approves it: no records yet.
    assert records_of(endpoint) == []


def test_a_good_r4_server_of_an_oracle_organization_is_validated_with_its_records(sandbox, org_b):
    endpoint = validated(add_endpoint(org_b, fhir_base(sandbox, "r4-other")))

    assert endpoint.status == EndpointStatus.VALIDATED
    assert endpoint.last_validation["ok"] is True
    records = {record.kind: record for record in records_of(endpoint)}
    assert sorted(records) == sorted(RecordKind.values)
    assert len(records) == len(RecordKind.values)
    for record in records.values():
        assert record.config_version == endpoint.config_version
        assert record.out_of_date is False
        assert record.details["iss"] == endpoint.base_url
        assert record.details["time_zone"] == "America/Chicago"
        if record.kind not in (RecordKind.BACKEND_SERVICES, RecordKind.VENDOR_SETUP):
            assert record.launch_url.startswith(f"{sandbox}/")
    assert records[RecordKind.PROVIDER_LAUNCH].redirect_uri == f"{sandbox}/launch/callback"
    assert records[RecordKind.PROVIDER_LAUNCH].scopes.split()[:3] == ["launch", "openid", "fhirUser"]
    assert len(records[RecordKind.DEVICE_TEST_CONFIGURATION].context_token) >= 43  # 256 bits


def test_validating_again_keeps_an_approved_epic_endpoint_approved(sandbox, org_a, admin_a):
    """A re-check of the same configuration that an analyst already approved needs no new approval."""
    from connector.models import EndpointApproval

    endpoint = validated(add_endpoint(org_a, fhir_base(sandbox, "r4")))
    with tenant_scope(org_a):
        EndpointApproval.objects.create(
            tenant=org_a,
            endpoint=endpoint,
            config_version=endpoint.config_version,
            base_url=endpoint.base_url,
            decision="approved",
            decided_by=admin_a,
            ehr_username="ANALYST1",
        )
    endpoint = validated(endpoint)
    assert endpoint.status == EndpointStatus.APPROVED
    assert len(records_of(endpoint)) == len(RecordKind.values)


# --- servers that are wrong in one way ---------------------------------------------------------


@pytest.mark.parametrize(
    ("flavor", "code", "step", "words"),
    [
        ("dstu2", "fhir_dstu2", "metadata", ["DSTU2", "FHIR 1.0.2", "R4"]),
        ("no-smart", "no_smart_configuration", "smart_configuration", ["No SMART configuration"]),
        ("no-pkce", "no_pkce", "smart_configuration", ["PKCE", "S256"]),
        ("no-jwt-auth", "no_asymmetric_client", "smart_configuration", ["private_key_jwt", "RS384"]),
        ("redirect-http", "redirect_to_http", "metadata", ["plain http://", "example.com", "https"]),
    ],
)
def test_a_wrong_server_is_explained_and_the_endpoint_stays_a_draft(
    sandbox, org_b, flavor, code, step, words
):
    endpoint = validated(add_endpoint(org_b, fhir_base(sandbox, flavor)))

    assert endpoint.status == EndpointStatus.DRAFT
    assert endpoint.validation_step == ""
    result = endpoint.last_validation
    assert result["ok"] is False
    assert result["code"] == code
    for word in words:
        assert word in result["message"]
    assert result["details"]["steps"][step]["status"] == "failed"
    assert result["details"]["steps"][step]["code"] == code
    assert records_of(endpoint) == []


def test_a_server_without_write_back_is_ok_with_gaps_and_usable(sandbox, org_b):
    endpoint = validated(add_endpoint(org_b, fhir_base(sandbox, "launch-only")))

    assert endpoint.status == EndpointStatus.VALIDATED
    result = endpoint.last_validation
    assert result["ok"] is True
    assert result["code"] == "ok_with_gaps"
    assert "Lost: Write-back to the EHR" in result["message"]
    assert "the client_credentials grant" in result["message"]
    assert [gap["key"] for gap in endpoint.validation_gaps] == ["write_back"]
    assert len(records_of(endpoint)) == len(RecordKind.values)


def test_write_back_switched_on_for_a_server_that_cannot_take_it_is_said_first(sandbox, org_b):
    with tenant_scope(org_b):
        endpoint = endpoint_create(
            tenant=org_b,
            base_url=fhir_base(sandbox, "launch-only"),
            environment="test",
            label="Main campus",
            write_back_enabled=True,
        )
    endpoint = validated(endpoint)

    assert endpoint.status == EndpointStatus.VALIDATED
    assert endpoint.last_validation["message"].startswith(
        "Write-back is on for this endpoint, but this server cannot take it"
    )
    assert "OK with gaps." in endpoint.last_validation["message"]


def test_the_good_sandbox_server_offers_everything(sandbox, org_b):
    endpoint = validated(add_endpoint(org_b, fhir_base(sandbox, "r4")))

    assert endpoint.last_validation["code"] == "ok"
    assert endpoint.validation_gaps == []
    assert endpoint.last_validation["message"].endswith("offers everything the connector needs.")


def test_an_epic_endpoint_on_a_dstu2_server_is_not_sent_for_approval(sandbox, org_a):
    endpoint = validated(add_endpoint(org_a, fhir_base(sandbox, "dstu2")))
    assert endpoint.status == EndpointStatus.DRAFT
    assert "DSTU2" in endpoint.last_validation["message"]
    assert "R4" in endpoint.last_validation["message"]


def test_a_server_slower_than_the_time_limit_times_out(sandbox, org_b, settings):
    settings.EHR_HTTP_TOTAL_TIMEOUT = 1
    settings.SANDBOX_EHR_SLOW_SECONDS = 3
    endpoint = add_endpoint(org_b, fhir_base(sandbox, "slow"))

    started = time.monotonic()
    endpoint = validated(endpoint)
    elapsed = time.monotonic() - started

    assert elapsed < 2.5, f"the check should give up after about 1 second, took {elapsed:.1f}"
    assert endpoint.status == EndpointStatus.DRAFT
    result = endpoint.last_validation
    assert result["code"] == "timeout"
    assert "did not answer completely within 1 second" in result["message"]
    assert result["details"]["steps"]["metadata"]["status"] == "failed"
    assert result["details"]["steps"]["smart_configuration"]["status"] == "skipped"


@pytest.mark.parametrize(
    "url",
    [
        # The live server itself, by an address that is not listed in EHR_INSECURE_HOSTS.
        "https://127.0.0.1:{port}/sandbox-ehr/fhir/r4",
        "https://10.0.0.5/api/FHIR/R4",
        "https://[::1]:{port}/sandbox-ehr/fhir/r4",
    ],
)
def test_a_private_address_is_refused_when_its_host_is_not_allowed(sandbox, org_b, settings, url):
    settings.EHR_INSECURE_HOSTS = ["localhost"]
    port = urlsplit(sandbox).port
    endpoint = validated(add_endpoint(org_b, url.format(port=port)))

    assert endpoint.status == EndpointStatus.DRAFT
    result = endpoint.last_validation
    assert result["ok"] is False
    assert result["code"] == "forbidden_address"
    assert "private, loopback or otherwise internal network address" in result["message"]
    assert result["details"]["steps"]["metadata"]["status"] == "failed"


def test_localhost_itself_is_refused_once_it_is_no_longer_allowed(sandbox, org_b, settings):
    # Created while allowed (an http URL needs an allowed host), then the allowance is withdrawn.
    endpoint = add_endpoint(org_b, fhir_base(sandbox, "r4").replace("http://", "https://"))
    settings.EHR_INSECURE_HOSTS = []
    endpoint = validated(endpoint)
    assert endpoint.last_validation["code"] == "forbidden_address"
    assert endpoint.status == EndpointStatus.DRAFT


# --- validations that must not run, or whose result must not be kept ----------------------------


def test_a_validation_queued_for_an_old_configuration_is_dropped(sandbox, org_a, monkeypatch):
    queued: list[tuple] = []
    monkeypatch.setattr("connector.background.async_task", lambda func, *args, **kwargs: queued.append(args))
    endpoint = add_endpoint(org_a, fhir_base(sandbox, "r4"))
    with tenant_scope(org_a):
        endpoint = endpoint_request_validation(endpoint=endpoint)
        assert endpoint.status == EndpointStatus.VALIDATING
        assert endpoint.validation_step == "queued"
        assert queued == [(endpoint.pk, 1)]
        # The administrator points it at another server before the worker gets to it.
        endpoint = endpoint_update(endpoint=endpoint, base_url=fhir_base(sandbox, "dstu2"))
    assert endpoint.config_version == 2

    with monkeypatch.context() as m:
        m.setattr(endpoint_services, "check_fhir_endpoint", _refuse_checks)
        assert tasks.endpoint_validate(*queued[0]) == EndpointStatus.DRAFT
    with tenant_scope(org_a):
        endpoint.refresh_from_db()
    assert endpoint.last_validation == {}
    assert endpoint.last_validated_at is None

    # The validation of the current configuration runs and speaks of the new server.
    endpoint = validated(endpoint)
    assert endpoint.last_validation["code"] == "fhir_dstu2"


def test_a_result_for_a_configuration_changed_during_the_checks_is_not_kept(sandbox, org_b, monkeypatch):
    real_check = endpoint_services.check_fhir_endpoint
    endpoint = add_endpoint(org_b, fhir_base(sandbox, "r4"))

    def check_then_change(base_url, **kwargs):
        result = real_check(base_url, **kwargs)
        assert result.ok
        # An edit saved while the checks ran.
        FhirEndpoint.objects.filter(pk=endpoint.pk).update(
            base_url=fhir_base(sandbox, "r4-other"), config_version=2, status=EndpointStatus.DRAFT
        )
        return result

    monkeypatch.setattr(endpoint_services, "check_fhir_endpoint", check_then_change)
    with tenant_scope(org_b):
        endpoint = endpoint_validate(endpoint=endpoint, config_version=1)
        endpoint.refresh_from_db()
    assert endpoint.config_version == 2
    assert endpoint.status == EndpointStatus.DRAFT
    assert endpoint.last_validation == {}
    assert records_of(endpoint) == []


def test_a_disabled_endpoint_is_never_validated(sandbox, org_b, no_checks):
    endpoint = add_endpoint(org_b, fhir_base(sandbox, "r4-other"))
    with tenant_scope(org_b):
        endpoint = endpoint_disable(endpoint=endpoint)
        with pytest.raises(ValidationError, match="disabled"):
            endpoint_request_validation(endpoint=endpoint)
    # A validation queued before it was disabled does nothing either.
    assert tasks.endpoint_validate(endpoint.pk, endpoint.config_version) == EndpointStatus.DISABLED
    assert tasks.endpoint_validate(endpoint.pk) == EndpointStatus.DISABLED
    with tenant_scope(org_b):
        endpoint.refresh_from_db()
    assert endpoint.status == EndpointStatus.DISABLED
    assert endpoint.last_validation == {}
    assert records_of(endpoint) == []


def test_an_endpoint_disabled_during_the_checks_keeps_no_result(sandbox, org_b, monkeypatch):
    real_check = endpoint_services.check_fhir_endpoint
    endpoint = add_endpoint(org_b, fhir_base(sandbox, "r4-other"))

    def check_then_disable(base_url, **kwargs):
        result = real_check(base_url, **kwargs)
        FhirEndpoint.objects.filter(pk=endpoint.pk).update(status=EndpointStatus.DISABLED)
        return result

    monkeypatch.setattr(endpoint_services, "check_fhir_endpoint", check_then_disable)
    assert tasks.endpoint_validate(endpoint.pk, endpoint.config_version) == EndpointStatus.DISABLED
    with tenant_scope(org_b):
        endpoint.refresh_from_db()
    assert endpoint.last_validation == {}
    assert records_of(endpoint) == []


def test_a_validation_of_a_deleted_endpoint_is_gone(sandbox, org_b, no_checks):
    endpoint = add_endpoint(org_b, fhir_base(sandbox, "r4-other"))
    pk = endpoint.pk
    with tenant_scope(org_b):
        endpoint.delete()
    assert tasks.endpoint_validate(pk, 1) == "gone"


def _refuse_checks(*args, **kwargs):
    raise AssertionError("the endpoint checks ran for a configuration that has changed since")
