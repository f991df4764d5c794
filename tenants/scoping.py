"""The one tenant scope: every tenant-owned row is read through it.

Built on django-scopes (the mechanism pretix uses). Every tenant-owned model
inherits `TenantOwnedModel`, whose default manager returns nothing but an error
unless a scope is active:

    with tenant_scope(request.tenant):          # portal, API, tasks
        FhirEndpoint.objects.all()              # only this tenant's rows

    with all_tenants():                         # admin for support staff, migrations,
        FhirEndpoint.objects.all()              # nightly jobs that loop over tenants

A query made with no scope raises `ScopeError` instead of returning every
organization's rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from django.db import models
from django_scopes import ScopedManager, scope, scopes_disabled
from django_scopes.exceptions import ScopeError

if TYPE_CHECKING:
    from tenants.models import Tenant

__all__ = ["ScopeError", "TenantOwnedModel", "all_tenants", "setup_scoped_manager", "tenant_scope"]


@contextmanager
def tenant_scope(tenant: Tenant | Iterable[Tenant]) -> Iterator[None]:
    """Limit tenant-owned queries to one tenant (or an explicit list of them)."""
    value = list(tenant) if not hasattr(tenant, "pk") else tenant
    with scope(tenant=value):
        yield


@contextmanager
def all_tenants() -> Iterator[None]:
    """Lift the scope: only for support staff, migrations and cross-tenant jobs."""
    with scopes_disabled():
        yield


class TenantOwnedModel(models.Model):
    """Base for every row that belongs to one organization."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")

    objects = ScopedManager(tenant="tenant")

    class Meta:
        abstract = True


def setup_scoped_manager():
    """The scoped manager of a model that is part of an organization's feed setup (tenants/setup_changes.py)."""
    from tenants.setup_changes import SetupManager

    return ScopedManager(tenant="tenant", _manager_class=SetupManager)
