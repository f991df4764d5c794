"""Error pages shared by the whole service."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.csrf import csrf_failure as django_csrf_failure

from connector.api.errors import error_body, json_not_found, json_server_error


def rate_limited(request: HttpRequest, exception=None, message: str = "") -> HttpResponse:
    message = message or "Too many attempts from your address. Wait a minute and try again."
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("rate_limited", message), status=429)
    return render(request, "connector/error.html", {"title": "Slow down", "message": message}, status=429)


def not_found(request: HttpRequest, exception=None) -> HttpResponse:
    if request.path.startswith("/api/"):
        return json_not_found(request, exception)
    return render(
        request,
        "connector/error.html",
        {
            "title": "Not found",
            "message": "There is nothing at this address, or it belongs to another organization.",
        },
        status=404,
    )


def permission_denied(request: HttpRequest, exception=None) -> HttpResponse:
    message = str(exception) if exception and str(exception) else "You are not allowed to do this."
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("permission_denied", message), status=403)
    return render(request, "connector/error.html", {"title": "Not allowed", "message": message}, status=403)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: the API answers in its JSON error shape; pages keep Django's explanation."""
    if request.path.startswith("/api/"):
        message = (
            "The CSRF check failed: a request with the portal's session cookie must send the "
            "X-CSRFToken header with the csrftoken cookie's value. Scripts should use an API token."
        )
        return JsonResponse(error_body("csrf_failed", message), status=403)
    return django_csrf_failure(request, reason=reason)


def server_error(request: HttpRequest) -> HttpResponse:
    if request.path.startswith("/api/"):
        return json_server_error(request)
    return render(
        request,
        "connector/error.html",
        {
            "title": "Something went wrong",
            "message": "The error was logged. Give support the request id below.",
        },
        status=500,
    )


def jwks(request: HttpRequest) -> JsonResponse:
    """The public keys EHRs use to check this installation's client assertions."""
    from connector.signing_keys import jwks as published_keys

    response = JsonResponse(published_keys())
    response["Cache-Control"] = "public, max-age=3600"
    return response
