"""Validation of FHIR base URLs, against a real local FHIR-ish server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from connector.ehr_http import EhrHttpError
from connector.endpoint_checks import (
    EndpointCheckResult,
    check_fhir_endpoint,
    fetch_smart_configuration,
    normalize_fhir_base_url,
)
from tests.support.local_server import LocalServer, Route

REQUIRED = ("Patient", "Practitioner", "Appointment", "Encounter")
# Everything the connector uses: launches, the schedule, write-back (connector/endpoint_features.py).
EVERYTHING = {
    **{name: ("read", "search-type") for name in REQUIRED},
    "Appointment": ("read", "search-type", "update"),
    "Encounter": ("read", "search-type", "update"),
    "Communication": ("create",),
}
SCOPES = [
    "openid", "fhirUser", "launch", "launch/patient", "launch/encounter",
    "user/*.read", "patient/*.read", "system/*.*",
]  # fmt: skip


def capability_statement(
    *,
    version: str = "4.0.1",
    resource_type: str = "CapabilityStatement",
    resources: dict[str, tuple[str, ...]] | None = None,
) -> dict[str, Any]:
    if resources is None:
        resources = EVERYTHING
    return {
        "resourceType": resource_type,
        "status": "active",
        "fhirVersion": version,
        "software": {"name": "Test EHR", "version": "2024.2"},
        "rest": [
            {
                "mode": "server",
                "resource": [
                    {"type": name, "interaction": [{"code": code} for code in codes]}
                    for name, codes in resources.items()
                ],
            }
        ],
    }


def smart_configuration(server: LocalServer, **changes: Any) -> dict[str, Any]:
    config = {
        "issuer": server.url("/fhir"),
        "jwks_uri": server.url("/oauth2/jwks"),
        "authorization_endpoint": server.url("/oauth2/authorize"),
        "token_endpoint": server.url("/oauth2/token"),
        "capabilities": [
            "launch-ehr", "client-confidential-asymmetric", "sso-openid-connect",
            "context-ehr-patient", "context-ehr-encounter",
        ],  # fmt: skip
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "grant_types_supported": ["authorization_code", "client_credentials"],
        "scopes_supported": SCOPES,
    }
    config.update(changes)
    return {k: v for k, v in config.items() if v is not None}


@pytest.fixture
def ehr(settings) -> Iterator[LocalServer]:
    """A good SMART on FHIR R4 server at {ehr.base}/fhir; tests change its routes."""
    settings.EHR_INSECURE_HOSTS = ["127.0.0.1"]
    with LocalServer() as server:
        server.add("/fhir/metadata", body=capability_statement())
        server.add("/fhir/.well-known/smart-configuration", body=smart_configuration(server))
        yield server


def base(server: LocalServer) -> str:
    return server.url("/fhir")


# --- Good servers ------------------------------------------------------------------------------


def test_a_good_r4_server_passes_with_what_it_offers(ehr):
    steps: list[str] = []

    result = check_fhir_endpoint(base(ehr) + "/", progress=steps.append)

    assert result.ok
    assert result.code == "ok"
    assert steps == ["metadata", "smart_configuration"]
    details = result.details
    assert details["base_url"] == base(ehr)
    assert details["fhir_version"] == "4.0.1"
    assert details["software"] == {"name": "Test EHR", "version": "2024.2"}
    assert details["authorization_endpoint"] == ehr.url("/oauth2/authorize")
    assert details["token_endpoint"] == ehr.url("/oauth2/token")
    assert details["jwks_uri"] == ehr.url("/oauth2/jwks")
    assert details["issuer"] == ehr.url("/fhir")
    assert "launch-ehr" in details["capabilities"]
    assert details["code_challenge_methods"] == ["S256"]
    assert details["token_endpoint_auth_methods"] == ["private_key_jwt"]
    assert details["scopes_supported"] == SCOPES
    assert {f["status"] for f in details["features"]} == {"available"}
    assert result.message.endswith("offers everything the connector needs.")
    assert details["steps"] == {"metadata": {"status": "ok"}, "smart_configuration": {"status": "ok"}}
    assert [s.path for s in ehr.seen] == ["/fhir/metadata", "/fhir/.well-known/smart-configuration"]


def test_a_result_survives_a_round_trip_through_json(ehr):
    result = check_fhir_endpoint(base(ehr))

    stored = json.loads(json.dumps(result.to_dict()))
    again = EndpointCheckResult.from_dict(stored)

    assert again == result
    assert isinstance(again.checked_at, datetime)
    assert again.checked_at.tzinfo is not None


def test_fhir_4_0_0_is_r4_too(ehr):
    ehr.add("/fhir/metadata", body=capability_statement(version="4.0.0"))

    assert check_fhir_endpoint(base(ehr)).ok


# --- Not the right FHIR ------------------------------------------------------------------------


def test_a_dstu2_server_is_told_to_use_r4(ehr):
    ehr.add("/fhir/metadata", body=capability_statement(version="1.0.2", resource_type="Conformance"))

    result = check_fhir_endpoint(base(ehr))

    assert not result.ok
    assert result.code == "fhir_dstu2"
    assert result.message == (
        "This is a DSTU2 server (FHIR 1.0.2): use the FHIR R4 base URL of your EHR instead — "
        "for Epic it usually ends in /api/FHIR/R4."
    )
    assert result.details["steps"]["metadata"]["status"] == "failed"
    assert result.details["steps"]["smart_configuration"] == {"status": "skipped"}
    assert [s.path for s in ehr.seen] == ["/fhir/metadata"]


def test_an_stu3_server_is_told_to_use_r4(ehr):
    ehr.add("/fhir/metadata", body=capability_statement(version="3.0.2"))

    result = check_fhir_endpoint(base(ehr))

    assert result.code == "fhir_stu3"
    assert result.message.startswith("This is an STU3 server (FHIR 3.0.2): use the FHIR R4 base URL")
    assert "/api/FHIR/R4" in result.message


def test_an_r5_server_is_not_r4(ehr):
    ehr.add("/fhir/metadata", body=capability_statement(version="5.0.0"))

    result = check_fhir_endpoint(base(ehr))

    assert result.code == "fhir_version_unsupported"
    assert "FHIR 5.0.0" in result.message


def test_json_that_is_not_a_capability_statement_is_not_fhir(ehr):
    ehr.add("/fhir/metadata", body={"status": "UP"})

    result = check_fhir_endpoint(base(ehr))

    assert result.code == "not_capability_statement"
    assert result.message.startswith(
        "The address answered, but not with a FHIR CapabilityStatement: check that this is the FHIR base URL"
    )


def test_a_web_page_is_not_fhir(ehr):
    ehr.add("/fhir/metadata", body="<html><title>Welcome</title></html>", content_type="text/html")

    result = check_fhir_endpoint(base(ehr))

    assert result.code == "not_json"
    assert "text/html" in result.message


def test_nothing_at_metadata_says_to_check_the_base_url(ehr):
    result = check_fhir_endpoint(ehr.url("/wrong"))

    assert result.code == "no_metadata"
    assert "/wrong/metadata (HTTP 404)" in result.message


def test_missing_reads_cost_features_but_not_launches(ehr):
    resources = {
        "Patient": ("read",),
        "Appointment": ("read", "search-type"),
        "Encounter": ("search-type",),  # searchable but not readable
    }
    ehr.add("/fhir/metadata", body=capability_statement(resources=resources))

    result = check_fhir_endpoint(base(ehr))

    assert result.ok
    assert result.code == "ok_with_gaps"
    assert result.message.startswith("OK with gaps.")
    assert "everything the connector needs" not in result.message
    assert "Lost: The encounter of the launch" in result.message
    assert "read on Encounter in the CapabilityStatement" in result.message
    assert "Lost: Approvers matched by their Practitioner identifier" in result.message
    assert "Lost: Write-back to the EHR" in result.message
    assert result.details["resources"] == ["Appointment", "Patient"]
    features = {f["key"]: f for f in result.details["features"]}
    assert features["schedule"]["status"] == "available"
    assert features["encounter_context"]["status"] == "lost"
    assert features["encounter_context"]["missing"] == ["read on Encounter in the CapabilityStatement"]
    assert features["write_back"]["missing"] == [
        "read on Encounter in the CapabilityStatement",
        "update on Encounter in the CapabilityStatement",
        "update on Appointment in the CapabilityStatement",
        "create on Communication in the CapabilityStatement",
    ]


def test_a_server_without_appointment_search_loses_the_csn_and_the_search(ehr):
    resources = {**EVERYTHING, "Appointment": ("read", "update")}
    ehr.add("/fhir/metadata", body=capability_statement(resources=resources))

    result = check_fhir_endpoint(base(ehr))

    assert result.code == "ok_with_gaps"
    assert (
        "Lost: Finding the appointment by the CSN in the launch URL or by a search around now — the server "
        "does not offer search-type on Appointment in the CapabilityStatement." in result.message
    )
    lost = [f["key"] for f in result.details["features"] if f["status"] != "available"]
    assert lost == ["appointment_search"]


def test_a_resource_of_a_client_mode_rest_entry_does_not_count(ehr):
    statement = capability_statement()
    statement["rest"][0]["mode"] = "client"
    ehr.add("/fhir/metadata", body=statement)

    result = check_fhir_endpoint(base(ehr))

    assert not result.ok
    assert result.code == "missing_resources"
    assert "offers no FHIR resources at all" in result.message


def test_a_malformed_capability_statement_does_not_crash_the_check(ehr):
    ehr.add(
        "/fhir/metadata",
        body={"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1", "rest": "oops"},
    )

    assert check_fhir_endpoint(base(ehr)).code == "missing_resources"


# --- SMART configuration -----------------------------------------------------------------------


def test_no_smart_configuration_says_to_ask_for_the_smart_base_url(ehr):
    ehr.routes.pop("/fhir/.well-known/smart-configuration")

    result = check_fhir_endpoint(base(ehr))

    assert result.code == "no_smart_configuration"
    assert result.message == (
        f"No SMART configuration at that address ({base(ehr)}/.well-known/smart-configuration answered 404): "
        "ask your EHR team for the SMART on FHIR R4 base URL."
    )
    assert result.details["steps"]["metadata"] == {"status": "ok"}
    assert result.details["steps"]["smart_configuration"]["code"] == "no_smart_configuration"
    assert result.details["fhir_version"] == "4.0.1"


def test_a_server_without_pkce_is_refused(ehr):
    ehr.add(
        "/fhir/.well-known/smart-configuration",
        body=smart_configuration(ehr, code_challenge_methods_supported=["plain"]),
    )

    result = check_fhir_endpoint(base(ehr))

    assert result.code == "no_pkce"
    assert result.message.startswith("The server does not offer PKCE (S256)")


def test_a_server_that_does_not_say_anything_about_pkce_is_refused(ehr):
    ehr.add(
        "/fhir/.well-known/smart-configuration",
        body=smart_configuration(ehr, code_challenge_methods_supported=None),
    )

    assert check_fhir_endpoint(base(ehr)).code == "no_pkce"


def test_a_server_without_ehr_launch_is_refused(ehr):
    ehr.add(
        "/fhir/.well-known/smart-configuration",
        body=smart_configuration(ehr, capabilities=["launch-standalone", "client-public"]),
    )

    result = check_fhir_endpoint(base(ehr))

    assert result.code == "no_ehr_launch"
    assert "does not support EHR launch (launch-ehr)" in result.message


def test_a_server_without_asymmetric_client_authentication_is_refused(ehr):
    ehr.add(
        "/fhir/.well-known/smart-configuration",
        body=smart_configuration(
            ehr,
            capabilities=["launch-ehr", "client-confidential-symmetric"],
            token_endpoint_auth_methods_supported=["client_secret_basic"],
        ),
    )

    result = check_fhir_endpoint(base(ehr))

    assert not result.ok
    assert result.code == "no_asymmetric_client"
    assert "private_key_jwt" in result.message and "client-confidential-asymmetric" in result.message


def test_private_key_jwt_at_the_token_endpoint_is_enough_without_the_capability(ehr):
    capabilities = ["launch-ehr", "sso-openid-connect", "context-ehr-patient", "context-ehr-encounter"]
    ehr.add(
        "/fhir/.well-known/smart-configuration", body=smart_configuration(ehr, capabilities=capabilities)
    )

    result = check_fhir_endpoint(base(ehr))

    assert result.code == "ok"


def test_a_server_that_does_not_say_how_clients_authenticate_is_ok_with_something_to_confirm(ehr):
    ehr.add(
        "/fhir/.well-known/smart-configuration",
        body=smart_configuration(
            ehr,
            capabilities=["launch-ehr", "sso-openid-connect", "context-ehr-patient", "context-ehr-encounter"],
            token_endpoint_auth_methods_supported=None,
        ),
    )

    result = check_fhir_endpoint(base(ehr))

    assert result.ok
    assert result.code == "ok_with_gaps"
    assert "To confirm with your EHR team: Visits started from the EHR" in result.message
    assert "the SMART capability client-confidential-asymmetric" in result.message


def test_missing_context_capabilities_name_the_features_they_cost(ehr):
    ehr.add(
        "/fhir/.well-known/smart-configuration",
        body=smart_configuration(ehr, capabilities=["launch-ehr", "client-confidential-asymmetric"]),
    )

    result = check_fhir_endpoint(base(ehr))

    assert result.ok
    assert result.code == "ok_with_gaps"
    lost = {f["key"]: f["missing"] for f in result.details["features"] if f["status"] == "lost"}
    assert lost == {
        "clinician_identity": ["the SMART capability sso-openid-connect"],
        "patient_context": ["the SMART capability context-ehr-patient"],
        "encounter_context": ["the SMART capability context-ehr-encounter"],
    }
    assert "Lost: The patient of the launch" in result.message


def test_scopes_the_server_does_not_list_are_to_confirm_not_lost(ehr):
    scopes = ["openid", "fhirUser", "launch", "launch/patient", "launch/encounter", "user/*.*", "patient/*.*"]
    ehr.add("/fhir/.well-known/smart-configuration", body=smart_configuration(ehr, scopes_supported=scopes))

    result = check_fhir_endpoint(base(ehr))

    assert result.code == "ok_with_gaps"
    write_back = next(f for f in result.details["features"] if f["key"] == "write_back")
    assert write_back["status"] == "unconfirmed"
    assert write_back["missing"] == []
    assert "the scope system/Communication.create" in write_back["unconfirmed"]
    assert "To confirm with your EHR team: Write-back to the EHR" in result.message


def test_a_server_without_client_credentials_loses_write_back(ehr):
    ehr.add(
        "/fhir/.well-known/smart-configuration",
        body=smart_configuration(ehr, grant_types_supported=["authorization_code"]),
    )

    result = check_fhir_endpoint(base(ehr))

    assert result.code == "ok_with_gaps"
    assert "Lost: Write-back to the EHR" in result.message
    assert "the client_credentials grant" in result.message


def test_an_authorization_endpoint_over_plain_http_is_refused(ehr):
    ehr.add(
        "/fhir/.well-known/smart-configuration",
        body=smart_configuration(ehr, authorization_endpoint="http://auth.example.org/oauth2/authorize"),
    )

    result = check_fhir_endpoint(base(ehr))

    assert result.code == "insecure_oauth_endpoint"
    assert "authorization endpoint over plain http (auth.example.org)" in result.message


def test_a_token_endpoint_over_plain_http_is_refused(ehr):
    ehr.add(
        "/fhir/.well-known/smart-configuration",
        body=smart_configuration(ehr, token_endpoint="http://auth.example.org/oauth2/token"),
    )

    assert check_fhir_endpoint(base(ehr)).code == "insecure_oauth_endpoint"


def test_a_smart_configuration_without_a_token_endpoint_is_incomplete(ehr):
    ehr.add("/fhir/.well-known/smart-configuration", body=smart_configuration(ehr, token_endpoint=None))

    result = check_fhir_endpoint(base(ehr))

    assert result.code == "smart_configuration_incomplete"
    assert "does not name token_endpoint" in result.message


# --- Transport failures ------------------------------------------------------------------------


def test_a_slow_server_gets_the_timeout_message(ehr, settings):
    settings.EHR_HTTP_TOTAL_TIMEOUT = 1
    ehr.add("/fhir/metadata", Route(body=capability_statement(), delay=3))

    result = check_fhir_endpoint(base(ehr))

    assert not result.ok
    assert result.code == "timeout"
    assert result.message == (
        "The server at 127.0.0.1 did not answer completely within 1 second: "
        "check that it is up and try again later."
    )


def test_an_internal_address_is_reported_not_raised():
    result = check_fhir_endpoint("https://10.0.0.5/api/FHIR/R4")

    assert result.code == "forbidden_address"
    assert "public internet" in result.message


def test_a_bad_url_is_reported_not_raised():
    result = check_fhir_endpoint("fhir.example.org/api/FHIR/R4")

    assert result.code == "invalid_url"
    assert result.message.startswith("Enter the full address, starting with https://")
    assert result.details["steps"]["metadata"] == {"status": "skipped"}


def test_plain_http_is_reported_not_raised():
    result = check_fhir_endpoint("http://fhir.example.org/api/FHIR/R4")

    assert result.code == "invalid_url"
    assert result.message == "Use an https:// address: EHRs only serve FHIR over TLS."


# --- fetch_smart_configuration -----------------------------------------------------------------


def test_fetch_smart_configuration_returns_the_document(ehr):
    config = fetch_smart_configuration(base(ehr))

    assert config["token_endpoint"] == ehr.url("/oauth2/token")


def test_fetch_smart_configuration_raises_when_it_is_missing(ehr):
    ehr.routes.pop("/fhir/.well-known/smart-configuration")

    with pytest.raises(EhrHttpError) as caught:
        fetch_smart_configuration(base(ehr))

    assert (caught.value.code, caught.value.status) == ("bad_status", 404)


def test_fetch_smart_configuration_raises_on_a_plain_http_token_endpoint(ehr):
    ehr.add(
        "/fhir/.well-known/smart-configuration",
        body=smart_configuration(ehr, token_endpoint="http://auth.example.org/token"),
    )

    with pytest.raises(EhrHttpError) as caught:
        fetch_smart_configuration(base(ehr))

    assert caught.value.code == "insecure_oauth_endpoint"
    assert caught.value.permanent


# --- normalize_fhir_base_url -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "normalized"),
    [
        ("https://fhir.example.org/api/FHIR/R4", "https://fhir.example.org/api/FHIR/R4"),
        ("  https://fhir.example.org/api/FHIR/R4/  ", "https://fhir.example.org/api/FHIR/R4"),
        ("HTTPS://FHIR.Example.ORG/api/FHIR/R4", "https://fhir.example.org/api/FHIR/R4"),
        ("https://fhir.example.org:443/api/FHIR/R4", "https://fhir.example.org/api/FHIR/R4"),
        ("https://fhir.example.org:8443/r4//", "https://fhir.example.org:8443/r4"),
        ("https://fhir.example.org", "https://fhir.example.org"),
        ("https://fhir.example.org./r4", "https://fhir.example.org/r4"),
        ("https://[2001:DB8::1]:8443/r4", "https://[2001:db8::1]:8443/r4"),
        ("https://bücher.example/r4", "https://xn--bcher-kva.example/r4"),
    ],
)
def test_base_urls_are_normalized(typed, normalized):
    assert normalize_fhir_base_url(typed) == normalized


def test_plain_http_is_kept_for_an_allowed_host(settings):
    settings.EHR_INSECURE_HOSTS = ["localhost"]

    assert normalize_fhir_base_url("http://LOCALHOST:8000/sandbox-ehr/fhir/epic/") == (
        "http://localhost:8000/sandbox-ehr/fhir/epic"
    )


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("", "Enter the FHIR base URL of your EHR."),
        ("http://fhir.example.org/api/FHIR/R4", "Use an https:// address: EHRs only serve FHIR over TLS."),
        ("ftp://fhir.example.org/r4", "Use an https:// address: EHRs only serve FHIR over TLS."),
        (
            "https://fhir.example.org/r4?_format=json",
            "Enter the FHIR base URL without a query string or fragment.",
        ),
        ("https://fhir.example.org/r4#top", "Enter the FHIR base URL without a query string or fragment."),
        ("https://fhir.example.org/r4?", "Enter the FHIR base URL without a query string or fragment."),
        (
            "https://user:secret@fhir.example.org/r4",
            "Enter the FHIR base URL without a user name or password: "
            "the connector signs in with SMART on FHIR.",
        ),
        ("fhir.example.org/api/FHIR/R4", "Enter the full address, starting with https://"),
        ("https:///r4", "Enter a full address with a host name"),
        ("https://fhir.example.org:99999/r4", "The port or host in that address is not valid."),
        ("https://fhir.example.org/api/FHIR R4", "The address must not contain spaces."),
        ("https://fhir.example.org/api/FHIR/R4/metadata", "without /metadata at the end"),
    ],
)
def test_bad_base_urls_say_what_to_fix(typed, message):
    with pytest.raises(ValidationError) as caught:
        normalize_fhir_base_url(typed)

    assert message in caught.value.messages[0]
