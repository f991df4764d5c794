"""The documents a client discovers the sandbox servers by: CapabilityStatement (or a DSTU2
Conformance), SMART configuration and OpenID configuration.
"""

from __future__ import annotations

from django.http import HttpRequest
from django.urls import reverse

from connector.sandbox_ehr.flavors import Flavor, fhir_base_url

SOFTWARE = {"name": "Sandbox EHR (development peer of the Open EHR Connector)", "version": "1.0"}
PUBLISHED = "2025-01-01"
DATA_TYPES = ["Patient", "Practitioner", "Appointment", "Encounter"]
SEARCH_PARAMS = {
    "Patient": ["_id", "identifier"],
    "Practitioner": ["_id", "identifier"],
    "Location": ["_id", "identifier"],
    "Appointment": ["_id", "identifier", "patient", "date"],
    "Encounter": ["_id", "identifier", "patient", "date"],
}
SCOPES = [
    "openid", "fhirUser", "profile", "launch", "launch/patient", "launch/encounter",
    "offline_access", "online_access",
    "patient/*.read", "patient/*.rs", "user/*.read", "user/*.write", "user/*.cruds",
    "system/*.read", "system/*.write", "system/*.cruds",
]  # fmt: skip
CAPABILITIES = [
    "launch-ehr", "launch-standalone", "client-public", "client-confidential-asymmetric",
    "client-confidential-symmetric", "context-ehr-patient", "context-ehr-encounter",
    "context-standalone-patient", "sso-openid-connect", "permission-user", "permission-patient",
    "permission-offline",
]  # fmt: skip


def _oauth_url(request: HttpRequest, name: str) -> str:
    return request.build_absolute_uri(reverse(f"sandbox_ehr:{name}"))


def _security(request: HttpRequest) -> dict:
    return {
        "service": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR",
                    }
                ]
            }
        ],
        "extension": [
            {
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [
                    {"url": "authorize", "valueUri": _oauth_url(request, "authorize")},
                    {"url": "token", "valueUri": _oauth_url(request, "token")},
                ],
            }
        ],
    }


def _resource_entry(resource_type: str, interactions: list[str]) -> dict:
    entry: dict = {"type": resource_type, "interaction": [{"code": code} for code in interactions]}
    if "update" in interactions:
        entry["updateCreate"] = False
    if resource_type in SEARCH_PARAMS:
        kinds = {"_id": "token", "identifier": "token", "patient": "reference", "date": "date"}
        entry["searchParam"] = [{"name": name, "type": kinds[name]} for name in SEARCH_PARAMS[resource_type]]
    return entry


def capability_statement(request: HttpRequest, flavor: Flavor) -> dict:
    interactions = ["read", "search-type", "update"] if flavor.write_back else ["read", "search-type"]
    resources = [_resource_entry(t, interactions) for t in DATA_TYPES]
    resources.append(_resource_entry("Location", ["read", "search-type"]))
    if flavor.write_back:
        resources += [_resource_entry(t, ["create"]) for t in ("AuditEvent", "Communication")]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": PUBLISHED,
        "publisher": "Open EHR Connector project",
        "kind": "instance",
        "software": SOFTWARE,
        "implementation": {"description": flavor.description, "url": fhir_base_url(request, flavor.name)},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [{"mode": "server", "security": _security(request), "resource": resources}],
    }


def conformance_dstu2(request: HttpRequest, flavor: Flavor) -> dict:
    return {
        "resourceType": "Conformance",
        "status": "active",
        "date": PUBLISHED,
        "publisher": "Open EHR Connector project",
        "kind": "instance",
        "software": SOFTWARE,
        "implementation": {"description": flavor.description, "url": fhir_base_url(request, flavor.name)},
        "fhirVersion": "1.0.2",
        "acceptUnknown": "no",
        "format": ["application/json+fhir"],
        "rest": [{"mode": "server", "security": _security(request)}],
    }


def smart_configuration(request: HttpRequest, flavor: Flavor) -> dict:
    document = {
        "issuer": fhir_base_url(request, flavor.name),
        "jwks_uri": _oauth_url(request, "jwks"),
        "authorization_endpoint": _oauth_url(request, "authorize"),
        "token_endpoint": _oauth_url(request, "token"),
        "grant_types_supported": ["authorization_code", "client_credentials"],
        "token_endpoint_auth_methods_supported": [
            "private_key_jwt",
            "client_secret_basic",
            "client_secret_post",
        ],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "scopes_supported": SCOPES,
        "response_types_supported": ["code"],
        "capabilities": CAPABILITIES,
        "code_challenge_methods_supported": ["S256"],
    }
    if not flavor.pkce:
        document["code_challenge_methods_supported"] = ["plain"]
    if not flavor.write_back:
        document["grant_types_supported"] = ["authorization_code"]
        document["scopes_supported"] = [scope for scope in SCOPES if not scope.startswith("system/")]
    if not flavor.jwt_auth:
        document["token_endpoint_auth_methods_supported"] = ["client_secret_basic", "client_secret_post"]
        document["token_endpoint_auth_signing_alg_values_supported"] = []
        document["capabilities"] = [c for c in CAPABILITIES if c != "client-confidential-asymmetric"]
    return document


def openid_configuration(request: HttpRequest, flavor: Flavor) -> dict:
    """OpenID Connect discovery at `{iss}/.well-known/openid-configuration`, for id_token checks."""
    return {
        "issuer": fhir_base_url(request, flavor.name),
        "jwks_uri": _oauth_url(request, "jwks"),
        "authorization_endpoint": _oauth_url(request, "authorize"),
        "token_endpoint": _oauth_url(request, "token"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": SCOPES,
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nonce", "fhirUser", "preferred_username"],
    }
