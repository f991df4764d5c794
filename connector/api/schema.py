"""The OpenAPI schema and its Swagger UI page.

The generator lifts the tenant scope (schema_generator.py). Both are public only where
`API_DOCS_PUBLIC` is on (the default with DEBUG); in production they are for callers of
the API: a signed-in support staff member or member of an organization, or an API token.
Swagger UI's files come from drf-spectacular-sidecar (this origin, as the
Content-Security-Policy requires) and its start-up script from a URL of its own.
"""

from urllib.parse import urlencode

from django.conf import settings
from django.http import HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework import exceptions, permissions

from connector.api.schema_generator import ScopeLiftedSchemaGenerator
from tenants.authentication import TokenUser
from tenants.selectors import memberships_for_user


class ApiDocsAccess(permissions.BasePermission):
    message = (
        "The API documentation is for the API's users: sign in to the portal (or send an API token "
        "as `Authorization: Bearer <token>`) and open it again."
    )

    def has_permission(self, request, view) -> bool:
        if settings.API_DOCS_PUBLIC:
            return True
        user = request.user
        if isinstance(user, TokenUser):
            return True
        if not user or not user.is_authenticated:
            raise exceptions.NotAuthenticated(self.message)
        return bool(user.is_staff or memberships_for_user(user))


class SchemaView(SpectacularAPIView):
    generator_class = ScopeLiftedSchemaGenerator
    permission_classes = [ApiDocsAccess]


class SwaggerView(SpectacularSwaggerSplitView):
    permission_classes = [ApiDocsAccess]
    template_name = "api/swagger_ui.html"  # drf-spectacular's page without its inline style

    def handle_exception(self, exc):
        """A page, not JSON: someone not signed in goes to the sign-in page and comes back here;
        someone signed in without an organization is told why."""
        if isinstance(exc, exceptions.NotAuthenticated):
            return HttpResponseRedirect(
                reverse("tenants:sign-in") + "?" + urlencode({"next": self.request.get_full_path()})
            )
        if isinstance(exc, exceptions.PermissionDenied):
            message = (
                "The API documentation is for members of an organization and support staff. "
                "Ask an administrator of your organization to add you."
            )
            return render(
                self.request, "connector/error.html", {"title": "Not allowed", "message": message}, status=403
            )
        return super().handle_exception(exc)
