"""What every sandbox view shares: the on/off switch and the error shapes."""

from __future__ import annotations

import functools
from collections.abc import Callable

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse

FHIR_JSON = "application/fhir+json"


def sandbox_only(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Answer 404 unless `settings.SANDBOX_EHR` is on, read at request time (tests flip it)."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not getattr(settings, "SANDBOX_EHR", False):
            raise Http404("The sandbox EHR is off.")
        return view(request, *args, **kwargs)

    return wrapped


def fhir_response(body: dict, status: int = 200, headers: dict | None = None) -> JsonResponse:
    return JsonResponse(body, status=status, content_type=FHIR_JSON, headers=headers)


def operation_outcome(status: int, code: str, message: str, headers: dict | None = None) -> JsonResponse:
    """A FHIR error: an OperationOutcome with one issue (`code` from the FHIR issue-type value set)."""
    body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": message}],
    }
    return fhir_response(body, status=status, headers=headers)


def oauth_error(error: str, description: str, status: int = 400, headers: dict | None = None) -> JsonResponse:
    """An RFC 6749 section 5.2 error response."""
    response = JsonResponse(
        {"error": error, "error_description": description}, status=status, headers=headers
    )
    response["Cache-Control"] = "no-store"
    return response


class OAuthError(Exception):
    """An OAuth failure to answer with `oauth_error` (RFC 6749 error code and a readable description)."""

    def __init__(self, error: str, description: str, status: int = 400, headers: dict | None = None):
        super().__init__(description)
        self.error, self.description, self.status, self.headers = error, description, status, headers

    def response(self) -> JsonResponse:
        return oauth_error(self.error, self.description, self.status, self.headers)


class FhirError(Exception):
    """A FHIR failure to answer with an OperationOutcome."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers

    def response(self) -> JsonResponse:
        return operation_outcome(self.status, self.code, self.message, self.headers)
