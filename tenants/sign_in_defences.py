"""Defences of the password sign-ins: lockout (django-axes) and staff restricted to Microsoft sign-in.

- `LockoutBackend`, first in AUTHENTICATION_BACKENDS, refuses every password
  while `ADMIN_PASSWORD_LOGIN` is off (production's default: staff sign in with
  Microsoft), and a locked-out account or address before any password is
  checked. django-axes counts every failed sign-in (`user_login_failed`) per
  address and per account name and keeps an audit record of each (admin:
  *Axes*: access attempts and failures).
- The demo sign-in reports unknown names to django-axes too (`demo_sign_in_allowed`,
  `demo_sign_in_failed`).
"""

from __future__ import annotations

import logging

from axes.backends import AxesStandaloneBackend
from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_cool_off
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.signals import user_login_failed
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import render

logger = logging.getLogger(__name__)

MICROSOFT_SIGN_IN = "/auth/login/azuread-v2-tenant-oauth2/?next=/admin/"


def lockout_message(request=None) -> str:
    cool_off = get_cool_off(request)
    minutes = max(1, int(cool_off.total_seconds() // 60)) if cool_off else None
    wait = f"Try again in {minutes} minutes" if minutes else "Ask support to unlock it"
    return (
        "Too many failed sign-ins for this account or from your address, so sign-in is locked. "
        f"{wait}; support can unlock it sooner (manage.py axes_reset_username <name>)."
    )


class LockoutBackend(AxesStandaloneBackend):
    """Gatekeeper of password sign-ins; it never signs anyone in itself.

    Microsoft sign-in (social-auth) authenticates without a request or a password;
    it has no password to guess and is left alone. Raising PermissionDenied stops
    Django's authenticate() before ModelBackend looks at the password.
    """

    def authenticate(self, request, username=None, password=None, **kwargs):
        if password is None:
            return None
        if not settings.ADMIN_PASSWORD_LOGIN:
            raise PermissionDenied("Password sign-in is turned off (ADMIN_PASSWORD_LOGIN=false).")
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


class StaffSignInForm(AdminAuthenticationForm):
    """The admin's sign-in form, saying plainly when passwords are not accepted."""

    def clean(self):
        if not settings.ADMIN_PASSWORD_LOGIN:
            raise ValidationError(
                "Password sign-in to the admin is turned off (ADMIN_PASSWORD_LOGIN=false). "
                f"Sign in with Microsoft instead: {MICROSOFT_SIGN_IN}",
                code="password_sign_in_off",
            )
        return super().clean()


def locked_out(request, original_response=None, credentials=None):
    """AXES_LOCKOUT_CALLABLE: a page (or JSON error) that says what happened and what to do."""
    logger.warning("sign-in refused: locked out after repeated failures")
    message = lockout_message(request)
    if request.path.startswith("/api/"):
        from django.http import JsonResponse

        from connector.api.errors import error_body

        return JsonResponse(error_body("locked_out", message), status=429)
    return render(
        request, "connector/error.html", {"title": "Sign-in locked", "message": message}, status=429
    )


def demo_sign_in_allowed(request, username: str) -> bool:
    return AxesProxyHandler.is_allowed(request, {"username": username})


def demo_sign_in_failed(request, username: str) -> None:
    """Count a wrong demo name like a wrong password (and keep the audit record)."""
    user_login_failed.send(sender=__name__, credentials={"username": username}, request=request)
