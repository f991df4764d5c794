"""Every API failure has one JSON shape; the OpenAPI schema and docs are served."""

import pytest

from connector.api.throttles import ApiRateThrottle
from tests.conftest import ORG_A_TID, ORG_B_TID, microsoft_user

BASE = f"/api/v1/tenants/{ORG_A_TID}"


def _assert_error_shape(response, status: int, code: str) -> dict:
    assert response.status_code == status
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "request_id"}
    assert set(body["error"]) <= {"code", "message", "fields"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert body["request_id"] == response["X-Request-ID"]
    return body


def test_a_bad_request_has_the_error_shape_with_the_fields(api_as, org_a, admin_a):
    microsoft_user(org_a, "nina")

    response = api_as(admin_a).post(
        f"{BASE}/memberships/", {"username": "nina", "role": "ehr_approver"}, format="json"
    )

    body = _assert_error_shape(response, 400, "invalid")
    assert "ehr_username" in body["error"]["fields"]
    assert body["error"]["message"].startswith("The request has invalid fields: ehr_username: ")


def test_a_missing_field_has_the_error_shape(api_as, admin_a):
    body = _assert_error_shape(
        api_as(admin_a).post(f"{BASE}/memberships/", {}, format="json"), 400, "invalid"
    )

    assert body["error"]["fields"]["username"] == ["This field is required."]


def test_a_request_without_credentials_has_the_error_shape(client, org_a):
    _assert_error_shape(client.get(f"{BASE}/"), 401, "not_authenticated")


def test_a_bad_token_has_the_error_shape(client, org_a):
    _assert_error_shape(
        client.get(f"{BASE}/", HTTP_AUTHORIZATION="Bearer ehc_nope_nope"), 401, "authentication_failed"
    )


def test_a_forbidden_request_has_the_error_shape(api_as, viewer_a):
    _assert_error_shape(api_as(viewer_a).get(f"{BASE}/memberships/"), 403, "permission_denied")


def test_another_organizations_url_has_the_error_shape(api_as, admin_a, org_b):
    body = _assert_error_shape(api_as(admin_a).get(f"/api/v1/tenants/{ORG_B_TID}/"), 404, "not_found")

    assert body["error"]["message"] == "No such object, or it belongs to another organization."


def test_a_throttled_request_has_the_error_shape(api_as, admin_a, monkeypatch):
    monkeypatch.setitem(ApiRateThrottle.THROTTLE_RATES, "api", "2/hour")
    client = api_as(admin_a)
    client.get(f"{BASE}/")
    client.get(f"{BASE}/")

    _assert_error_shape(client.get(f"{BASE}/"), 429, "rate_limited")


def test_a_method_the_endpoint_does_not_answer_has_the_error_shape(api_as, admin_a):
    _assert_error_shape(api_as(admin_a).delete(f"{BASE}/"), 405, "method_not_allowed")


@pytest.mark.parametrize(
    "path", ["/api/v1/nothing-here/", "/api/v1/tenants", "/api/v1/", "/api/v1/tenants/x/y/z/"]
)
def test_an_unknown_api_path_has_the_error_shape_for_anyone(client, api_as, admin_a, path):
    for caller in (client, api_as(admin_a)):
        body = _assert_error_shape(caller.get(path), 404, "not_found")
        assert body["error"]["message"] == f"No API endpoint at {path}."


def test_a_callers_request_id_is_kept_when_it_is_plain(client, org_a):
    response = client.get(f"{BASE}/", HTTP_X_REQUEST_ID="lb-7f3a9c01")

    assert response["X-Request-ID"] == "lb-7f3a9c01"
    assert response.json()["request_id"] == "lb-7f3a9c01"


def test_a_callers_request_id_is_replaced_when_it_could_smuggle_text_into_logs(client, org_a):
    response = client.get(f"{BASE}/", HTTP_X_REQUEST_ID="x\nFAKE LOG LINE")

    assert response["X-Request-ID"] != "x\nFAKE LOG LINE"
    assert len(response["X-Request-ID"]) == 32
    assert response.json()["request_id"] == response["X-Request-ID"]


def test_the_openapi_schema_is_served_and_lists_the_tenant_endpoints(client, db):
    response = client.get("/api/schema/")

    assert response.status_code == 200
    schema = response.content.decode()
    assert "/api/v1/tenants/" in schema
    assert "/api/v1/tenants/{tenant_id}/memberships/" in schema
    assert "apiToken" in schema


def test_the_openapi_schema_is_served_as_json_on_request(client, db):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")

    assert response.status_code == 200
    assert "/api/v1/tenants/{tenant_id}/" in response.json()["paths"]


def test_the_api_docs_page_is_served(client, db):
    response = client.get("/api/docs/")

    assert response.status_code == 200
    assert "swagger" in response.content.decode().lower()
