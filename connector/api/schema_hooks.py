"""drf-spectacular post-processing: the schema says what the API really sends.

- How each operation fails: every API error has one JSON shape (connector/api/errors.py).
  Without this the schema documented only the success answers, so a client (or
  schemathesis, in tests/test_api_fuzz.py) met 400, 401, 403, 404 and 429 answers the
  schema never mentioned.
- Times of day: DRF's TimeField sends and reads local wall-clock times ("21:00:00",
  "21:00"), but OpenAPI's `format: time` is RFC 3339's full-time, which needs an offset
  ("21:00:00Z"); so such fields are described by a pattern instead.
"""

from __future__ import annotations

ERROR_SCHEMA = {
    "type": "object",
    "description": "Every API error: a stable code, a message saying what was wrong and what to do.",
    "required": ["error", "request_id"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "example": "not_found"},
                "message": {"type": "string"},
                "fields": {
                    "type": "object",
                    "description": "For `invalid`: the messages per field of the request.",
                    "additionalProperties": True,
                },
            },
        },
        "request_id": {
            "type": "string",
            "description": "Give it to support to find this request in the logs.",
        },
    },
}

ERRORS = {
    "400": "The request is invalid: `error.fields` says which fields and why.",
    "401": "No credentials, or an unknown, revoked or malformed API token.",
    "403": "The caller's role or token scope does not allow this (docs/api.md, Permissions).",
    "404": "No such object, or it belongs to another organization.",
    "429": "Too many requests: wait the seconds in `Retry-After`.",
}
ERRORS_WITH_A_BODY = {
    "415": "The request body is not in a media type this operation accepts (send JSON).",
}
METHODS = ("get", "put", "post", "patch", "delete")
LOCAL_TIME = {
    "type": "string",
    "pattern": r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?$",
    "example": "21:00",
    "description": "A local time of day, HH:MM or HH:MM:SS, without an offset.",
}


def _local_times(node) -> None:
    if isinstance(node, dict):
        for value in node.values():
            if isinstance(value, dict) and value.get("type") == "string" and value.get("format") == "time":
                del value["format"]
                description = " ".join(filter(None, [value.get("description"), LOCAL_TIME["description"]]))
                value.update({**LOCAL_TIME, "description": description})
            else:
                _local_times(value)
    elif isinstance(node, list):
        for item in node:
            _local_times(item)


def describe_local_times(result, generator, request, public):
    _local_times(result)
    return result


def add_error_responses(result, generator, request, public):
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    reference = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path, item in result.get("paths", {}).items():
        if not path.startswith("/api/v1/"):
            continue
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            errors = {**ERRORS, **(ERRORS_WITH_A_BODY if "requestBody" in operation else {})}
            for code, description in errors.items():
                responses.setdefault(code, {"description": description, "content": reference})
    return result
