"""The API's side of the tenant scope: who is calling, for which organization, with what role.

Every tenant-owned API view inherits `TenantAPIViewMixin`. The organization comes
from the URL (`/api/v1/tenants/<tenant_id>/...`, the Microsoft 365 tenant ID);
the caller must be a member of it, or hold one of its API tokens. Otherwise the
answer is 404, exactly as if it did not exist.
"""

from __future__ import annotations

from django.http import Http404
from rest_framework import permissions

from connector.api.access import DeclaredAccess, caller_token
from tenants.models import Tenant, TenantStatus
from tenants.scoping import tenant_scope
from tenants.selectors import membership_of

__all__ = ["TenantAPIViewMixin", "acting_user", "caller_token", "resolve_tenant_for_caller"]


def acting_user(request):
    """The person behind the request, or None for an API token (whose stand-in user is no row)."""
    user = request.user
    return user if caller_token(request) is None and getattr(user, "pk", None) else None


def resolve_tenant_for_caller(request, tenant_id: str) -> tuple[Tenant, str | None]:
    """The tenant named in the URL and the caller's role in it (None for a token)."""
    tenant = Tenant.objects.filter(microsoft_tenant_id=tenant_id, status=TenantStatus.ENABLED).first()
    if tenant is None:
        raise Http404
    token = caller_token(request)
    if token is not None:
        if token.tenant_id != tenant.pk:
            raise Http404
        return tenant, None
    membership = membership_of(request.user, tenant)
    if membership is None:
        raise Http404
    return tenant, membership.role


class TenantAPIViewMixin:
    """Resolves `self.tenant`, enters its scope for the whole view, checks the role.

    Who may call what is declared in `connector.api.access.ACCESS`, not on the view.
    """

    permission_classes = [permissions.IsAuthenticated, DeclaredAccess]
    tenant: Tenant

    def initial(self, request, *args, **kwargs):
        # Authenticate first (DRF does it lazily), then resolve the tenant, then
        # check permissions with the caller's role known.
        self.perform_authentication(request)
        if request.user and request.user.is_authenticated:
            self.tenant, request.tenant_role = resolve_tenant_for_caller(request, kwargs["tenant_id"])
            self._scope = tenant_scope(self.tenant)
            self._scope.__enter__()
        super().initial(request, *args, **kwargs)

    def finalize_response(self, request, response, *args, **kwargs):
        scope = getattr(self, "_scope", None)
        if scope is not None:
            self._scope = None
            scope.__exit__(None, None, None)
        return super().finalize_response(request, response, *args, **kwargs)
