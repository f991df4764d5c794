"""The API's side of the tenant scope: who is calling, for which organization, with what role.

Every tenant-owned API view inherits `TenantAPIViewMixin`. The organization comes
from the URL (`/api/v1/tenants/<tenant_id>/...`, the Microsoft 365 tenant ID);
the caller must be a member of it, or hold one of its API tokens. Otherwise the
answer is 404, exactly as if it did not exist.
"""

from __future__ import annotations

from django.http import Http404
from rest_framework import permissions

from tenants.models import Role, Tenant, TenantStatus
from tenants.scoping import tenant_scope
from tenants.selectors import membership_of

READ_METHODS = permissions.SAFE_METHODS


def caller_token(request):
    token = getattr(request, "auth", None)
    return token if token is not None and hasattr(token, "token_hash") else None


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


class TenantRolePermission(permissions.BasePermission):
    """Roles allowed per view: `read_roles` for safe methods, `write_roles` otherwise.

    API tokens act for their organization: a read token may read wherever
    `tokens_allowed` is true, a read-write token may also write.
    """

    message = "Your role in this organization does not allow this."

    def has_permission(self, request, view) -> bool:
        token = caller_token(request)
        is_read = request.method in READ_METHODS
        if token is not None:
            if not getattr(view, "tokens_allowed", True):
                self.message = "API tokens cannot use this endpoint; sign in as an administrator."
                return False
            if not is_read and not token.allows_writes:
                self.message = "This API token is read-only; create a read-write token to make changes."
                return False
            if not is_read and not getattr(view, "token_writes_allowed", True):
                self.message = "API tokens may read this but not change it; sign in as an administrator."
                return False
            return True
        role = getattr(request, "tenant_role", None)
        allowed = view.read_roles if is_read else view.write_roles
        return role in allowed


class TenantAPIViewMixin:
    """Resolves `self.tenant`, enters its scope for the whole view, checks the role."""

    permission_classes = [permissions.IsAuthenticated, TenantRolePermission]
    read_roles: tuple[str, ...] = (Role.ADMINISTRATOR, Role.EHR_APPROVER, Role.VIEWER)
    write_roles: tuple[str, ...] = (Role.ADMINISTRATOR,)
    tokens_allowed = True
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
