"""Reads for organizations. Cross-tenant reads here are limited to one user's own rows."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from tenants.models import Membership, Tenant, TenantStatus
from tenants.scoping import all_tenants


def memberships_for_user(user: AbstractBaseUser) -> list[Membership]:
    """The user's memberships in enabled organizations (for the switcher and the API).

    Lifting the scope is safe here: the query is limited to the user's own rows.
    """
    if not user.is_authenticated:
        return []
    with all_tenants():
        return list(
            Membership.objects.filter(user=user, tenant__status=TenantStatus.ENABLED)
            .select_related("tenant")
            .order_by("tenant__name")
        )


def tenants_for_user(user: AbstractBaseUser) -> QuerySet[Tenant]:
    if not user.is_authenticated:
        return Tenant.objects.none()
    return (
        Tenant.objects.filter(status=TenantStatus.ENABLED, memberships__user=user).order_by("name").distinct()
    )


def membership_of(user: AbstractBaseUser, tenant: Tenant) -> Membership | None:
    if not user.is_authenticated or not tenant.is_enabled:
        return None
    with all_tenants():
        return Membership.objects.filter(user=user, tenant=tenant).select_related("tenant").first()


def demo_memberships() -> list[Membership]:
    """Memberships of the demo users, listed on the demo sign-in page."""
    with all_tenants():
        return list(
            Membership.objects.filter(user__username__startswith="demo-", user__is_active=True)
            .select_related("user", "tenant")
            .order_by("tenant__name", "role")
        )


def user_signed_in_from(tenant: Tenant, username: str) -> AbstractBaseUser | None:
    """The user of that name who signed in with a Microsoft account of this organization's own tenant.

    Membership can only be given to the organization's own people: a user of
    another organization (or an unknown name) is not found, with no difference
    an administrator could observe.
    """
    from django.contrib.auth import get_user_model

    return (
        get_user_model()
        .objects.filter(
            username=username,
            social_auth__extra_data__tid__iexact=tenant.microsoft_tenant_id,
        )
        .distinct()
        .first()
    )
