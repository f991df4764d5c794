"""One JSON error shape for every API failure.

{"error": {"code": "not_found", "message": "...", "fields": {...}}, "request_id": "..."}
"""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from connector.request_id import current_request_id

logger = logging.getLogger(__name__)


def error_body(code: str, message: str, fields: dict | None = None) -> dict:
    error: dict = {"code": code, "message": message}
    if fields:
        error["fields"] = fields
    return {"error": error, "request_id": current_request_id()}


def _flatten(detail) -> str:
    if isinstance(detail, list):
        return " ".join(_flatten(d) for d in detail)
    if isinstance(detail, dict):
        return " ".join(f"{k}: {_flatten(v)}" for k, v in detail.items())
    return str(detail)


def api_exception_handler(exc, context) -> Response | None:
    if isinstance(exc, DjangoValidationError):
        # Services raise Django's ValidationError; present it like DRF's.
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        exc = exceptions.ValidationError(detail=detail)
    response = exception_handler(exc, context)
    if response is None:
        logger.exception("unhandled API error")
        return Response(
            error_body(
                "server_error", "Something went wrong on our side; the request id helps support find it."
            ),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail
        fields = detail if isinstance(detail, dict) else {"non_field_errors": detail}
        response.data = error_body("invalid", "The request has invalid fields: " + _flatten(fields), fields)
    elif isinstance(exc, Http404 | exceptions.NotFound):
        response.data = error_body("not_found", "No such object, or it belongs to another organization.")
    elif isinstance(exc, PermissionDenied | exceptions.PermissionDenied):
        response.data = error_body("permission_denied", _flatten(getattr(exc, "detail", str(exc))))
    elif isinstance(exc, exceptions.Throttled):
        response.data = error_body(
            "rate_limited", f"Too many requests; try again in {exc.wait or 60:.0f} seconds."
        )
    elif isinstance(exc, exceptions.APIException):
        response.data = error_body(
            exc.default_code if isinstance(exc.default_code, str) else "error", _flatten(exc.detail)
        )
    return response


def json_not_found(request: HttpRequest, exception=None) -> JsonResponse:
    return JsonResponse(error_body("not_found", f"No API endpoint at {request.path}."), status=404)


def json_server_error(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        error_body("server_error", "Something went wrong on our side; the request id helps support find it."),
        status=500,
    )
