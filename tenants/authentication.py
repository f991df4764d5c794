"""DRF authentication by per-organization API token: `Authorization: Bearer ehc_...`."""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django_ratelimit.core import get_usage
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from tenants.services import api_token_authenticate

logger = logging.getLogger(__name__)


class TokenUser(AnonymousUser):
    """The caller behind an API token: no person, only the token's organization."""

    def __init__(self, token) -> None:
        super().__init__()
        self.api_token = token

    @property
    def is_authenticated(self) -> bool:  # type: ignore[override]
        return True

    def __str__(self) -> str:
        return f"API token {self.api_token.prefix}"


class ApiTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        parts = header.split()
        if parts[0].lower() != self.keyword.lower():
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(
                "Malformed Authorization header: send 'Authorization: Bearer <token>'."
            )
        bad = self._bad_tokens(request, count_one_more=False)
        if bad and bad["count"] >= bad["limit"]:
            raise exceptions.Throttled(wait=bad.get("time_left", 60))
        token = api_token_authenticate(parts[1])
        if token is None:
            self._bad_tokens(request, count_one_more=True)
            logger.warning("API call with an unknown or revoked token")
            raise exceptions.AuthenticationFailed(
                "This API token is unknown or was revoked. Create a new one in the portal."
            )
        if not token.tenant.is_enabled:
            raise exceptions.AuthenticationFailed(
                "This API token's organization is not enabled; ask support."
            )
        return TokenUser(token), token

    @staticmethod
    def _bad_tokens(request, *, count_one_more: bool) -> dict | None:
        """Unknown tokens sent from this address in the current window (django-ratelimit's counter).

        Guessing tokens is hopeless (256 random bits), but a flood of them is an attack
        or a broken script: either way it is slowed down before any database lookup.
        """
        usage = get_usage(
            request._request, group="api-bad-token", key="ip", rate=settings.BAD_TOKEN_RATE, increment=count_one_more
        )
        return usage

    def authenticate_header(self, request) -> str:
        return self.keyword


class ApiTokenAuthenticationScheme(OpenApiAuthenticationExtension):
    """Describes the token scheme in the OpenAPI schema."""

    target_class = "tenants.authentication.ApiTokenAuthentication"
    name = "apiToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "A per-organization API token (ehc_...)."}
