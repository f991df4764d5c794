"""Pick the organization a request works for and scope every query to it."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest, HttpResponse
from simple_history.models import HistoricalRecords

from tenants.scoping import all_tenants, tenant_scope
from tenants.selectors import memberships_for_user

ACTIVE_TENANT_SESSION_KEY = "active_tenant_id"


class TenantScopeMiddleware:
    """Sets `request.tenant` and `request.membership` and activates the tenant scope.

    Support staff in the admin work across organizations, so the admin runs with
    the scope lifted. The API sets its own scope from the URL and the caller
    (connector/api/views.py), because DRF authenticates inside the view.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.tenant = None
        request.membership = None
        request.memberships = []
        if request.path.startswith("/admin/") and request.user.is_active and request.user.is_staff:
            with all_tenants():
                return self.get_response(request)
        if request.user.is_authenticated and not request.path.startswith("/api/"):
            request.memberships = memberships_for_user(request.user)
            active_id = request.session.get(ACTIVE_TENANT_SESSION_KEY)
            chosen = next((m for m in request.memberships if m.tenant_id == active_id), None)
            if chosen is None and request.memberships:
                chosen = request.memberships[0]
                request.session[ACTIVE_TENANT_SESSION_KEY] = chosen.tenant_id
            if chosen is not None:
                request.membership = chosen
                request.tenant = chosen.tenant
                with tenant_scope(chosen.tenant):
                    return self.get_response(request)
        return self.get_response(request)


class HistoryRequestMiddleware:
    """django-simple-history's request middleware, recording only real users as authors.

    DRF puts an API token's `TokenUser` on the request; simple-history would try to
    store it in the history's user foreign key and fail the request with a 500.
    Changes made with an API token are recorded without a user.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        HistoricalRecords.context.request = _RequestForHistory(request)
        try:
            return self.get_response(request)
        finally:
            with suppress(AttributeError):
                del HistoricalRecords.context.request


class _RequestForHistory:
    def __init__(self, request: HttpRequest) -> None:
        self._request = request

    @property
    def user(self):
        user = getattr(self._request, "user", None)
        return user if isinstance(user, get_user_model()) else AnonymousUser()

    def __getattr__(self, name: str):
        return getattr(self._request, name)
