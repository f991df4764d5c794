from django.urls import path

from tenants import apis

urlpatterns = [
    path("me/", apis.MeApi.as_view(), name="api-me"),
    path("tenants/", apis.TenantListApi.as_view(), name="api-tenants"),
    path("tenants/<str:tenant_id>/", apis.TenantDetailApi.as_view(), name="api-tenant"),
    path(
        "tenants/<str:tenant_id>/memberships/", apis.MembershipListCreateApi.as_view(), name="api-memberships"
    ),
    path(
        "tenants/<str:tenant_id>/memberships/<int:pk>/",
        apis.MembershipDetailApi.as_view(),
        name="api-membership",
    ),
    path("tenants/<str:tenant_id>/tokens/", apis.ApiTokenListCreateApi.as_view(), name="api-tokens"),
    path(
        "tenants/<str:tenant_id>/tokens/<int:pk>/revoke/",
        apis.ApiTokenRevokeApi.as_view(),
        name="api-token-revoke",
    ),
    path("access-requests/", apis.AccessRequestListCreateApi.as_view(), name="api-access-requests"),
    path("access-requests/<int:pk>/", apis.AccessRequestDetailApi.as_view(), name="api-access-request"),
]
