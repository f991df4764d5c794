from django.contrib import admin
from django.contrib.auth.views import LogoutView
from django.templatetags.static import static
from django.urls import include, path, re_path
from django.utils.functional import lazy
from django.views.generic import RedirectView

from connector import health
from connector.api.errors import json_not_found
from connector.api.schema import SchemaView, SwaggerView
from connector.views import jwks
from reports.apis import SupportUsageApi
from reports.usage_summary import usage_summary_page
from sms.links import short_join
from tenants import internal_api
from tenants.admin_regions import region_admin_header, region_directory_page
from tenants.sign_in_defences import StaffSignInForm

lazy_static = lazy(static, str)

# Lazy, so that every admin page names the region this deployment serves (read at render time).
admin.site.site_header = lazy(region_admin_header, str)()
admin.site.site_title = "EHR connector support"
admin.site.index_title = "Support administration"
admin.site.login_form = StaffSignInForm  # says plainly when password sign-in is off

api_v1 = [
    path("support/usage/", SupportUsageApi.as_view(), name="api-support-usage"),
    path("", include("tenants.api_urls")),
    path("", include("connector.api_urls")),
    path("", include("connector.visits.api_urls")),
    path("", include("sms.api_urls")),
    path("", include("reports.api_urls")),
    path("", include("connector.webhooks.api_urls")),
    # Anything else under the API answers in the API's JSON error shape.
    re_path(r"^.*$", json_not_found),
]

urlpatterns = [
    # Browsers ask for /favicon.ico on pages without a <link rel="icon"> (the admin, JSON): no 404.
    path("favicon.ico", RedirectView.as_view(url=lazy_static("connector/favicon.svg"), permanent=False)),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path(".well-known/jwks.json", jwks, name="jwks"),
    path("internal/regions/lookup", internal_api.region_lookup, name="region-lookup"),
    path("internal/regions/directory", internal_api.region_directory, name="region-directory"),
    path("admin/region-directory/", region_directory_page, name="admin-region-directory"),
    path("admin/usage-summary/", usage_summary_page, name="admin-usage-summary"),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SchemaView.as_view(), name="api-schema"),
    path("api/docs/", SwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("sign-out/", LogoutView.as_view(), name="sign-out"),
    path("portal/reports/", include("reports.urls")),
    path("portal/", include("connector.portal.urls")),
    path("j/<str:code>", short_join, name="short-join"),  # the join link in texts (sms/services/links.py)
    path("", include("connector.visits.urls")),
    path("sandbox-ehr/", include("connector.sandbox_ehr.urls")),
    path("sms/", include("sms.urls")),
    path("auth/", include("social_django.urls", namespace="social")),
    path("", include("tenants.urls")),
]

handler404 = "connector.views.not_found"
handler403 = "connector.views.permission_denied"
handler500 = "connector.views.server_error"
