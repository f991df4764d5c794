from django.conf import settings
from django.http import HttpRequest


def tenant_context(request: HttpRequest) -> dict:
    return {
        "active_tenant": getattr(request, "tenant", None),
        "active_membership": getattr(request, "membership", None),
        "user_memberships": getattr(request, "memberships", []),
        "demo_sign_in_enabled": settings.DEMO_SIGN_IN,
        "entra_configured": settings.ENTRA_CONFIGURED,
    }
